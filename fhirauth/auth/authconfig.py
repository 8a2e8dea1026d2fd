"""Which AuthConfig applies: the one home of that choice, read by the pages, sessions and 2FA."""

from __future__ import annotations

import time
from typing import Any

from fhirauth.resources.service import ResourceService

Document = dict[str, Any]

DEFAULT_ASID_COOKIE_MAX_AGE = 432000
_CACHE_SECONDS = 2.0


class AuthConfigs:
    """`current()`: the AuthConfig named by the setting, else the only one, else id `app`, else {}.

    Cached for two seconds (other workers' writes show up within that time); a write through this
    process's ResourceService clears the cache at once.
    """

    def __init__(self, resources: ResourceService, configured_id: str | None) -> None:
        self._resources = resources
        self._configured_id = configured_id
        self._cached: Document | None = None
        self._cached_at = 0.0
        resources.on_change("AuthConfig", self._forget)

    async def current(self) -> Document:
        # Monotonic, not the injected clock: this bounds staleness in real time, it is not a rule.
        if self._cached is not None and time.monotonic() - self._cached_at < _CACHE_SECONDS:
            return self._cached
        config = await self._lookup()
        self._cached, self._cached_at = config, time.monotonic()
        return config

    async def asid_cookie_max_age(self) -> int:
        value = (await self.current()).get("asidCookieMaxAge")
        return value if isinstance(value, int) and value > 0 else DEFAULT_ASID_COOKIE_MAX_AGE

    async def theme(self) -> Document:
        theme = (await self.current()).get("theme")
        return theme if isinstance(theme, dict) else {}

    async def _lookup(self) -> Document:
        if self._configured_id:
            named = await self._resources.find("AuthConfig", self._configured_id)
            if named is not None:
                return named.document
        _, page = await self._resources.search("AuthConfig", [("_count", "2")])
        if len(page.items) == 1:
            return page.items[0]
        app = await self._resources.find("AuthConfig", "app")
        return app.document if app is not None else {}

    async def _forget(self, before: Document | None, after: Document | None) -> None:
        self._cached = None
