"""The storage contract: everything above it works through these methods only.

Resources are versioned JSON documents keyed by (resourceType, id). Records are small unversioned
documents keyed by (kind, key) with an optional expiry: counters, single-use codes, pending logins.
Both use compare-and-set on a version number, the basis of If-Match, the TOTP replay guard and the
attempt counters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Document = dict[str, Any]


class StorageError(Exception):
    pass


class StorageUnavailable(StorageError):
    """The backend cannot be reached; the HTTP layer answers 503."""


class AlreadyExists(StorageError):
    def __init__(self, resource_type: str, id: str) -> None:
        super().__init__(f"{resource_type}/{id} already exists")
        self.resource_type = resource_type
        self.id = id


class VersionConflict(StorageError):
    def __init__(self, resource_type: str, id: str) -> None:
        super().__init__(f"{resource_type}/{id} was changed by someone else")
        self.resource_type = resource_type
        self.id = id


@dataclass(frozen=True)
class Stored:
    """A resource as stored: the document and whether it is a deletion tombstone."""

    document: Document
    deleted: bool = False

    @property
    def version(self) -> int:
        return int(self.document["meta"]["versionId"])


@dataclass(frozen=True)
class Create:
    """Insert `document` (with meta.versionId "1", or the next version over a tombstone)."""

    document: Document
    over_tombstone_version: int | None = None


@dataclass(frozen=True)
class Replace:
    """Replace the current version `expected_version` with `document` (compare-and-set)."""

    document: Document
    expected_version: int


@dataclass(frozen=True)
class Delete:
    """Turn the current version `expected_version` into the tombstone `document`."""

    document: Document
    expected_version: int


Write = Create | Replace | Delete


@dataclass(frozen=True)
class Filter:
    """Equality on a dotted path; the document matches when the value equals any of `values`."""

    path: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Query:
    filters: tuple[Filter, ...] = ()
    sort: tuple[tuple[str, bool], ...] = ()  # (dotted path, descending)
    offset: int = 0
    limit: int = 100
    count_total: bool = True


@dataclass(frozen=True)
class Page:
    items: list[Document]
    total: int | None


@dataclass(frozen=True)
class Found:
    """What `find_one` found: the document, and the resource its followed reference points to."""

    document: Document
    referenced: Stored | None = None


@dataclass(frozen=True)
class Record:
    document: Document
    rev: int
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Index:
    """A secondary index the domain asks for at start-up: lookups on it must not grow with the data."""

    resource_type: str
    path: str
    unique: bool = False
    extra: tuple[str, ...] = field(default=())


class Storage:
    """The contract. Every method raises StorageUnavailable when the backend cannot be reached.

    Backends are built with the application's clock and judge record expiry by it, so tests that
    move the clock see records expire without sleeping.
    """

    async def start(self, indexes: Sequence[Index]) -> None:
        """Connect and create the tables/collections and indexes (idempotent)."""
        raise NotImplementedError  # pragma: no cover

    async def close(self) -> None:
        raise NotImplementedError  # pragma: no cover

    async def ping(self) -> None:
        """Return when the backend answers; raise StorageUnavailable otherwise."""
        raise NotImplementedError  # pragma: no cover

    async def get(self, resource_type: str, id: str) -> Stored | None:
        """The current version (or tombstone), None if it never existed."""
        raise NotImplementedError  # pragma: no cover

    async def get_many(self, resource_type: str, ids: Sequence[str]) -> dict[str, Stored]:
        """`get` of each id, by id, leaving out the ids that never existed."""
        found: dict[str, Stored] = {}
        for id in ids:
            stored = await self.get(resource_type, id)
            if stored is not None:
                found[id] = stored
        return found

    async def get_version(self, resource_type: str, id: str, version: int) -> Stored | None:
        raise NotImplementedError  # pragma: no cover

    async def history(self, resource_type: str, id: str) -> list[Stored]:
        """Every version, newest first, tombstones included."""
        raise NotImplementedError  # pragma: no cover

    async def write(self, writes: Sequence[Write]) -> None:
        """Apply all writes atomically, in order, or none of them.

        Raises AlreadyExists when a Create finds a live resource (or a tombstone whose version is not
        `over_tombstone_version`), VersionConflict when a Replace/Delete finds another version.
        """
        raise NotImplementedError  # pragma: no cover

    async def search(self, resource_type: str, query: Query) -> Page:
        """Live resources of a type matching every filter, sorted, then offset/limit."""
        raise NotImplementedError  # pragma: no cover

    async def find_one(
        self, resource_type: str, path: str, value: str, *, follow: str | None = None
    ) -> Found | None:
        """A live resource whose `path` holds `value`, for values no two resources share (a token
        hash): of several, any one. With `follow`, also the resource that the reference
        `{resourceType, id}` at that path points to (None when there is none), read in the same
        statement where the backend can. This default is a search and a read."""
        query = Query(filters=(Filter(path, (value,)),), limit=1, count_total=False)
        page = await self.search(resource_type, query)
        if not page.items:
            return None
        document = page.items[0]
        if follow is None:
            return Found(document)
        reference: Any = document
        for key in follow.split("."):
            reference = reference.get(key) if isinstance(reference, dict) else None
        if not isinstance(reference, dict):
            return Found(document)
        target_type, target_id = reference.get("resourceType"), reference.get("id")
        if not isinstance(target_type, str) or not isinstance(target_id, str):
            return Found(document)
        return Found(document, await self.get(target_type, target_id))

    async def record_get(self, kind: str, key: str) -> Record | None:
        """The record, or None when absent or expired."""
        raise NotImplementedError  # pragma: no cover

    async def record_put(
        self,
        kind: str,
        key: str,
        document: Document,
        *,
        expected_rev: int | None,
        expires_at: datetime | None = None,
    ) -> int | None:
        """Compare-and-set a record; returns its new rev, or None when the expectation failed.

        `expected_rev=None` creates: it succeeds only if the record is absent or expired (rev 1).
        Otherwise it succeeds only if the stored rev equals `expected_rev` (and is not expired).
        """
        raise NotImplementedError  # pragma: no cover

    async def record_set(
        self, kind: str, key: str, document: Document, *, expires_at: datetime | None = None
    ) -> None:
        """Write a record unconditionally."""
        raise NotImplementedError  # pragma: no cover

    async def record_incr(self, kind: str, key: str, *, expires_at: datetime, amount: int = 1) -> int:
        """Atomically add `amount` (≥ 1) to a counter record and return the new count.

        A missing or expired counter starts again at `amount` with the new `expires_at`; an existing one
        keeps its expiry.
        """
        raise NotImplementedError  # pragma: no cover

    async def record_take(self, kind: str, key: str) -> Record | None:
        """Atomically delete and return the record: exactly one caller gets a single-use record."""
        raise NotImplementedError  # pragma: no cover

    async def record_delete(self, kind: str, key: str) -> None:
        raise NotImplementedError  # pragma: no cover

    async def purge_expired(self, now: datetime) -> int:
        """Delete expired records; return how many."""
        raise NotImplementedError  # pragma: no cover

    async def purge_orphans(self, now: datetime) -> int:
        """Delete history entries whose write never made them current (a backend that writes a resource
        and its history apart, and whose writer stopped between the two); return how many. Readers never
        see them. A backend that writes both in one transaction has none."""
        return 0

    async def all_resources(self, resource_type: str | None = None) -> list[Document]:
        """Every live resource (for export)."""
        raise NotImplementedError  # pragma: no cover
