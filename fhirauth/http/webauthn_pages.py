"""The passkey pages: register, list and remove on the 2FA settings page; the passkey as the sign-in's
second factor; "Sign in with a passkey" on the login page.

Each ceremony is two requests from /static/passkey.js: POST .../options (a form with the CSRF field
and the purpose) answers the WebAuthn options as JSON; the browser's answer then goes in the hidden
`credential` field of an ordinary form POST, answered like every other page (a redirect, or the page
with an error). The challenge is bound to what the ceremony is for: the sign-in (register, confirm),
the pending login (the second factor), or the browser's CSRF cookie (passwordless).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from fhirauth.auth.login import continuation_for, has_two_factor, is_inactive
from fhirauth.auth.oidc.amr import SignInMethods
from fhirauth.errors import BadRequest
from fhirauth.http.context import services_of
from fhirauth.http.cookies import (
    CSRF_COOKIE,
    PENDING_COOKIE,
    read_cookie,
)
from fhirauth.http.csrf import CsrfRefused
from fhirauth.http.forms import BadForm
from fhirauth.http.html import checked_form, error_page, render
from fhirauth.http.limits import client_ip
from fhirauth.http.pages import browser_session, finish_sign_in, page
from fhirauth.http.render import json_response
from fhirauth.http.step_up import expired_sign_in, finish_step_up
from fhirauth.http.trusted_devices import TRUST_FIELD, remember_device
from fhirauth.twofactor.passkeys.challenges import Ceremony, Purpose
from fhirauth.twofactor.passkeys.credentials import visible
from fhirauth.twofactor.passkeys.errors import PasskeyError
from fhirauth.twofactor.service import Locked, TwoFactorError, sign_in_of

Document = dict[str, Any]

SETTINGS = "/auth/two-factor"
PASSKEYS = f"{SETTINGS}/passkeys"
_REFUSED = "That passkey did not work. Try again, or use another way to sign in."
_WRONG_CODE = "That code did not work. Check the time on your phone and try the newest code."


@dataclass(frozen=True)
class SecondFactors:
    """What the sign-in step offers this pending login: a passkey, a code, or both."""

    passkey: bool
    code: bool


async def pending_second_factors(request: Request) -> SecondFactors:
    """For the sign-in step's page: the pending login's user has passkeys, a TOTP secret, or both."""
    services = services_of(request)
    pending_id = read_cookie(request, PENDING_COOKIE)
    pending = await services.pending_logins.get(pending_id) if pending_id else None
    if pending is None:
        return SecondFactors(passkey=False, code=True)
    user = await services.resources.find("User", pending.user_id)
    code = user is not None and has_two_factor(user.document)
    return SecondFactors(passkey=await services.passkeys.has_passkeys(pending.user_id), code=code)


async def passkey_list(request: Request, user: Document) -> list[Document]:
    return [visible(c) for c in await services_of(request).passkeys.passkeys(user["id"])]


def _json_refusal(error: str, description: str, status: int) -> Response:
    return json_response({"error": error, "error_description": description}, status)


# Options: the first half of every ceremony


async def options(request: Request) -> Response:
    services = services_of(request)
    try:
        form = await checked_form(request)
    except (CsrfRefused, BadForm):
        return _json_refusal("invalid_request", "The form expired; reload and try again", 403)
    purpose = form.get("purpose")
    try:
        if purpose in ("register", "confirm"):
            principal = await browser_session(request)
            if principal is None or principal.user is None or principal.session is None:
                return _json_refusal("login_required", "Sign in first", 401)
            binding = sign_in_of(principal.session)
            if purpose == "register":
                answer = await services.passkeys.registration_options(principal.user, binding=binding)
            else:
                ceremony = Ceremony(Purpose.AUTHENTICATE, binding, principal.user["id"])
                answer = await services.passkeys.authentication_options(ceremony)
        elif purpose == "verify":
            pending_id = read_cookie(request, PENDING_COOKIE)
            pending = await services.pending_logins.get(pending_id) if pending_id else None
            if pending is None or pending_id is None:
                return _json_refusal("login_required", "Your sign-in took too long. Sign in again", 401)
            answer = await services.passkeys.authentication_options(
                Ceremony(Purpose.AUTHENTICATE, pending_id, pending.user_id)
            )
        elif purpose == "sign-in":
            if not (await services.twofactor.config()).passkey_sign_in:
                return _json_refusal("not_enabled", "Signing in with a passkey is not turned on", 404)
            cookie = read_cookie(request, CSRF_COOKIE)
            assert cookie is not None, "checked_form passed"
            answer = await services.passkeys.authentication_options(Ceremony(Purpose.PASSWORDLESS, cookie))
        else:
            return _json_refusal("invalid_request", "Unknown 'purpose'", 400)
    except TwoFactorError as error:
        return _json_refusal(error.error, error.description, error.status)
    return json_response({"publicKey": answer})


# Settings: register, remove


def _to_login() -> Response:
    return RedirectResponse(f"/auth/login?redirect_to={quote(SETTINGS, safe='')}", 302)


@page
async def register(request: Request) -> Response:
    principal = await browser_session(request)
    if principal is None or principal.user is None or principal.session is None:
        return _to_login()
    form = await checked_form(request)
    try:
        await services_of(request).passkeys.register(
            principal.user["id"],
            form.get("credential", ""),
            form.get("name"),
            binding=sign_in_of(principal.session),
            ip=client_ip(request),
        )
    except BadRequest as error:
        return await error_page(request, str(error), heading="Add a passkey")
    except PasskeyError as error:
        return await error_page(request, error.description, heading="Add a passkey")
    return RedirectResponse(f"{SETTINGS}?done=passkey-added", 303)


async def _remove_form(
    request: Request, user: Document, passkey: Document, *, error: str | None = None, status: int = 200
) -> Response:
    context = {
        "passkey": passkey,
        "code": has_two_factor(user),
        "action": f"{PASSKEYS}/{passkey['id']}/remove",
        "error": error,
    }
    return await render(request, "passkey_remove.html", context, status=status)


async def _own_passkey(request: Request, user: Document) -> Document | None:
    wanted = request.path_params["id"]
    return next((p for p in await passkey_list(request, user) if p["id"] == wanted), None)


async def remove_page(request: Request) -> Response:
    principal = await browser_session(request)
    if principal is None or principal.user is None:
        return _to_login()
    passkey = await _own_passkey(request, principal.user)
    if passkey is None:
        return RedirectResponse(SETTINGS, 302)
    return await _remove_form(request, principal.user, passkey)


@page
async def remove(request: Request) -> Response:
    """Removing a passkey needs a fresh second factor: a current code, or one of the user's passkeys."""
    services = services_of(request)
    principal = await browser_session(request)
    if principal is None or principal.user is None or principal.session is None:
        return _to_login()
    user = principal.user
    form = await checked_form(request)
    passkey = await _own_passkey(request, user)
    if passkey is None:
        return RedirectResponse(SETTINGS, 302)
    try:
        if form.get("credential"):
            ceremony = Ceremony(Purpose.AUTHENTICATE, sign_in_of(principal.session), user["id"])
            await services.passkeys.authenticate(form["credential"], ceremony, ip=client_ip(request))
        else:
            await services.twofactor.require(user, form.get("code", ""), ip=client_ip(request))
    except Locked:
        return await error_page(
            request, "Too many wrong codes. Try again later.", status=429, heading="Too many attempts"
        )
    except PasskeyError:
        return await _remove_form(request, user, passkey, error=_REFUSED, status=400)
    except TwoFactorError:
        return await _remove_form(request, user, passkey, error=_WRONG_CODE, status=400)
    try:
        await services.passkeys.remove(user["id"], passkey["id"], ip=client_ip(request))
    except PasskeyError:
        return RedirectResponse(SETTINGS, 302)
    return RedirectResponse(f"{SETTINGS}?done=passkey-removed", 303)


