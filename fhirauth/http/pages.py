"""The HTML faces of sign-in: authorize, login, consent, logout, signup and its confirmation link."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, quote

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

from fhirauth.auth.authorization import (
    AuthorizationError,
    AuthorizationRequest,
    Step,
    UnsafeAuthorizationRequest,
)
from fhirauth.auth.consent import scope_lines
from fhirauth.auth.login import (
    DEFAULT_CONTINUATION,
    LoginRefused,
    continuation_for,
    decode_redirect_to,
    has_two_factor,
    local_path,
)
from fhirauth.auth.oidc.amr import SignInMethods
from fhirauth.auth.oidc.logout import InvalidLogoutRequest, is_logout_request
from fhirauth.auth.oidc.responses import AuthorizationResponse, ResponseMode
from fhirauth.auth.principal import Principal
from fhirauth.auth.signup import (
    MIN_PASSWORD_CHARS,
    AccountExists,
    InvalidEmail,
    LinkInvalid,
    WeakPassword,
    normalize_email,
)
from fhirauth.clock import isoformat
from fhirauth.http.context import services_of
from fhirauth.http.cookies import (
    CSRF_COOKIE,
    PENDING_COOKIE,
    PENDING_COOKIE_MAX_AGE,
    PENDING_COOKIE_PATH,
    SESSION_COOKIE,
    clear_cookie,
    read_cookie,
    set_cookie,
)
from fhirauth.http.csrf import CSRF_FIELD, CsrfRefused
from fhirauth.http.forms import BadForm, read_form, read_urlencoded
from fhirauth.http.html import STATIC_DIR, checked_form, csrf_of, error_page, render, secure_cookies, static
from fhirauth.http.limits import client_ip
from fhirauth.http.trusted_devices import recognize, session_field
from fhirauth.notify import NotificationFailed
from fhirauth.twofactor.trusted_devices import TrustedDevice

Document = dict[str, Any]
Endpoint = Callable[[Request], Awaitable[Response]]

_REFUSED_MESSAGE = "Wrong e-mail, username or password."
_INACTIVE_MESSAGE = "This account is disabled. Contact the administrator."
_MISSING_MESSAGE = "Enter your e-mail (or username) and your password."
_MAX_AUDIT_CHARS = 256


def page(endpoint: Endpoint) -> Endpoint:
    """Bad forms and failed CSRF checks answer with an HTML page, before anything is written."""

    @functools.wraps(endpoint)
    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except CsrfRefused:
            return await error_page(
                request,
                "The form expired; reload and try again.",
                status=403,
                heading="The form expired",
            )
        except BadForm as error:
            return await error_page(request, error.message, status=error.status)

    return wrapped


def _with_query(path: str, query: str) -> str:
    return f"{path}?{query}" if query else path


def _first_values(pairs: list[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    """The parameters (first value of each) and the names given more than once."""
    params: dict[str, str] = {}
    repeated: list[str] = []
    for name, value in pairs:
        if name in params:
            repeated.append(name)
        else:
            params[name] = value
    return params, repeated


async def browser_session(request: Request) -> Principal | None:
    """The signed-in user of this browser (the `asid` cookie), if its session is alive."""
    token = read_cookie(request, SESSION_COOKIE)
    if token is None:
        return None
    principal = await services_of(request).sessions.resolve(token)
    if principal is None or principal.user is None or principal.session is None:
        return None
    # An API access token copied into the cookie is not a browser sign-in.
    if principal.session.get("type") != "browser":
        return None
    return principal


async def finish_sign_in(
    request: Request,
    user: Document,
    continuation: str,
    methods: SignInMethods,
    *,
    trusted_device: TrustedDevice | None = None,
) -> Response:
    """Start a new browser session for `user`, signed in with `methods` (a new cookie value every
    time), and go on.

    Called after the password (or the signup link), and by the two-factor step once its code is right;
    after the password alone too when this browser is a `trusted_device` of the user's.
    """
    services = services_of(request)
    secure = secure_cookies(request)
    previous = await browser_session(request)
    if previous is not None and previous.session is not None:
        await services.sessions.end(previous.session)
    max_age = await services.auth_config.asid_cookie_max_age()
    token, session = await services.sessions.create_browser_session(
        user,
        max_age=max_age,
        ip=client_ip(request),
        methods=methods,
        trusted_device=session_field(trusted_device) if trusted_device is not None else None,
    )
    target = local_path(continuation, services.settings.base_url) or DEFAULT_CONTINUATION
    response = RedirectResponse(target, 302)
    set_cookie(response, SESSION_COOKIE, token, max_age=max_age, secure=secure)
    if request.cookies.get(PENDING_COOKIE) is not None:
        clear_cookie(response, PENDING_COOKIE, secure=secure, path=PENDING_COOKIE_PATH)
    detail = {"session": session["id"], "trustedDevice": trusted_device.id if trusted_device else None}
    await services.audit.record("login", "success", user=user, ip=client_ip(request), detail=detail)
    return response


# /auth/authorize and consent


async def _validated(request: Request, query: str) -> AuthorizationRequest | Response:
    """The authorization request, or the response that ends it (error page or error redirect)."""
    params, repeated = _first_values(parse_qsl(query, keep_blank_values=True))
    try:
        return await services_of(request).authorization.validate(params, repeated)
    except UnsafeAuthorizationRequest as error:
        # RFC 6749 §4.1.2.1: never redirect to an unverified redirect_uri.
        return await error_page(request, str(error), heading="This sign-in request is not valid")
    except AuthorizationError as error:
        return await _answer(request, error.response())


async def _answer(request: Request, response: AuthorizationResponse) -> Response:
    """The client's answer: a redirect, or (form_post) a page that posts it to the redirect URI."""
    if response.mode is not ResponseMode.FORM_POST:
        return RedirectResponse(response.location(), 302)
    # Form Post Response Mode §2: no script of the page's own but the nonce'd submit; never stored.
    return await render(
        request, "form_post.html", {"redirect_uri": response.redirect_uri, "params": response.params}
    )


