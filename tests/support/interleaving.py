"""A real SQLite backend whose record calls yield first, for concurrency tests of record-based rules."""

from __future__ import annotations

from datetime import datetime

import anyio.lowlevel

from fhirauth.storage.base import Document, Record
from fhirauth.storage.sqlite import SQLiteStorage


class InterleavingSQLite(SQLiteStorage):
    """The real SQLite backend, with a scheduling point before every record call.

    SQLite answers reads without awaiting (writes wait once, for their batch's commit), so coroutines
    gathered against it would mostly run one after the other. Yielding first makes every concurrent
    attempt interleave at each storage call, as they do against a networked backend: all read, then
    all write, the worst case for a read-then-write bug.
    """

    async def record_get(self, kind: str, key: str) -> Record | None:
        await anyio.lowlevel.checkpoint()
        return await super().record_get(kind, key)

    async def record_put(
        self,
        kind: str,
        key: str,
        document: Document,
        *,
        expected_rev: int | None,
        expires_at: datetime | None = None,
    ) -> int | None:
        await anyio.lowlevel.checkpoint()
        return await super().record_put(kind, key, document, expected_rev=expected_rev, expires_at=expires_at)

    async def record_set(
        self, kind: str, key: str, document: Document, *, expires_at: datetime | None = None
    ) -> None:
        await anyio.lowlevel.checkpoint()
        await super().record_set(kind, key, document, expires_at=expires_at)

    async def record_incr(self, kind: str, key: str, *, expires_at: datetime, amount: int = 1) -> int:
        await anyio.lowlevel.checkpoint()
        return await super().record_incr(kind, key, expires_at=expires_at, amount=amount)

    async def record_take(self, kind: str, key: str) -> Record | None:
        await anyio.lowlevel.checkpoint()
        return await super().record_take(kind, key)

    async def record_delete(self, kind: str, key: str) -> None:
        await anyio.lowlevel.checkpoint()
        await super().record_delete(kind, key)
