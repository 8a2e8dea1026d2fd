"""Abuse limits at the HTTP edge: the client's address, the per-address limits, and the answers to a
refusal (429) and to a full password-hashing queue (503).

Per-address limits are counted at the edge (edge.py) rather than in each endpoint: one table says
which routes are limited, a new route under a limited path cannot forget its call, and a refused
request is answered before its body is read, its form parsed or any password hashed. Per-account
limits need the parsed body, so they are counted where it is read (the password check in Logins, the
signup form) and surface as RateLimited, which `rate_limited` renders the same way. The two-factor
step's per-account limit is the code lockout of the 2FA guard. The limits on failed client
authentication are counted where secrets are verified (ClientRegistry), on every route; they learn
the address behind them from `request_address`, which reads the scope the edge keeps.

Each refusal is answered in the format of the face it reached: an HTML page on the sign-in pages,
RFC 6749 §5.2 JSON on the OAuth endpoints and the 2FA JSON operations, an OperationOutcome on the
REST API.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
from collections.abc import Callable
from contextvars import ContextVar
from enum import Enum
from operator import attrgetter

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from fhirauth.auth.oauth_errors import InvalidRequest, OAuthError, TemporarilyUnavailable
from fhirauth.auth.passwords import HashingBusy
from fhirauth.errors import OutcomeError, TooManyRequests
from fhirauth.http.context import services_in, services_of
from fhirauth.http.errors import oauth_response
from fhirauth.http.html import error_page
from fhirauth.http.render import outcome_response, retry_after_header
from fhirauth.ratelimit import Limit, RateLimited, RateLimits

log = logging.getLogger("fhirauth.limits")


class _Face(Enum):
    PAGE = "page"
    OAUTH = "oauth"
    REST = "rest"


_PAGE_PREFIXES = ("/auth/login", "/auth/signup", "/auth/two-factor")
_OAUTH_PREFIXES = ("/auth/token", "/auth/introspect", "/auth/revoke", "/app/auth/two-factor/")
_MAX_ADDRESS_CHARS = 64
# The scope of the request being served, for `request_address`.
_serving: ContextVar[Scope | None] = ContextVar("serving", default=None)


def client_address(scope: Scope, trust_proxy_headers: bool) -> str | None:
    """Who sent the request: the socket peer, or with `trust_proxy_headers` the address the nearest
    proxy appended to X-Forwarded-For (entries to its left are whatever the client wrote)."""
    if trust_proxy_headers:
        forwarded = [
            value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name.lower() == b"x-forwarded-for"
        ]
        if forwarded:
            nearest = ",".join(forwarded).rsplit(",", 1)[-1].strip()
            if nearest:
                return nearest[:_MAX_ADDRESS_CHARS]
    client = scope.get("client")
    return str(client[0]) if client else None


def client_ip(request: Request) -> str | None:
    """The caller's address, as the rate limits and the audit trail see it."""
    return client_address(request.scope, services_of(request).settings.trust_proxy_headers)


# Parsing an address costs more than the rest of an unrefused count; clients come back.
@functools.lru_cache(maxsize=4096)
def address_key(address: str | None) -> str:
    """The key an address is counted under: an IPv6 address by its /64 (what one subscriber gets)."""
    if address is None:
        return "unknown"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def limit_for(method: str, path: str) -> Callable[[RateLimits], Limit] | None:
    """Which of the per-address limits a request counts against (None for unlimited ones).

    It names the limit rather than reading it, so an unlimited request never looks up the settings.
    """
    if method != "POST":
        return None
    if path == "/auth/login":
        return attrgetter("login_ip")
    if path == "/auth/token":
        return attrgetter("token_ip")
    if path == "/auth/signup":
        return attrgetter("signup_ip")
    # The sign-in step and every form or operation that checks a code.
    if path.startswith(("/auth/two-factor/", "/app/auth/two-factor/")):
        return attrgetter("two_factor_ip")
    return None


async def rate_limited(request: Request, exc: Exception) -> Response:
    """429 with Retry-After, in the format of the face the request reached."""
    assert isinstance(exc, RateLimited)
    seconds = exc.retry_after
    if exc.first:
        # Once per window, not per refused request: a flood must not become a flood of log lines.
        address = client_address(request.scope, services_of(request).settings.trust_proxy_headers)
        log.warning("rate limit %s reached (client %s); refusing for %d s", exc.limit, address, seconds)
    wait = _wait_text(seconds)
    face = _face_of(request)
    if face is _Face.PAGE:
        page = f"Too many attempts. Try again in {wait}."
        return await _page(request, 429, "Too many attempts", page, seconds)
    message = f"Too many requests; try again in {wait}"
    if face is _Face.OAUTH:
        return _oauth(InvalidRequest(message), seconds, status=429)
    return _outcome(request, TooManyRequests(message), seconds)


async def hashing_busy(request: Request, exc: Exception) -> Response:
    """503 with Retry-After when every password-hashing thread is taken and the queue is full, in
    the format of the face the request reached. Nothing was verified or written."""
    assert isinstance(exc, HashingBusy)
    seconds = exc.retry_after
    wait = _wait_text(seconds)
    face = _face_of(request)
    if face is _Face.PAGE:
        return await _page(request, 503, "Busy", f"The server is busy. Try again in {wait}.", seconds)
    if face is _Face.OAUTH:
        return _oauth(TemporarilyUnavailable(f"The server is busy; try again in {wait}"), seconds)
    return _outcome(request, exc, seconds)


def _face_of(request: Request) -> _Face:
    path = _route_path(request.scope)
    if path.startswith(_PAGE_PREFIXES):
        return _Face.PAGE
    if path.startswith(_OAUTH_PREFIXES):
        return _Face.OAUTH
    return _Face.REST


async def _page(request: Request, status: int, heading: str, message: str, seconds: int) -> Response:
    response = await error_page(request, message, status=status, heading=heading)
    response.headers.update(retry_after_header(seconds))
    return response


def _oauth(error: OAuthError, seconds: int, *, status: int | None = None) -> Response:
    error.headers.update(retry_after_header(seconds))
    return oauth_response(error, status)


def _outcome(request: Request, error: OutcomeError, seconds: int) -> Response:
    error.headers.update(retry_after_header(seconds))
    return outcome_response(request, error)


def _wait_text(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"{math.ceil(seconds / 60)} minutes"


async def check_address_limit(scope: Scope) -> None:
    """Count a request of a limited route against its client's address; RateLimited past the limit.

    Called by the edge layer before the route runs (and before it reads the body), which answers
    RateLimited with `rate_limited`, as it does when an endpoint raises it. It also keeps the
    request's scope for `request_address`.
    """
    _serving.set(scope)
    limit = limit_for(scope["method"], _route_path(scope))
    if limit is None:
        return
    try:
        services = services_in(scope)
    except KeyError:
        return
    address = client_address(scope, services.settings.trust_proxy_headers)
    await services.rate_limiter.hit(limit(services.rate_limits), address_key(address))


def request_address() -> str | None:
    """The key of the address the request being served came from; None outside a request.

    For the limits counted below this layer (failed client authentication), which the faces reach
    without passing the request down. Worked out only when asked: most requests never ask.
    """
    scope = _serving.get()
    if scope is None:
        return None
    return address_key(client_address(scope, services_in(scope).settings.trust_proxy_headers))


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    return path[len(root_path) :] if root_path and path.startswith(root_path) else path