async def authorize(request: Request) -> Response:
    return await _authorize(request, request.url.query)


async def authorize_by_post(request: Request) -> Response:
    """The same request as a form POST, which OpenID Connect Core §3.1.2.1 (and so SMART) asks for: its
    body read as the query it stands for. No CSRF check, as none for GET: the request only starts a
    sign-in, and every step that grants something (consent, the sign-in itself) checks its own."""
    try:
        query = await read_urlencoded(request)
    except BadForm as error:
        return await error_page(request, error.message, status=error.status)
    return await _authorize(request, query)


async def _authorize(request: Request, query: str) -> Response:
    services = services_of(request)
    validated = await _validated(request, query)
    if isinstance(validated, Response):
        return validated
    principal = await browser_session(request)
    user = principal.user if principal is not None else None
    session = principal.session if principal is not None else None
    try:
        step = await services.authorization.next_step(
            validated, user, session, read_cookie(request, PENDING_COOKIE)
        )
    except AuthorizationError as error:
        return await _answer(request, error.response())
    if step is Step.SIGN_IN:
        return RedirectResponse(_with_query("/auth/login", query), 302)
    assert user is not None and session is not None, "only a signed-in browser gets past the sign-in step"
    if step is Step.STEP_UP:
        return await _step_up(request, user, session)
    if step is Step.CONSENT:
        return await _consent_page(request, validated, user)
    return await _answer(request, await services.authorization.complete(validated, user, session))


async def _consent_page(request: Request, auth: AuthorizationRequest, user: Document) -> Response:
    client = auth.client
    name = client.get("name")
    context = {
        "client_name": name if isinstance(name, str) and name else client["id"],
        "user_label": user.get("email") or user.get("userName") or user["id"],
        "scopes": scope_lines(auth.scope),
        "query": auth.continuation_query,
    }
    return await render(request, "consent.html", context)


@page
async def consent(request: Request) -> Response:
    services = services_of(request)
    form = await checked_form(request)
    query = form.get("query", "")
    validated = await _validated(request, query)
    if isinstance(validated, Response):
        return validated
    principal = await browser_session(request)
    if principal is None or principal.user is None or principal.session is None:
        return RedirectResponse(_with_query("/auth/login", query), 302)
    try:
        step = await services.authorization.next_step(validated, principal.user, principal.session, None)
    except AuthorizationError as error:
        return await _answer(request, error.response())
    if step in (Step.SIGN_IN, Step.STEP_UP):
        # A consent form posted for a request this sign-in does not yet meet: the steps come first.
        return RedirectResponse(_with_query("/auth/authorize", query), 302)
    decision = form.get("decision")
    if decision == "deny":
        denied = AuthorizationError("access_denied", "The user denied the request", validated)
        return await _answer(request, denied.response())
    if decision != "approve":
        return await error_page(request, "Choose Allow or Deny.", heading="Allow access?")
    await services.consents.grant(validated.client, principal.user, validated.scope)
    return await _answer(
        request, await services.authorization.complete(validated, principal.user, principal.session)
    )


