"""CORS for single-page apps on other origins (SPEC §5).

Allowed origins are those of every registered redirect URI (`Client.auth.<flow>.redirect_uri`) and
every `Client.allowed_origins` entry of an active client. No `Access-Control-Allow-Credentials`:
tokens travel in the Authorization header, never in cookies, so a cross-origin page gets nothing
from the browser session (`asid`) and cannot ride on it.

The edge layer (edge.py) applies these to every answer, 500s included; a request without `Origin`
gets none of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from starlette.responses import PlainTextResponse, Response
from starlette.types import Scope

from fhirauth.clock import Clock
from fhirauth.http.rest import services_in
from fhirauth.resources.service import ResourceService
from fhirauth.storage.base import Query, StorageError

log = logging.getLogger("fhirauth.cors")

Document = dict[str, Any]
RawHeaders = list[tuple[bytes, bytes]]

CACHE_SECONDS = 2.0
ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE"
ALLOW_HEADERS = "Authorization, Content-Type, Cache-Control"
EXPOSE_HEADERS = "ETag, Location, Last-Modified, Content-Location, WWW-Authenticate"
MAX_AGE = "600"
_EXPOSE_HEADERS = EXPOSE_HEADERS.encode()
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PAGE = 500


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` as a browser writes it in `Origin` (default port left out), or None."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def client_origins(client: Mapping[str, Any]) -> set[str]:
    if client.get("active") is False:
        return set()
    urls: list[str] = []
    auth = client.get("auth")
    if isinstance(auth, dict):
        for flow in auth.values():
            redirect = flow.get("redirect_uri") if isinstance(flow, dict) else None
            if isinstance(redirect, str):
                urls.append(redirect)
            elif isinstance(redirect, list):
                urls += [item for item in redirect if isinstance(item, str)]
    allowed = client.get("allowed_origins")
    if isinstance(allowed, list):
        urls += [item for item in allowed if isinstance(item, str)]
    return {origin for origin in map(origin_of, urls) if origin is not None}


class AllowedOrigins:
    """The origins of all clients, read at most every two seconds and at once after a Client change."""

    def __init__(self, resources: ResourceService, clock: Clock) -> None:
        self.resources = resources
        self._clock = clock
        self._origins: frozenset[str] | None = None
        # What was read last, fresh or not: the answer while storage is down.
        self._last: frozenset[str] = frozenset()
        self._loaded_at: datetime | None = None
        self._generation = 0
        self._lock = asyncio.Lock()
        resources.on_change("Client", self._changed)

    async def _changed(self, before: Document | None, after: Document | None) -> None:
        self._generation += 1
        self._origins = None

    def _fresh(self) -> frozenset[str] | None:
        if self._origins is None or self._loaded_at is None:
            return None
        age = (self._clock() - self._loaded_at).total_seconds()
        return self._origins if 0 <= age < CACHE_SECONDS else None

    async def allows(self, origin: str) -> bool:
        origins = self._fresh()
        if origins is None:
            async with self._lock:
                origins = self._fresh()
                if origins is None:
                    origins = await self._refresh()
        return origin in origins

    async def _refresh(self) -> frozenset[str]:
        generation, started = self._generation, self._clock()
        try:
            origins = await self._load()
        except StorageError as error:
            # The app answers 503 on its own; that answer still reaches the page if it was allowed.
            log.warning("client origins not readable, using the last known ones: %s", error)
            return self._last
        self._last = origins
        if generation == self._generation:
            self._origins, self._loaded_at = origins, started
        return origins

    async def _load(self) -> frozenset[str]:
        origins: set[str] = set()
        offset = 0
        while True:
            page = await self.resources.storage.search(
                "Client", Query(offset=offset, limit=_PAGE, count_total=False)
            )
            for client in page.items:
                origins |= client_origins(client)
            if len(page.items) < _PAGE:
                return frozenset(origins)
            offset += _PAGE


def origin_header(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"origin":
            return str(value.decode("latin-1"))
    return None


def is_preflight(scope: Scope) -> bool:
    return scope["method"] == "OPTIONS" and any(
        name == b"access-control-request-method" for name, _ in scope["headers"]
    )


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
