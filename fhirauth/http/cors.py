"""CORS headers for single-page apps on other origins (SPEC §5); which origins are allowed is a rule
of the clients (fhirauth/auth/origins.py). No `Access-Control-Allow-Credentials`: tokens travel in
the Authorization header, never in cookies, so a cross-origin page gets nothing from the browser
session (`asid`) and cannot ride on it.

The discovery documents are the exception: any page may read them (SMART App Launch 2.2 §CORS, which
Inferno checks), so a GET or HEAD of one, and its preflight, get `Access-Control-Allow-Origin: *`,
Origin or not. They hold no secrets and are the same for every caller, and `*` keeps browsers from
sending cookies with them. Any other method on those paths is under the registered-origins rule.

The edge layer (serving/edge.py) applies these to every answer, 500s included; apart from the
discovery documents, a request without `Origin` gets none of them.
"""

from __future__ import annotations

from starlette.responses import PlainTextResponse, Response
from starlette.types import Scope

from fhirauth.auth.origins import AllowedOrigins
from fhirauth.http.context import services_in

RawHeaders = list[tuple[bytes, bytes]]

ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE"
ALLOW_HEADERS = "Authorization, Content-Type, Cache-Control"
EXPOSE_HEADERS = "ETag, Location, Last-Modified, Content-Location, WWW-Authenticate"
MAX_AGE = "600"
_EXPOSE_HEADERS = EXPOSE_HEADERS.encode()
DISCOVERY_PATHS = frozenset(
    {
        "/.well-known/smart-configuration",
        "/metadata",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/.well-known/jwks.json",
    }
)
_READS = ("GET", "HEAD")
_ANY_ORIGIN = (b"access-control-allow-origin", b"*")


def origin_header(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"origin":
            return str(value.decode("latin-1"))
    return None


def is_preflight(scope: Scope) -> bool:
    return scope["method"] == "OPTIONS" and any(
        name == b"access-control-request-method" for name, _ in scope["headers"]
    )


def is_discovery_read(scope: Scope) -> bool:
    """A read of a discovery document, or the preflight of one: open to every origin."""
    path: str = scope["path"]
    root_path: str | None = scope.get("root_path")
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    if path not in DISCOVERY_PATHS:
        return False
    method = scope["method"]
    if method == "OPTIONS":
        return any(
            name == b"access-control-request-method" and value.decode("latin-1") in _READS
            for name, value in scope["headers"]
        )
    return method in _READS


def discovery_preflight_response() -> Response:
    return Response(
        status_code=204,
        headers={
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Methods": "GET",
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": MAX_AGE,
        },
    )


def add_any_origin(headers: RawHeaders) -> None:
    """What a discovery document carries: the same grant to every page, so no `Vary: Origin`."""
    _set(headers, *_ANY_ORIGIN)


def preflight_response(origin: str, allowed: bool) -> Response:
    if not allowed:
        return PlainTextResponse("Origin not allowed", 403, headers={"Vary": "Origin"})
    return Response(
        status_code=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": MAX_AGE,
            "Vary": "Origin",
        },
    )


def add_response_headers(headers: RawHeaders, origin: str, allowed: bool) -> None:
    """What an answer to a page on `origin` carries: the CORS grant if allowed, `Vary: Origin` always."""
    if allowed:
        _set(headers, b"access-control-allow-origin", origin.encode("latin-1"))
        _set(headers, b"access-control-expose-headers", _EXPOSE_HEADERS)
    vary = [value for name, value in headers if name == b"vary"]
    _set(headers, b"vary", vary[0] + b", Origin" if vary else b"Origin")


def _set(headers: RawHeaders, name: bytes, value: bytes) -> None:
    """Replace the first `name` in place and drop any others, or append it."""
    found = [index for index, (key, _) in enumerate(headers) if key == name]
    if not found:
        headers.append((name, value))
        return
    headers[found[0]] = (name, value)
    for index in reversed(found[1:]):
        del headers[index]


class OriginsPerApp:
    """One AllowedOrigins per running Services (the lifespan builds them once; tests build many)."""

    def __init__(self) -> None:
        self._origins: AllowedOrigins | None = None

    def of(self, scope: Scope) -> AllowedOrigins:
        services = services_in(scope)
        if self._origins is None or self._origins.resources is not services.resources:
            self._origins = AllowedOrigins(services.resources, services.clock)
        return self._origins