# /auth/login


async def _login_form(
    request: Request, *, username: str = "", error: str | None = None, status: int = 200
) -> Response:
    query = request.url.query
    context = {
        "action": _with_query("/auth/login", query),
        "signup_url": _with_query("/auth/signup", query),
        "passkey_action": _with_query("/auth/two-factor/passkeys/sign-in", query)
        if (await services_of(request).twofactor.config()).passkey_sign_in
        else None,
        "username": username,
        "error": error,
    }
    return await render(request, "login.html", context, status=status)


async def login_page(request: Request) -> Response:
    hint = request.query_params.get("login_hint", "")
    return await _login_form(request, username=hint[:_MAX_AUDIT_CHARS])


@page
async def login(request: Request) -> Response:
    services = services_of(request)
    form = await checked_form(request)
    username = form.get("username", "").strip()
    password = form.get("password", "")
    params, _ = _first_values(parse_qsl(request.url.query, keep_blank_values=True))
    try:
        user = await services.logins.check_password(username, password)
    except LoginRefused as refused:
        detail = {"reason": refused.reason, "username": username[:_MAX_AUDIT_CHARS]}
        if refused.locked_until is not None:
            detail["lockedUntil"] = isoformat(refused.locked_until)
        await services.audit.record(
            "login", "failure", user=refused.user, ip=client_ip(request), detail=detail
        )
        message = {"malformed": _MISSING_MESSAGE, "inactive": _INACTIVE_MESSAGE}.get(
            refused.reason, _REFUSED_MESSAGE
        )
        return await _login_form(request, username=username[:_MAX_AUDIT_CHARS], error=message, status=400)
    continuation = continuation_for(params, request.url.query, services.settings.base_url)
    methods = SignInMethods.password(int(services.clock().timestamp()))
    if has_two_factor(user) or await services.passkeys.has_passkeys(user["id"]):
        trusted = await recognize(request, user)
        if trusted.device is not None:
            return await finish_sign_in(request, user, continuation, methods, trusted_device=trusted.device)
        response = await _start_second_factor(request, user, continuation, amr_times=dict(methods.times))
        trusted.clear_dead_cookie(request, response)
        return response
    return await finish_sign_in(request, user, continuation, methods)


async def _start_second_factor(
    request: Request, user: Document, continuation: str, **fields: Any
) -> Response:
    """The code step of the pending login that `fields` describe (PendingLogins.create)."""
    pending_id = await services_of(request).pending_logins.create(user["id"], continuation, **fields)
    response = RedirectResponse("/auth/two-factor/verify", 302)
    set_cookie(
        response,
        PENDING_COOKIE,
        pending_id,
        max_age=PENDING_COOKIE_MAX_AGE,
        secure=secure_cookies(request),
        path=PENDING_COOKIE_PATH,
    )
    return response


# Step-up: a signed-in browser whose request needs a second factor its sign-in has not given


async def _step_up(request: Request, user: Document, session: Document) -> Response:
    """The code step for this sign-in, which the two-factor page then raises in place; a user without
    a second factor sets one up first (its code raises the sign-in), then comes back here."""
    continuation = _with_query("/auth/authorize", request.url.query)
    if not has_two_factor(user) and not await services_of(request).passkeys.has_passkeys(user["id"]):
        return RedirectResponse(f"/auth/two-factor/enable?redirect_to={quote(continuation, safe='')}", 302)
    return await _start_second_factor(request, user, continuation, stepUp=session["id"])


# /auth/logout


async def _confirm_logout(request: Request, principal: Principal | None, query: str) -> Response:
    user = principal.user if principal is not None else None
    context = {
        "signed_in": user is not None,
        "user_label": (user.get("email") or user.get("userName") or user["id"]) if user else None,
        "action": _with_query("/auth/logout", query),
    }
    return await render(request, "logout.html", context)