# The sign-in step's second factor


@page
async def verify(request: Request) -> Response:
    services = services_of(request)
    form = await checked_form(request)
    pending_id = read_cookie(request, PENDING_COOKIE)
    pending = await services.pending_logins.get(pending_id) if pending_id else None
    if pending is None or pending_id is None:
        return await expired_sign_in(request)
    try:
        use = await services.passkeys.authenticate(
            form.get("credential", ""),
            Ceremony(Purpose.AUTHENTICATE, pending_id, pending.user_id),
            ip=client_ip(request),
        )
    except PasskeyError:
        return await error_page(request, _REFUSED, status=400, heading="Two-factor authentication")
    finished = await services.pending_logins.take(pending_id)
    if finished is None:
        return await expired_sign_in(request)
    now = int(services.clock().timestamp())
    trust = form.get(TRUST_FIELD) == "on"
    step_up = finished.document.get("stepUp")
    if step_up is not None:
        return await finish_step_up(request, step_up, finished.continuation, use.method, trust=trust)
    user = await services.resources.find("User", pending.user_id)
    if user is None or is_inactive(user.document):
        return await expired_sign_in(request)
    password = SignInMethods.from_dict(finished.document.get("amr_times")) or SignInMethods.password(now)
    response = await finish_sign_in(
        request, user.document, finished.continuation, password.with_key(use.method, now)
    )
    if trust:
        await remember_device(request, response, user.document, (use.method,))
    return response


# Passwordless


@page
async def sign_in(request: Request) -> Response:
    services = services_of(request)
    form = await checked_form(request)
    if not (await services.twofactor.config()).passkey_sign_in:
        return await error_page(
            request, "Signing in with a passkey is not turned on.", status=404, heading="Sign in"
        )
    cookie = read_cookie(request, CSRF_COOKIE)
    assert cookie is not None, "checked_form passed"
    try:
        use = await services.passkeys.authenticate(
            form.get("credential", ""), Ceremony(Purpose.PASSWORDLESS, cookie), ip=client_ip(request)
        )
    except PasskeyError:
        return await error_page(request, _REFUSED, status=400, heading="Sign in")
    user = await services.resources.find("User", use.user_id)
    if user is None or is_inactive(user.document):
        await services.audit.record(
            "login", "failure", user=use.user_id, ip=client_ip(request), detail={"reason": "inactive"}
        )
        return await error_page(
            request, "This account is disabled. Contact the administrator.", status=400, heading="Sign in"
        )
    params = dict(parse_qsl(request.url.query, keep_blank_values=True))
    continuation = continuation_for(params, request.url.query, services.settings.base_url)
    now = int(services.clock().timestamp())
    return await finish_sign_in(request, user.document, continuation, SignInMethods.passkey(use.method, now))


routes = [
    Route(f"{PASSKEYS}/options", options, methods=["POST"]),
    Route(PASSKEYS, register, methods=["POST"]),
    Route(f"{PASSKEYS}/verify", verify, methods=["POST"]),
    Route(f"{PASSKEYS}/sign-in", sign_in, methods=["POST"]),
    Route(f"{PASSKEYS}/{{id}}/remove", remove_page, methods=["GET"]),
    Route(f"{PASSKEYS}/{{id}}/remove", remove, methods=["POST"]),
]
