"""`fhirauth migrate` (fhirauth/migrations.py) on every backend: old-layout records, written directly
through the storage API as an earlier version wrote them, are converted once, and a second run
changes nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from support.mongo import drop_database, with_database

from fhirauth import cli
from fhirauth.app import INDEXES
from fhirauth.clock import ManualClock, isoformat
from fhirauth.migrations import MIGRATIONS, Outcome, migrate_all, migrate_pending
from fhirauth.storage.backends import open_storage
from fhirauth.storage.base import Create, Record, Storage
from fhirauth.twofactor.guard import AttemptGuard, LockoutPolicy, Reason, Verdict
from fhirauth.twofactor.totp import step_at
from tests.twofactor.test_guard import SECRET, START, current_code, wrong_code

POLICY = LockoutPolicy(max_attempts=5, lockout_seconds=300)
STEP = step_at(START.timestamp())
A_YEAR = START + timedelta(days=365)
GUARD = "2fa-guard-state"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture(params=["sqlite", "mongo"])
async def storage(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[Storage]:
    if request.param == "sqlite":
        url = "sqlite://:memory:"
    else:
        url = with_database(request.getfixturevalue("mongo_uri"), f"migrate{uuid.uuid4().hex[:12]}")
    store = open_storage(url, clock)
    await store.start(INDEXES)
    yield store
    await store.close()
    if request.param == "mongo":
        drop_database(url)


async def users(storage: Storage, *ids: str) -> None:
    await storage.write(
        [Create({"resourceType": "User", "id": id, "meta": {"versionId": "1"}}) for id in ids]
    )


async def old_lock(storage: Storage, user: str, generation: int, until: Any, failures: int) -> None:
    document = {"generation": generation, "lockedUntil": until, "failures": failures}
    await storage.record_set("2fa-lock", user, document)


async def old_failures(storage: Storage, user: str, generation: int, count: int) -> None:
    await storage.record_incr("2fa-failures", f"{user}/{generation}", expires_at=A_YEAR, amount=count)


async def state(storage: Storage, user: str) -> dict[str, Any] | None:
    record = await storage.record_get("totp-step", user)
    return record.document if record is not None else None


def new_state(
    step: int = -1, failures: int = 0, earlier: int = 0, until: str | None = None
) -> dict[str, Any]:
    return {"step": step, "failures": failures, "earlierFailures": earlier, "lockedUntil": until}


async def records(storage: Storage, user: str) -> dict[str, Record | None]:
    keys = [("totp-step", user), ("2fa-lock", user), *(("2fa-failures", f"{user}/{g}") for g in range(4))]
    return {f"{kind}/{key}": await storage.record_get(kind, key) for kind, key in keys}


async def verify(guard: AttemptGuard, clock: ManualClock, code: str, user: str) -> Verdict:
    return await guard.verify_totp(user, SECRET, code, past=1, future=0, policy=POLICY)


async def test_every_old_layout_record_is_converted_and_a_second_run_changes_nothing(
    storage: Storage, clock: ManualClock
) -> None:
    until = isoformat(START + timedelta(minutes=10))
    await users(storage, "locked", "capped", "counted", "stepped", "superseded", "current", "untouched")
    await old_lock(storage, "locked", 3, until, 15)
    await old_failures(storage, "locked", 3, 1)
    await storage.record_set("totp-step", "locked", {"step": STEP})
    await old_lock(storage, "capped", 20, None, 100)
    await old_failures(storage, "counted", 0, 4)
    await storage.record_set("totp-step", "stepped", {"step": STEP - 1})
    # A counter the guard's earlier lazy carrying-over left behind: the state already supersedes it.
    await storage.record_set("totp-step", "superseded", new_state(STEP, 2))
    await old_failures(storage, "superseded", 0, 3)
    await storage.record_set("totp-step", "current", new_state(STEP, 1))

    assert await migrate_all(storage, clock) == [
        Outcome(GUARD, "users", converted=5, current=2, unreadable=())
    ]

    assert await state(storage, "locked") == new_state(STEP, 1, 15, until)
    assert await state(storage, "capped") == new_state(earlier=100)
    assert await state(storage, "counted") == new_state(failures=4)
    assert await state(storage, "stepped") == new_state(STEP - 1)
    assert await state(storage, "superseded") == new_state(STEP, 2)
    assert await state(storage, "current") == new_state(STEP, 1)
    assert await state(storage, "untouched") is None
    converted = ("locked", "capped", "counted", "stepped", "superseded")
    for user in converted:
        left = {name for name, record in (await records(storage, user)).items() if record is not None}
        assert left == {f"totp-step/{user}"}
    before = {user: await records(storage, user) for user in (*converted, "current", "untouched")}

    assert await migrate_all(storage, clock) == [
        Outcome(GUARD, "users", converted=0, current=7, unreadable=())
    ]
    assert {user: await records(storage, user) for user in before} == before


async def test_a_converted_lock_holds_and_its_failures_count_on(storage: Storage, clock: ManualClock) -> None:
    until = START + timedelta(seconds=20)
    await users(storage, "ann")
    await old_lock(storage, "ann", 3, isoformat(until), 15)
    await old_failures(storage, "ann", 3, 1)
    await storage.record_set("totp-step", "ann", {"step": STEP})
    await migrate_all(storage, clock)
    guard = AttemptGuard(storage, clock)
    assert await verify(guard, clock, current_code(clock), "ann") == Verdict(
        Reason.LOCKED, locked_until=until
    )
    clock.advance(20)
    # The step accepted before the upgrade stays spent; the failure is the second of this round.
    assert await verify(guard, clock, current_code(clock), "ann") == Verdict(Reason.REPLAYED)
    assert await state(storage, "ann") == new_state(STEP, 2, 15, "2026-01-01T00:00:20.000Z")
    clock.advance(10)
    assert (await verify(guard, clock, current_code(clock), "ann")).accepted


async def test_a_converted_lock_at_the_cap_waits_for_the_reset(storage: Storage, clock: ManualClock) -> None:
    await users(storage, "ann")
    await old_lock(storage, "ann", 20, None, 100)
    await migrate_all(storage, clock)
    guard = AttemptGuard(storage, clock)
    clock.advance(30 * 86400)
    assert await verify(guard, clock, current_code(clock), "ann") == Verdict(Reason.LOCKED)
    await guard.reset("ann")
    assert (await verify(guard, clock, current_code(clock), "ann")).accepted


async def test_converted_failures_short_of_a_lock_still_count(storage: Storage, clock: ManualClock) -> None:
    await users(storage, "ann")
    await old_failures(storage, "ann", 0, 4)
    await migrate_all(storage, clock)
    guard = AttemptGuard(storage, clock)
    assert await verify(guard, clock, wrong_code(clock), "ann") == Verdict(
        Reason.INVALID, locked_until=START + timedelta(seconds=300)
    )


async def test_an_unreadable_old_record_is_named_left_alone_and_tried_again(
    storage: Storage, clock: ManualClock
) -> None:
    await users(storage, "ann", "bob")
    await old_lock(storage, "ann", 1, "not a time", 5)
    await old_failures(storage, "bob", 0, 2)
    assert await migrate_all(storage, clock) == [
        Outcome(GUARD, "users", converted=1, current=0, unreadable=("ann",))
    ]
    assert (await records(storage, "ann"))["2fa-lock/ann"] is not None
    # Not recorded as done: the next start tries again.
    assert await migrate_pending(storage, clock) == [
        Outcome(GUARD, "users", converted=0, current=1, unreadable=("ann",))
    ]


async def test_serve_runs_only_what_never_completed_and_the_command_runs_everything(
    storage: Storage, clock: ManualClock
) -> None:
    await users(storage, "ann")
    await old_failures(storage, "ann", 0, 4)
    assert await migrate_pending(storage, clock) == [
        Outcome(GUARD, "users", converted=1, current=0, unreadable=())
    ]
    assert await migrate_pending(storage, clock) == []
    # An old-version worker still running wrote its layout after that (its last step over the state,
    # and a lock): the command, run by hand, converts it.
    await storage.record_set("totp-step", "ann", {"step": STEP})
    await old_lock(storage, "ann", 1, None, 100)
    assert await migrate_all(storage, clock) == [
        Outcome(GUARD, "users", converted=1, current=0, unreadable=())
    ]
    assert await state(storage, "ann") == new_state(STEP, earlier=100)


def test_every_migration_has_a_distinct_name() -> None:
    assert len({migration.name for migration in MIGRATIONS}) == len(MIGRATIONS) >= 1


def test_the_command_prints_what_it_did_and_exits_1_when_it_left_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    for name, value in {"STORAGE": url, "SECRET_KEY": "migrate-test-master-secret"}.items():
        monkeypatch.setenv(f"FHIRAUTH_{name}", value)
    monkeypatch.chdir(tmp_path)

    def written(write: Callable[[Storage], Awaitable[None]]) -> None:
        async def run() -> None:
            store = open_storage(url, ManualClock(START))
            await store.start(INDEXES)
            await write(store)
            await store.close()

        asyncio.run(run())

    async def old_layout(store: Storage) -> None:
        await users(store, "ann", "bob")
        await old_failures(store, "ann", 0, 2)

    written(old_layout)
    assert cli.main(["migrate"]) == 0
    assert capsys.readouterr() == (f"{GUARD}: 1 of 2 users converted\n", "")
    assert cli.main(["migrate"]) == 0
    assert capsys.readouterr() == (f"{GUARD}: 0 of 2 users converted\n", "")
    written(lambda store: old_lock(store, "bob", 1, 1767225600, 5))
    assert cli.main(["migrate"]) == 1
    out, err = capsys.readouterr()
    assert out == f"{GUARD}: 0 of 2 users converted, 1 unreadable (bob)\n"
    assert err == "fhirauth: unreadable records were left as they were; fix or remove them and run again\n"