async def logout_page(request: Request) -> Response:
    """The sign-out page; with a client's parameters, the end-session endpoint (end_session)."""
    pairs = parse_qsl(request.url.query, keep_blank_values=True)
    params, repeated = _first_values(pairs)
    if is_logout_request(params):
        return await _end_session(request, params, repeated)
    return await _confirm_logout(request, await browser_session(request), request.url.query)


async def _signed_out(request: Request, target: str | None) -> Response:
    response = (
        RedirectResponse(target, 302)
        if target is not None
        else await render(request, "logout.html", {"signed_in": False})
    )
    clear_cookie(response, SESSION_COOKIE, secure=secure_cookies(request))
    return response


async def _end_browser_session(
    request: Request, principal: Principal | None, client_id: str | None = None
) -> None:
    if principal is None or principal.session is None:
        return
    services = services_of(request)
    await services.sessions.end(principal.session)
    detail = {"session": principal.session["id"], **({"client": client_id} if client_id else {})}
    await services.audit.record(
        "logout", "success", user=principal.user, ip=client_ip(request), detail=detail
    )


async def _end_session(request: Request, params: dict[str, str], repeated: list[str]) -> Response:
    """RP-Initiated Logout §2-§4: a hint for this browser's sign-in ends it at once; otherwise the user
    is asked (the form posts the request back to `logout`). Never a redirect for an invalid request."""
    services = services_of(request)
    try:
        ending = await services.rp_logout.validate(params, repeated)
    except InvalidLogoutRequest as error:
        return await error_page(request, error.description, heading="This sign-out request is not valid")
    principal = await browser_session(request)
    if principal is None:
        ended = await services.rp_logout.end_hinted(ending)
        if ended is not None:
            detail = {"session": ended["id"], **({"client": ending.client_id} if ending.client_id else {})}
            await services.audit.record(
                "logout", "success", user=ending.subject, ip=client_ip(request), detail=detail
            )
        return await _signed_out(request, ending.location())
    assert principal.session is not None
    if ending.sid != principal.session["id"]:
        return await _confirm_logout(request, principal, ending.query)
    await _end_browser_session(request, principal, ending.client_id)
    return await _signed_out(request, ending.location())


@page
async def logout(request: Request) -> Response:
    services = services_of(request)
    form = await read_form(request)
    if CSRF_FIELD not in form and is_logout_request(form):
        # A client's form POST to the end-session endpoint: as its GET would be.
        return await _end_session(request, form, [])
    csrf_of(request).check(read_cookie(request, CSRF_COOKIE), form.get(CSRF_FIELD))
    params, repeated = _first_values(parse_qsl(request.url.query, keep_blank_values=True))
    target: str | None = None
    client_id: str | None = None
    if is_logout_request(params):
        # The confirmation of a client's request: the user chose to sign out.
        try:
            ending = await services.rp_logout.validate(params, repeated)
        except InvalidLogoutRequest as error:
            return await error_page(request, error.description, heading="This sign-out request is not valid")
        target, client_id = ending.location(), ending.client_id
    else:
        redirect_to = params.get("redirect_to")
        target = decode_redirect_to(redirect_to, services.settings.base_url) if redirect_to else None
    await _end_browser_session(request, await browser_session(request), client_id)
    return await _signed_out(request, target)


# /auth/signup


async def _signup_form(
    request: Request, *, email: str = "", error: str | None = None, status: int = 200
) -> Response:
    query = request.url.query
    context = {
        "action": _with_query("/auth/signup", query),
        "login_url": _with_query("/auth/login", query),
        "email": email,
        "error": error,
    }
    return await render(request, "signup.html", context, status=status)


async def signup_page(request: Request) -> Response:
    return await _signup_form(request)


@page
async def signup(request: Request) -> Response:
    services = services_of(request)
    form = await checked_form(request)
    raw_email = form.get("email", "")
    params, _ = _first_values(parse_qsl(request.url.query, keep_blank_values=True))
    continuation = continuation_for(params, request.url.query, services.settings.base_url)
    try:
        # Every signup sends an e-mail (to a new or an existing account alike): a limit per address
        # keeps this form from flooding someone's inbox.
        await services.rate_limiter.hit(services.rate_limits.signup_email, normalize_email(raw_email))
        registration = await services.signups.start(raw_email, continuation)
    except InvalidEmail as error:
        return await _signup_form(request, email=raw_email[:_MAX_AUDIT_CHARS], error=str(error), status=400)
    except NotificationFailed:
        return await error_page(
            request,
            "We could not send the e-mail just now. Try again in a few minutes.",
            status=503,
            heading="E-mail not sent",
        )
    email = raw_email.strip().lower()
    await services.audit.record(
        "signup",
        "success",
        ip=client_ip(request),
        detail={
            "email": email,
            "registration": registration["id"] if registration else None,
            "existingAccount": registration is None,
        },
    )
    return await render(
        request,
        "signup_sent.html",
        {"email": email, "signup_url": _with_query("/auth/signup", request.url.query)},
    )


