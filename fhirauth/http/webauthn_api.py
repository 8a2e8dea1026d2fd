"""Passkeys for single-page apps: the JSON operations beside /app/auth/two-factor/*, for a signed-in
user's first-party bearer token (twofactor_api.first_party_caller). Each ceremony is two calls,
`.../options` then the finish with the browser's `PublicKeyCredential.toJSON()` as `credential`;
the challenge is bound to the sign-in the token belongs to. Refusals: 422 `{error, error_description}`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhirauth.errors import BadRequest
from fhirauth.http.context import services_of
from fhirauth.http.limits import client_ip
from fhirauth.http.render import json_response
from fhirauth.http.serving.route import EdgeRoute
from fhirauth.http.twofactor_api import first_party_caller, refusal
from fhirauth.twofactor.passkeys.challenges import Ceremony, Purpose
from fhirauth.twofactor.passkeys.credentials import visible
from fhirauth.twofactor.service import TwoFactorError

BASE = "/app/auth/two-factor/passkeys"


def _credential(body: dict[str, object]) -> object:
    credential = body.get("credential")
    if not isinstance(credential, dict):
        raise BadRequest("'credential' must be the JSON of the browser's PublicKeyCredential", "credential")
    return credential


async def registration_options(request: Request) -> Response:
    try:
        caller = await first_party_caller(request)
        options = await services_of(request).passkeys.registration_options(
            caller.user, binding=caller.sign_in
        )
    except TwoFactorError as error:
        return refusal(request, error)
    return json_response({"publicKey": options})


async def register(request: Request) -> Response:
    try:
        caller = await first_party_caller(request)
        created = await services_of(request).passkeys.register(
            caller.user["id"],
            _credential(caller.body),
            caller.body.get("name"),
            binding=caller.sign_in,
            ip=client_ip(request),
        )
    except TwoFactorError as error:
        return refusal(request, error)
    return json_response(visible(created), 201)


async def list_passkeys(request: Request) -> Response:
    try:
        caller = await first_party_caller(request)
    except TwoFactorError as error:
        return refusal(request, error)
    found = await services_of(request).passkeys.passkeys(caller.user["id"])
    return json_response({"passkeys": [visible(p) for p in found]})


async def authentication_options(request: Request) -> Response:
    try:
        caller = await first_party_caller(request)
        ceremony = Ceremony(Purpose.AUTHENTICATE, caller.sign_in, caller.user["id"])
        options = await services_of(request).passkeys.authentication_options(ceremony)
    except TwoFactorError as error:
        return refusal(request, error)
    return json_response({"publicKey": options})


async def authenticate(request: Request) -> Response:
    """Step-up: the signed-in user proves a passkey again before a sensitive action."""
    try:
        caller = await first_party_caller(request)
        use = await services_of(request).passkeys.authenticate(
            _credential(caller.body),
            Ceremony(Purpose.AUTHENTICATE, caller.sign_in, caller.user["id"]),
            ip=client_ip(request),
        )
    except TwoFactorError as error:
        return refusal(request, error)
    return json_response({"amr": use.method, "passkey": use.passkey_id})


async def remove(request: Request) -> Response:
    """Remove one passkey (`id`) with a fresh second factor: `credential` (an assertion from
    .../authentication/options) or `token` (a TOTP or recovery code)."""
    services = services_of(request)
    try:
        caller = await first_party_caller(request)
        passkey = caller.body.get("id")
        if not isinstance(passkey, str) or not passkey:
            raise BadRequest("'id' must name one of the user's passkeys", "id")
        if "credential" in caller.body:
            ceremony = Ceremony(Purpose.AUTHENTICATE, caller.sign_in, caller.user["id"])
            await services.passkeys.authenticate(_credential(caller.body), ceremony, ip=client_ip(request))
        else:
            token = caller.body.get("token")
            await services.twofactor.require(
                caller.user, token if isinstance(token, str) else "", ip=client_ip(request)
            )
        await services.passkeys.remove(caller.user["id"], passkey, ip=client_ip(request))
    except TwoFactorError as error:
        return refusal(request, error)
    return json_response({})


routes = [
    EdgeRoute(BASE, list_passkeys, methods=["GET"]),
    EdgeRoute(f"{BASE}/registration/options", registration_options, methods=["POST"]),
    EdgeRoute(f"{BASE}/registration", register, methods=["POST"]),
    EdgeRoute(f"{BASE}/authentication/options", authentication_options, methods=["POST"]),
    EdgeRoute(f"{BASE}/authentication", authenticate, methods=["POST"]),
    EdgeRoute(f"{BASE}/remove", remove, methods=["POST"]),
]
