"""The two-factor pages: settings, enable with a QR code, disable, recovery codes, trusted devices, and
the sign-in step."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from fhirauth.auth.login import local_path
from fhirauth.auth.oidc.amr import OTP, SignInMethods
from fhirauth.http.context import services_of
from fhirauth.http.cookies import (
    PENDING_COOKIE,
    PENDING_COOKIE_PATH,
    clear_cookie,
    read_cookie,
)
from fhirauth.http.html import checked_form, error_page, render, secure_cookies
from fhirauth.http.limits import client_ip
from fhirauth.http.pages import browser_session, finish_sign_in, page
from fhirauth.http.render import retry_after_header
from fhirauth.http.step_up import expired_sign_in, finish_step_up, raise_sign_in
from fhirauth.http.trusted_devices import (
    TRUST_FIELD,
    clear_trusted_cookie,
    forget_devices,
    listed_devices,
    remember_device,
)
from fhirauth.http.webauthn_pages import passkey_list, pending_second_factors
from fhirauth.ratelimit import retry_after
from fhirauth.twofactor.guard import Reason
from fhirauth.twofactor.qr import qr_svg
from fhirauth.twofactor.service import Locked, TwoFactorError, enabled_without_secret, sign_in_of, status_of

Document = dict[str, Any]

SETTINGS = "/auth/two-factor"
_WRONG_CODE = "That code did not work. Check the time on your phone and try the newest code."
_NOT_SET_UP = (
    "Two-factor authentication is on for your account but has not been set up. "
    "Ask an administrator to reset it."
)
_SETUP_EXPIRED = (
    "This setup was started elsewhere or took too long. Scan the new code and enter a code from it."
)
_ENABLED = "Two-factor authentication is on."
_MAX_DEVICE_ID_CHARS = 64


async def _signed_in_user(request: Request) -> Document | None:
    principal = await browser_session(request)
    return principal.user if principal is not None else None


async def _user_and_sign_in(request: Request) -> tuple[Document, str] | None:
    """The signed-in user of this browser and the sign-in a pending secret is bound to."""
    principal = await browser_session(request)
    if principal is None or principal.user is None or principal.session is None:
        return None
    return principal.user, sign_in_of(principal.session)


def _after_enrolment(request: Request) -> str:
    """Where the enable page goes once 2FA is on: its `redirect_to` (a step-up's authorization
    request), a local path only, else the settings."""
    redirect_to = request.query_params.get("redirect_to")
    target = local_path(redirect_to, services_of(request).settings.base_url) if redirect_to else None
    return target or SETTINGS


def _to_login() -> Response:
    return RedirectResponse(f"/auth/login?redirect_to={quote(SETTINGS, safe='')}", 302)


async def _locked_page(request: Request, error: Locked) -> Response:
    if error.until is None:
        # Locked until an administrator's reset (NIST's cap), or lifted a moment ago.
        return await error_page(
            request, "Too many wrong codes. Try again later.", status=429, heading="Too many attempts"
        )
    seconds = retry_after((error.until - services_of(request).clock()).total_seconds())
    minutes = math.ceil(seconds / 60)
    response = await error_page(
        request,
        f"Too many wrong codes. Try again in {minutes} minute{'s' if minutes != 1 else ''}.",
        status=429,
        heading="Too many attempts",
    )
    response.headers.update(retry_after_header(seconds))
    return response


async def _not_set_up_page(request: Request) -> Response:
    return await error_page(
        request, _NOT_SET_UP, status=403, heading="Two-factor authentication not set up", hint=None
    )


# Settings


async def settings_page(request: Request) -> Response:
    user = await _signed_in_user(request)
    if user is None:
        return _to_login()
    status = status_of(user)
    # After turning 2FA on or off the status line itself announces the change (a notice would say it
    # twice); a `done` that contradicts the stored state, from an old or crafted link, announces nothing.
    done = request.query_params.get("done")
    context = {
        "account": user.get("email") or user["id"],
        "status": status,
        "changed": done == ("enabled" if status.enabled else "disabled"),
        "passkeys": await passkey_list(request, user),
        "trusted_devices": await listed_devices(request, user["id"]),
    }
    return await render(request, "two_factor.html", context)


@page
async def forget_trusted_devices(request: Request) -> Response:
    """Forget one trusted device (`device`: its id) or all of them (`device=all`)."""
    user = await _signed_in_user(request)
    if user is None:
        return _to_login()
    form = await checked_form(request)
    device_id = form.get("device", "")
    if not device_id or len(device_id) > _MAX_DEVICE_ID_CHARS:
        return await error_page(request, "Choose a device to forget.", heading="Trusted devices")
    this_browser = await forget_devices(request, user["id"], device_id)
    response = RedirectResponse(SETTINGS, 303)
    if this_browser:
        clear_trusted_cookie(request, response)
    return response


# Enable


async def _enable_form(
    request: Request, user: Document, sign_in: str, *, error: str | None = None, status: int = 200
) -> Response:
    try:
        enrollment = await services_of(request).twofactor.begin_enrollment(user["id"], sign_in=sign_in)
    except TwoFactorError:
        return RedirectResponse(SETTINGS, 302)
    grouped = " ".join(enrollment.secret[i : i + 4] for i in range(0, len(enrollment.secret), 4))
    after = _after_enrolment(request)
    context = {
        "qr": qr_svg(enrollment.uri),
        "secret_grouped": grouped,
        "account": enrollment.account,
        "error": error,
        "action": f"{SETTINGS}/enable"
        + (f"?redirect_to={quote(after, safe='')}" if after != SETTINGS else ""),
    }
    return await render(request, "two_factor_enable.html", context, status=status)


async def enable_page(request: Request) -> Response:
    signed_in = await _user_and_sign_in(request)
    if signed_in is None:
        return _to_login()
    return await _enable_form(request, *signed_in)


@page
async def enable(request: Request) -> Response:
    principal = await browser_session(request)
    if principal is None or principal.user is None or principal.session is None:
        return _to_login()
    user, sign_in = principal.user, sign_in_of(principal.session)
    form = await checked_form(request)
    try:
        codes = await services_of(request).twofactor.confirm_enrollment(
            user["id"], form.get("code", ""), sign_in=sign_in, ip=client_ip(request)
        )
    except Locked as error:
        return await _locked_page(request, error)
    except TwoFactorError as error:
        if error.error == "wrong_token":
            return await _enable_form(request, user, sign_in, error=_WRONG_CODE, status=400)
        if error.error == "not_requested":
            # Expired, or pending for another sign-in: this one gets a key of its own to scan.
            return await _enable_form(request, user, sign_in, error=_SETUP_EXPIRED, status=400)
        return RedirectResponse(SETTINGS, 302)
    after = _after_enrolment(request)
    response: Response
    if not codes:
        response = RedirectResponse(f"{SETTINGS}?done=enabled" if after == SETTINGS else after, 303)
    else:
        context = {"codes": codes, "notice": _ENABLED, "next_url": after}
        response = await render(request, "two_factor_codes.html", context)
    # The code that turned 2FA on is a second factor this sign-in has given; had the Session ended
    # meanwhile, 2FA is on all the same and the next sign-in asks for a code.
    await raise_sign_in(request, response, principal.session, OTP)
    return response


# Disable and new recovery codes: both need a current code


async def _code_form(request: Request, kind: str, *, error: str | None = None, status: int = 200) -> Response:
    context = {
        "disable": {
            "heading": "Turn off two-factor authentication",
            "explanation": "Enter a current code to turn two-factor authentication off.",
            "button": "Turn off",
            "action": f"{SETTINGS}/disable",
        },
        "recovery-codes": {
            "heading": "New recovery codes",
            "explanation": "Enter a current code to replace your recovery codes. The old ones stop working.",
            "button": "Make new codes",
            "action": f"{SETTINGS}/recovery-codes",
        },
    }[kind]
    return await render(request, "two_factor_code_form.html", {**context, "error": error}, status=status)


async def disable_page(request: Request) -> Response:
    user = await _signed_in_user(request)
    if user is None:
        return _to_login()
    if not status_of(user).enabled:
        return RedirectResponse(SETTINGS, 302)
    return await _code_form(request, "disable")


@page
async def disable(request: Request) -> Response:
    user = await _signed_in_user(request)
    if user is None:
        return _to_login()
    form = await checked_form(request)
    try:
        await services_of(request).twofactor.disable(user["id"], form.get("code", ""), ip=client_ip(request))
    except Locked as error:
        return await _locked_page(request, error)
    except TwoFactorError as error:
        if error.error == "wrong_token":
            return await _code_form(request, "disable", error=_WRONG_CODE, status=400)
        if error.error == "not_set_up":
            return await _not_set_up_page(request)
        return RedirectResponse(SETTINGS, 302)
    return RedirectResponse(f"{SETTINGS}?done=disabled", 303)


async def recovery_codes_page(request: Request) -> Response:
    user = await _signed_in_user(request)
    if user is None:
        return _to_login()
    if not status_of(user).enabled:
        return RedirectResponse(SETTINGS, 302)
    return await _code_form(request, "recovery-codes")


@page
async def recovery_codes(request: Request) -> Response:
    user = await _signed_in_user(request)
    if user is None:
        return _to_login()
    form = await checked_form(request)
    try:
        codes = await services_of(request).twofactor.regenerate_recovery_codes(
            user["id"], form.get("code", ""), ip=client_ip(request)
        )
    except Locked as error:
        return await _locked_page(request, error)
    except TwoFactorError as error:
        if error.error == "wrong_token":
            return await _code_form(request, "recovery-codes", error=_WRONG_CODE, status=400)
        if error.error == "not_set_up":
            return await _not_set_up_page(request)
        return RedirectResponse(SETTINGS, 302)
    return await render(request, "two_factor_codes.html", {"codes": codes})


# The sign-in step


async def _refuse_not_set_up(request: Request, pending_id: str, user: Document) -> Response:
    """The sign-in ends here: no code can be right, and the password alone must not do."""
    services = services_of(request)
    await services.pending_logins.take(pending_id)
    await services.audit.record(
        "login", "failure", user=user, ip=client_ip(request), detail={"reason": "two-factor-not-set-up"}
    )
    response = await _not_set_up_page(request)
    clear_cookie(response, PENDING_COOKIE, secure=secure_cookies(request), path=PENDING_COOKIE_PATH)
    return response


async def _verify_form(
    request: Request, *, error: str | None = None, notice: str | None = None, status: int = 200
) -> Response:
    config = await services_of(request).twofactor.config()
    context = {
        "error": error,
        "notice": notice,
        "webhook": config.webhook is not None,
        "factors": await pending_second_factors(request),
        "trust_days": config.trusted_device_days,
    }
    return await render(request, "two_factor_verify.html", context, status=status)


async def verify_page(request: Request) -> Response:
    services = services_of(request)
    pending_id = read_cookie(request, PENDING_COOKIE)
    pending = await services.pending_logins.get(pending_id) if pending_id else None
    if pending is None or pending_id is None:
        return await expired_sign_in(request)
    user = (await services.twofactor.user(pending.user_id)).document
    if enabled_without_secret(user):
        return await _refuse_not_set_up(request, pending_id, user)
    notice = None
    # The first display of the step sends the code once, however often the page is reloaded.
    if (
        not pending.document.get("webhookSent")
        and await services.pending_logins.mark(pending_id, webhookSent=True)
        and (await services.twofactor.config()).webhook is not None
    ):
        sent = await services.twofactor.send_code(user, ip=client_ip(request))
        notice = (
            "We sent you a code." if sent else "We could not send you a code; use your authenticator app."
        )
    return await _verify_form(request, notice=notice)


@page
async def verify(request: Request) -> Response:
    services = services_of(request)
    form = await checked_form(request)
    pending_id = read_cookie(request, PENDING_COOKIE)
    pending = await services.pending_logins.get(pending_id) if pending_id else None
    if pending is None or pending_id is None:
        return await expired_sign_in(request)
    user = (await services.twofactor.user(pending.user_id)).document
    if enabled_without_secret(user):
        return await _refuse_not_set_up(request, pending_id, user)
    if form.get("action") == "resend":
        sent = await services.twofactor.send_code(user, ip=client_ip(request))
        notice = (
            "We sent you a new code." if sent else "We could not send you a code; use your authenticator app."
        )
        return await _verify_form(request, notice=notice)
    verdict = await services.twofactor.verify_user(user, form.get("code", ""), ip=client_ip(request))
    if verdict.reason is Reason.LOCKED:
        return await _locked_page(request, Locked(verdict.locked_until))
    if not verdict.accepted:
        return await _verify_form(request, error=_WRONG_CODE, status=400)
    finished = await services.pending_logins.take(pending_id)
    if finished is None:
        return await expired_sign_in(request)
    trust = form.get(TRUST_FIELD) == "on"
    step_up = finished.document.get("stepUp")
    if step_up is not None:
        return await finish_step_up(request, step_up, finished.continuation, OTP, trust=trust)
    now = int(services.clock().timestamp())
    # A pending login stored before methods were recorded started with the password, just now.
    password = SignInMethods.from_dict(finished.document.get("amr_times")) or SignInMethods.password(now)
    response = await finish_sign_in(request, user, finished.continuation, password.with_otp(now))
    if trust:
        await remember_device(request, response, user, (OTP,))
    return response


routes = [
    Route(SETTINGS, settings_page, methods=["GET"]),
    Route(f"{SETTINGS}/enable", enable_page, methods=["GET"]),
    Route(f"{SETTINGS}/enable", enable, methods=["POST"]),
    Route(f"{SETTINGS}/disable", disable_page, methods=["GET"]),
    Route(f"{SETTINGS}/disable", disable, methods=["POST"]),
    Route(f"{SETTINGS}/recovery-codes", recovery_codes_page, methods=["GET"]),
    Route(f"{SETTINGS}/recovery-codes", recovery_codes, methods=["POST"]),
    Route(f"{SETTINGS}/verify", verify_page, methods=["GET"]),
    Route(f"{SETTINGS}/verify", verify, methods=["POST"]),
    Route(f"{SETTINGS}/trusted-devices", forget_trusted_devices, methods=["POST"]),
]