# /auth/signup/confirm/{id}


async def _link_refused(request: Request, registration_id: str, error: LinkInvalid) -> Response:
    await services_of(request).audit.record(
        "signup-confirm",
        "failure",
        ip=client_ip(request),
        detail={"registration": registration_id[:_MAX_AUDIT_CHARS], "reason": error.reason},
    )
    return await error_page(
        request,
        str(error),
        heading="This link does not work",
        hint="Start again from the sign-up page to get a new link.",
    )


async def _confirm_form(
    request: Request, registration: Document, token: str, *, error: str | None = None, status: int = 200
) -> Response:
    context = {
        "action": f"/auth/signup/confirm/{quote(registration['id'], safe='')}",
        "email": registration.get("email", ""),
        "token": token,
        "min_password": MIN_PASSWORD_CHARS,
        "error": error,
    }
    return await render(request, "signup_confirm.html", context, status=status)


async def signup_confirm_page(request: Request) -> Response:
    registration_id = request.path_params["id"]
    token = request.query_params.get("token", "")
    try:
        registration = await services_of(request).signups.check(registration_id, token)
    except LinkInvalid as error:
        return await _link_refused(request, registration_id, error)
    return await _confirm_form(request, registration, token)


@page
async def signup_confirm(request: Request) -> Response:
    services = services_of(request)
    registration_id = request.path_params["id"]
    form = await checked_form(request)
    token = form.get("token", "")
    password = form.get("password", "")
    try:
        registration = await services.signups.check(registration_id, token)
    except LinkInvalid as error:
        return await _link_refused(request, registration_id, error)
    if "password_confirm" in form and form["password_confirm"] != password:
        return await _confirm_form(
            request, registration, token, error="The passwords do not match.", status=400
        )
    try:
        user, continuation = await services.signups.confirm(registration_id, token, password)
    except LinkInvalid as error:
        return await _link_refused(request, registration_id, error)
    except WeakPassword as error:
        return await _confirm_form(request, registration, token, error=str(error), status=400)
    except AccountExists as error:
        return await error_page(request, str(error), status=409, heading="You already have an account")
    await services.audit.record(
        "signup-confirm",
        "success",
        user=user,
        ip=client_ip(request),
        detail={"registration": registration_id},
    )
    # The link proved the mailbox, and the user has just chosen the password: a password sign-in.
    methods = SignInMethods.password(int(services.clock().timestamp()))
    return await finish_sign_in(request, user, continuation or DEFAULT_CONTINUATION, methods)


# Browsers ask every origin for /favicon.ico: a 404 is a console error on every page, ours (which link
# the SVG) and the API's alike. A week, since the icon changes with a release at most.
async def favicon(request: Request) -> Response:
    headers = {"Cache-Control": "public, max-age=604800"}
    return FileResponse(STATIC_DIR / "favicon.ico", media_type="image/x-icon", headers=headers)


routes = [
    Route("/auth/authorize", authorize, methods=["GET"]),
    Route("/auth/authorize", authorize_by_post, methods=["POST"]),
    Route("/auth/consent", consent, methods=["POST"]),
    Route("/auth/login", login_page, methods=["GET"]),
    Route("/auth/login", login, methods=["POST"]),
    Route("/auth/logout", logout_page, methods=["GET"]),
    Route("/auth/logout", logout, methods=["POST"]),
    Route("/auth/signup", signup_page, methods=["GET"]),
    Route("/auth/signup", signup, methods=["POST"]),
    Route("/auth/signup/confirm/{id}", signup_confirm_page, methods=["GET"]),
    Route("/auth/signup/confirm/{id}", signup_confirm, methods=["POST"]),
    static,
    Route("/favicon.ico", favicon, methods=["GET"]),
]
