"""Data migrations: `fhirauth migrate`, also run by `fhirauth serve` before any worker starts.

Each migration converts what an earlier version stored to the current layout. It writes by
compare-and-set and is idempotent, so it may run beside live workers, and a second run changes
nothing. One that leaves nothing unreadable is recorded as complete (record kind `migration`, keyed
by its name): `serve` runs only those never completed, at one read each, while the command runs them
all again, for what an old-version worker still running wrote after the first run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from fhirauth.clock import Clock, isoformat
from fhirauth.storage.base import Query, Storage
from fhirauth.twofactor.guard import STATE, state_document

MIGRATION_KIND = "migration"
GUARD_STATE = "2fa-guard-state"
OLD_LOCK = "2fa-lock"
OLD_FAILURES = "2fa-failures"
_PAGE = 500
# Users converted concurrently: one after another, a remote store's round trips would add up.
_AT_ONCE = 50


@dataclass(frozen=True)
class Outcome:
    """What one migration did to its `items`: converted, found current (or with nothing to convert),
    or left alone as unreadable (named)."""

    name: str
    items: str
    converted: int
    current: int
    unreadable: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return not self.unreadable


@dataclass(frozen=True)
class Migration:
    name: str
    run: Callable[[Storage], Awaitable[Outcome]]


async def migrate_all(storage: Storage, clock: Clock) -> list[Outcome]:
    """Run every migration (`fhirauth migrate`)."""
    return [await _apply(migration, storage, clock) for migration in MIGRATIONS]


async def migrate_pending(storage: Storage, clock: Clock) -> list[Outcome]:
    """Run the migrations never completed on this store (`fhirauth serve`)."""
    return [
        await _apply(migration, storage, clock)
        for migration in MIGRATIONS
        if await storage.record_get(MIGRATION_KIND, migration.name) is None
    ]


async def _apply(migration: Migration, storage: Storage, clock: Clock) -> Outcome:
    outcome = await migration.run(storage)
    if outcome.complete:
        await storage.record_set(MIGRATION_KIND, migration.name, {"completedAt": isoformat(clock())})
    return outcome


async def _user_ids(storage: Storage) -> AsyncIterator[list[str]]:
    """Every User's id, a page at a time."""
    offset = 0
    while True:
        page = await storage.search("User", Query(offset=offset, limit=_PAGE, count_total=False))
        yield [user["id"] for user in page.items]
        if len(page.items) < _PAGE:
            return
        offset += _PAGE


async def _guard_state(storage: Storage) -> Outcome:
    """The 2FA guard's records from before its one state record per user (fhirauth/twofactor/guard.py):
    a lock `2fa-lock/<user>` `{"generation", "lockedUntil", "failures"}`, a failure counter per lock
    generation `2fa-failures/<user>/<generation>` `{"count"}`, and the last step `totp-step/<user>`
    `{"step"}`. A lock in force, the failures of the round under way and those towards NIST's cap
    carry over into the state.

    A state already current wins: old records beside it (a counter a success made irrelevant, or what
    an old-version worker wrote) are deleted. Counters of earlier generations, which no lock names,
    are left to their own one-year expiry, as the old layout left them.
    """
    converted = current = 0
    unreadable: list[str] = []
    async for page in _user_ids(storage):
        for start in range(0, len(page), _AT_ONCE):
            users = page[start : start + _AT_ONCE]
            changes = await asyncio.gather(*(_convert_guard_state(storage, user_id) for user_id in users))
            for user_id, changed in zip(users, changes, strict=True):
                if changed is None:
                    unreadable.append(user_id)
                elif changed:
                    converted += 1
                else:
                    current += 1
    return Outcome(GUARD_STATE, "users", converted, current, tuple(unreadable))


async def _convert_guard_state(storage: Storage, user_id: str) -> bool | None:
    """Convert one user's records: whether anything changed, None when they are unreadable."""
    try:
        return await _convert_guard_state_records(storage, user_id)
    except (KeyError, TypeError, ValueError):
        return None


async def _convert_guard_state_records(storage: Storage, user_id: str) -> bool:
    while True:
        step = await storage.record_get(STATE, user_id)
        lock = await storage.record_get(OLD_LOCK, user_id)
        counter_key = f"{user_id}/{int(lock.document['generation']) if lock is not None else 0}"
        counter = await storage.record_get(OLD_FAILURES, counter_key)
        old = [(OLD_LOCK, user_id)] if lock is not None else []
        old += [(OLD_FAILURES, counter_key)] if counter is not None else []
        if step is not None and "failures" in step.document:
            for kind, key in old:
                await storage.record_delete(kind, key)
            return bool(old)
        if step is None and not old:
            return False
        until = lock.document.get("lockedUntil") if lock is not None else None
        document = state_document(
            step=int(step.document["step"]) if step is not None else -1,
            failures=int(counter.document["count"]) if counter is not None else 0,
            earlier_failures=int(lock.document.get("failures", 0)) if lock is not None else 0,
            locked_until=datetime.fromisoformat(until) if until else None,
        )
        expected = step.rev if step is not None else None
        # A worker that changed the record meanwhile: read it again and decide again.
        if await storage.record_put(STATE, user_id, document, expected_rev=expected) is not None:
            for kind, key in old:
                await storage.record_delete(kind, key)
            return True


MIGRATIONS: tuple[Migration, ...] = (Migration(GUARD_STATE, _guard_state),)
