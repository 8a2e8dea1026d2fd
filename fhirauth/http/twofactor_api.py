"""The JSON operations of the Aidbox 2FA demo app, for single-page apps holding a bearer token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from fhirauth.auth.oauth_errors import error_body
from fhirauth.errors import BadRequest, NotAuthenticated
from fhirauth.http.bodies import media_type, parse_document
from fhirauth.http.context import services_of
from fhirauth.http.limits import client_ip
from fhirauth.http.render import json_response, retry_after_header
from fhirauth.http.serving.body import read_bytes
from fhirauth.http.serving.route import EdgeRoute
from fhirauth.ratelimit import retry_after
from fhirauth.twofactor.service import (
    Locked,
    TwoFactorError,
    require_first_party,
    sign_in_of,
)

Document = dict[str, Any]


@dataclass(frozen=True)
class _Caller:
    user: Document
    sign_in: str
    body: Document


async def first_party_caller(request: Request) -> _Caller:
    """The signed-in user of a first-party client's bearer token (read in this request), the sign-in
    the token belongs to, and the JSON body. A token of another client is refused (FirstPartyRequired)
    before the body is read."""
    services = services_of(request)
    principal = await services.authenticator.authenticate(request.headers.get("authorization"))
    if principal is None or principal.user is None or principal.session is None:
        raise NotAuthenticated(
            "A signed-in user's bearer token is required",
            headers={"WWW-Authenticate": 'Bearer realm="fhirauth"'},
        )
    require_first_party(principal.client)
    raw = await read_bytes(request, services.settings.max_body_bytes)
    body = parse_document(raw, media_type(request)) if raw.strip() else {}
    if not isinstance(body, dict):
        raise BadRequest("Expected a JSON object")
    return _Caller(principal.user, sign_in_of(principal.session), body)


def _token(body: Document) -> str:
    token = body.get("token")
    # The demo's input is type=number, so the code may arrive as a JSON number.
    if isinstance(token, int) and not isinstance(token, bool):
        return f"{token:06d}"
    return token if isinstance(token, str) else ""


def refusal(request: Request, error: TwoFactorError) -> Response:
    headers = {}
    if isinstance(error, Locked) and error.until is not None:
        headers = retry_after_header(
            retry_after((error.until - services_of(request).clock()).total_seconds())
        )
    return json_response(error_body(error.error, error.description), error.status, headers)


async def request_enrollment(request: Request) -> Response:
    services = services_of(request)
    try:
        caller = await first_party_caller(request)
        transport = caller.body.get("transport")
        if transport is not None and not isinstance(transport, str):
            raise BadRequest("'transport' must be a string", "transport")
        enrollment = await services.twofactor.begin_enrollment(
            caller.user["id"], transport or None, sign_in=caller.sign_in
        )
    except TwoFactorError as error:
        return refusal(request, error)
    if transport:
        enrolled = (await services.twofactor.user(caller.user["id"])).document
        await services.twofactor.send_code(enrolled, ip=client_ip(request))
        return json_response({})
    return json_response({"uri": enrollment.uri})


async def confirm(request: Request) -> Response:
    try:
        caller = await first_party_caller(request)
        codes = await services_of(request).twofactor.confirm_enrollment(
            caller.user["id"], _token(caller.body), sign_in=caller.sign_in, ip=client_ip(request)
        )
    except TwoFactorError as error:
        return refusal(request, error)
    # Aidbox answers {}; the recovery codes ride along for apps that show them (the demo app ignores them).
    return json_response({"recoveryCodes": codes} if codes else {})


async def disable(request: Request) -> Response:
    try:
        caller = await first_party_caller(request)
        await services_of(request).twofactor.disable(
            caller.user["id"], _token(caller.body), ip=client_ip(request)
        )
    except TwoFactorError as error:
        return refusal(request, error)
    return json_response({})


async def verify(request: Request) -> Response:
    """Step-up: the signed-in user proves the second factor again before a sensitive action; an
    accepted code is spent like any other. Not an Aidbox operation."""
    try:
        caller = await first_party_caller(request)
        await services_of(request).twofactor.require(caller.user, _token(caller.body), ip=client_ip(request))
    except TwoFactorError as error:
        return refusal(request, error)
    return json_response({})


async def recovery_codes(request: Request) -> Response:
    try:
        caller = await first_party_caller(request)
        codes = await services_of(request).twofactor.regenerate_recovery_codes(
            caller.user["id"], _token(caller.body), ip=client_ip(request)
        )
    except TwoFactorError as error:
        return refusal(request, error)
    return json_response({"recoveryCodes": codes})


routes = [
    EdgeRoute("/app/auth/two-factor/request", request_enrollment, methods=["POST"]),
    EdgeRoute("/app/auth/two-factor/confirm", confirm, methods=["POST"]),
    EdgeRoute("/app/auth/two-factor/disable", disable, methods=["POST"]),
    EdgeRoute("/app/auth/two-factor/verify", verify, methods=["POST"]),
    EdgeRoute("/app/auth/two-factor/recovery-codes", recovery_codes, methods=["POST"]),
]
