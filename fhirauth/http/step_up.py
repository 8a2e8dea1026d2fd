"""A second factor given in a browser that is already signed in raises that sign-in: the code or
passkey of a step-up (an authorization request asking for MFA), or the code that turns 2FA on.
Shared by the code pages (twofactor_pages) and the passkey pages (webauthn_pages)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from fhirauth.auth.login import local_path
from fhirauth.auth.oidc.amr import OTP
from fhirauth.auth.sessions import sign_in_methods
from fhirauth.http.context import services_of
from fhirauth.http.cookies import (
    PENDING_COOKIE,
    PENDING_COOKIE_PATH,
    SESSION_COOKIE,
    clear_cookie,
    set_cookie,
)
from fhirauth.http.html import error_page, secure_cookies
from fhirauth.http.limits import client_ip
from fhirauth.http.pages import browser_session
from fhirauth.http.trusted_devices import remember_device

Document = dict[str, Any]

SETTINGS = "/auth/two-factor"


async def expired_sign_in(request: Request) -> Response:
    """The sign-in step's pending login is gone (taken, expired, or of another browser)."""
    response = await error_page(
        request,
        "Your sign-in took too long. Sign in again.",
        status=400,
        heading="Sign-in expired",
        hint=None,
    )
    clear_cookie(response, PENDING_COOKIE, secure=secure_cookies(request), path=PENDING_COOKIE_PATH)
    return response


async def raise_sign_in(request: Request, response: Response, session: Document, method: str) -> bool:
    """Add the second factor `method` (otp, hwk or swk) just given to this browser's sign-in
    (SessionService.step_up: the same Session, a new cookie on `response`); False when the Session
    ended meanwhile."""
    services = services_of(request)
    now = int(services.clock().timestamp())
    before = sign_in_methods(session)
    methods = before.with_otp(now) if method == OTP else before.with_key(method, now)
    raised = await services.sessions.step_up(session, methods)
    if raised is None:
        return False
    token, stepped = raised
    exp = stepped.get("exp")
    max_age = exp - now if isinstance(exp, int) else None
    set_cookie(response, SESSION_COOKIE, token, max_age=max_age, secure=secure_cookies(request))
    await services.audit.record(
        "login",
        "success",
        user=stepped["user"]["id"],
        ip=client_ip(request),
        detail={"session": stepped["id"], "stepUp": method},
    )
    return True


async def finish_step_up(
    request: Request, session_id: str, continuation: str, method: str, *, trust: bool
) -> Response:
    """The second factor of a step-up raises the browser's sign-in it was asked for, if that is still
    this browser's sign-in: alone, a code or passkey signs nobody in. With `trust`, this browser is
    trusted too."""
    principal = await browser_session(request)
    if principal is None or principal.session is None or principal.session["id"] != session_id:
        return await expired_sign_in(request)
    target = local_path(continuation, services_of(request).settings.base_url) or SETTINGS
    response = RedirectResponse(target, 302)
    if not await raise_sign_in(request, response, principal.session, method):
        return await expired_sign_in(request)
    clear_cookie(response, PENDING_COOKIE, secure=secure_cookies(request), path=PENDING_COOKIE_PATH)
    if trust and principal.user is not None:
        await remember_device(request, response, principal.user, (method,))
    return response
