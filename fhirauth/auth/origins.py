"""The origins whose pages may call this server (SPEC §5): those of every registered redirect URI
(`Client.auth.<flow>.redirect_uri`) and every `Client.allowed_origins` entry of an active client.

fhirauth/http/cors.py turns the answer into headers.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from fhirauth.auth.clients import is_active
from fhirauth.auth.flows import every_redirect_uri
from fhirauth.clock import Clock
from fhirauth.resources.service import ResourceService
from fhirauth.storage.base import Query, StorageError

log = logging.getLogger("fhirauth.cors")

Document = dict[str, Any]

CACHE_SECONDS = 2.0
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


def client_origins(client: Document) -> set[str]:
    if not is_active(client):
        return set()
    urls = every_redirect_uri(client)
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
