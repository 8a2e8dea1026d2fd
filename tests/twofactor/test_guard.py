from __future__ import annotations

import asyncio
import inspect
import threading
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.interleaving import InterleavingSQLite

from fhirauth.clock import ManualClock
from fhirauth.storage.sqlite import SQLiteStorage
from fhirauth.twofactor.guard import AttemptGuard, LockoutPolicy, Reason, Verdict
from fhirauth.twofactor.recovery import RecoveryCodes
from fhirauth.twofactor.totp import code_at, step_at

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
USER = "user-1"
POLICY = LockoutPolicy(max_attempts=5, lockout_seconds=300)
START = datetime.fromisoformat("2026-01-01T00:00:00+00:00")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def storage(clock: ManualClock) -> AsyncIterator[SQLiteStorage]:
    store = InterleavingSQLite(":memory:", clock)
    await store.start([])
    yield store
    await store.close()


@pytest.fixture
def guard(storage: SQLiteStorage, clock: ManualClock) -> AttemptGuard:
    return AttemptGuard(storage, clock)


def current_code(clock: ManualClock, offset: int = 0) -> str:
    return code_at(SECRET, step_at(clock().timestamp()) + offset)


def wrong_code(clock: ManualClock) -> str:
    window = {current_code(clock, offset) for offset in range(-3, 4)}
    return next(code for code in (f"{n:06d}" for n in range(1_000_000)) if code not in window)


async def verify(guard: AttemptGuard, code: str, policy: LockoutPolicy = POLICY, user: str = USER) -> Verdict:
    return await guard.verify_totp(user, SECRET, code, past=1, future=0, policy=policy)


async def test_correct_code_is_accepted_with_its_step(guard: AttemptGuard, clock: ManualClock) -> None:
    verdict = await verify(guard, current_code(clock))
    assert verdict == Verdict(Reason.ACCEPTED, step=step_at(START.timestamp()))
    assert verdict.accepted


async def test_window_is_applied(guard: AttemptGuard, clock: ManualClock) -> None:
    assert (await verify(guard, current_code(clock, +1))).reason is Reason.INVALID
    assert (await verify(guard, current_code(clock, -2))).reason is Reason.INVALID
    assert (await verify(guard, current_code(clock, -1))).reason is Reason.ACCEPTED


async def test_same_code_twice_is_replayed_and_next_step_accepted(
    guard: AttemptGuard, clock: ManualClock
) -> None:
    code = current_code(clock)
    assert (await verify(guard, code)).reason is Reason.ACCEPTED
    assert await verify(guard, code) == Verdict(Reason.REPLAYED)
    # An earlier step, still inside the window, is used up too.
    assert await verify(guard, current_code(clock, -1)) == Verdict(Reason.REPLAYED)
    clock.advance(30)
    assert await verify(guard, code) == Verdict(Reason.REPLAYED)
    assert await verify(guard, current_code(clock)) == Verdict(
        Reason.ACCEPTED, step=step_at(START.timestamp()) + 1
    )


async def test_lockout_after_max_consecutive_failures(guard: AttemptGuard, clock: ManualClock) -> None:
    wrong = wrong_code(clock)
    locked_until = START + timedelta(seconds=300)
    verdicts = [await verify(guard, wrong) for _ in range(5)]
    assert verdicts == [Verdict(Reason.INVALID)] * 4 + [Verdict(Reason.INVALID, locked_until=locked_until)]
    # Locked: a correct code is refused without being looked at.
    assert await verify(guard, current_code(clock)) == Verdict(Reason.LOCKED, locked_until=locked_until)
    assert await guard.locked_until(USER) == locked_until
    clock.advance(299)
    assert await verify(guard, current_code(clock)) == Verdict(Reason.LOCKED, locked_until=locked_until)
    clock.advance(1)
    assert await guard.locked_until(USER) is None
    assert (await verify(guard, current_code(clock))).reason is Reason.ACCEPTED


async def test_after_the_lock_the_counter_starts_afresh(guard: AttemptGuard, clock: ManualClock) -> None:
    wrong = wrong_code(clock)
    for _ in range(5):
        await verify(guard, wrong)
    clock.advance(300)
    verdicts = [await verify(guard, wrong) for _ in range(5)]
    assert [v.reason for v in verdicts] == [Reason.INVALID] * 5
    assert verdicts[-1].locked_until == START + timedelta(seconds=600)


async def test_success_resets_the_counter(guard: AttemptGuard, clock: ManualClock) -> None:
    wrong = wrong_code(clock)
    for _ in range(4):
        assert (await verify(guard, wrong)).reason is Reason.INVALID
    assert (await verify(guard, current_code(clock))).reason is Reason.ACCEPTED
    for _ in range(4):
        assert await verify(guard, wrong) == Verdict(Reason.INVALID)
    assert (await verify(guard, wrong)).locked_until == START + timedelta(seconds=300)


async def test_replays_count_as_failures(guard: AttemptGuard, clock: ManualClock) -> None:
    code = current_code(clock)
    await verify(guard, code)
    verdicts = [await verify(guard, code) for _ in range(6)]
    assert [v.reason for v in verdicts] == [Reason.REPLAYED] * 5 + [Reason.LOCKED]


async def test_failures_are_counted_per_user(guard: AttemptGuard, clock: ManualClock) -> None:
    for _ in range(5):
        await verify(guard, wrong_code(clock))
    assert (await verify(guard, current_code(clock), user="user-2")).reason is Reason.ACCEPTED


async def test_admin_reset_clears_the_lock_but_not_the_last_step(
    guard: AttemptGuard, clock: ManualClock
) -> None:
    code = current_code(clock)
    assert (await verify(guard, code)).reason is Reason.ACCEPTED
    for _ in range(5):
        await verify(guard, wrong_code(clock))
    assert (await verify(guard, code)).reason is Reason.LOCKED
    await guard.reset(USER)
    assert await guard.locked_until(USER) is None
    assert (await verify(guard, code)).reason is Reason.REPLAYED
    for _ in range(3):
        assert (await verify(guard, wrong_code(clock))).reason is Reason.INVALID
    assert (await verify(guard, current_code(clock, -1))).reason is Reason.REPLAYED


async def test_concurrent_verifications_of_one_code_accept_exactly_one(
    guard: AttemptGuard, clock: ManualClock
) -> None:
    code = current_code(clock)
    roomy = LockoutPolicy(max_attempts=100, lockout_seconds=300)
    verdicts = await asyncio.gather(*(verify(guard, code, roomy) for _ in range(20)))
    assert Counter(v.reason for v in verdicts) == {Reason.ACCEPTED: 1, Reason.REPLAYED: 19}


async def test_concurrent_verifications_beyond_the_limit(guard: AttemptGuard, clock: ManualClock) -> None:
    code = current_code(clock)
    verdicts = await asyncio.gather(*(verify(guard, code) for _ in range(20)))
    # As one after another: the success clears the count, then the policy's five replays, the last
    # of them bringing the lock about, then the lock.
    assert Counter(v.reason for v in verdicts) == {Reason.ACCEPTED: 1, Reason.REPLAYED: 5, Reason.LOCKED: 14}
    locked_until = START + timedelta(seconds=300)
    assert [v.locked_until for v in verdicts if v.reason is Reason.REPLAYED].count(locked_until) == 1
    assert {v.locked_until for v in verdicts if v.reason is Reason.LOCKED} == {locked_until}


async def test_parallel_wrong_guesses_evaluate_at_most_max_attempts(
    guard: AttemptGuard, clock: ManualClock
) -> None:
    verdicts = await asyncio.gather(*(verify(guard, wrong_code(clock)) for _ in range(100)))
    assert Counter(v.reason for v in verdicts) == {Reason.INVALID: 5, Reason.LOCKED: 95}
    locked_until = START + timedelta(seconds=300)
    assert {v.locked_until for v in verdicts if v.reason is Reason.LOCKED} == {locked_until}
    # The lock holds for a correct code, then lifts with a fresh counter.
    assert (await verify(guard, current_code(clock))).reason is Reason.LOCKED
    clock.advance(300)
    assert (await verify(guard, current_code(clock))).reason is Reason.ACCEPTED


async def test_an_older_step_recorded_meanwhile_does_not_refuse_a_newer_one(
    guard: AttemptGuard, clock: ManualClock
) -> None:
    roomy = LockoutPolicy(max_attempts=100, lockout_seconds=300)
    older, newer = current_code(clock, -1), current_code(clock)
    verdicts = await asyncio.gather(verify(guard, older, roomy), verify(guard, newer, roomy))
    # Both read "no step yet"; the older wins the first write, the newer retries its CAS and wins.
    assert [v.reason for v in verdicts] == [Reason.ACCEPTED, Reason.ACCEPTED]
    assert await verify(guard, newer, roomy) == Verdict(Reason.REPLAYED)


class RecoveryCodeStore:
    """How a recovery-code owner plugs into the guard: spend with compare-and-set, lock out with the guard."""

    def __init__(self, storage: SQLiteStorage, codes: RecoveryCodes) -> None:
        self._storage = storage
        self._codes = codes

    async def save(self, user_id: str, codes: list[str]) -> None:
        digests = [self._codes.digest(code) for code in codes]
        await self._storage.record_set("recovery-codes", user_id, {"digests": digests})

    async def spend(self, user_id: str, code: str) -> Verdict:
        while True:
            record = await self._storage.record_get("recovery-codes", user_id)
            digests: list[Any] = record.document["digests"] if record else []
            index = self._codes.find(code, digests)
            if record is None or index is None:
                return Verdict(Reason.INVALID)
            remaining = digests[:index] + digests[index + 1 :]
            document = {"digests": remaining}
            if await self._storage.record_put("recovery-codes", user_id, document, expected_rev=record.rev):
                return Verdict(Reason.ACCEPTED)


async def test_recovery_codes_share_the_lockout(
    guard: AttemptGuard, storage: SQLiteStorage, clock: ManualClock
) -> None:
    store = RecoveryCodeStore(storage, RecoveryCodes(b"pepper-for-the-guard-tests-0123"))
    codes = RecoveryCodes(b"unused-pepper-0123456789abcdef").generate()
    await store.save(USER, codes)

    async def recover(code: str) -> Verdict:
        return await guard.attempt(USER, POLICY, lambda: store.spend(USER, code))

    assert (await recover(codes[0])).reason is Reason.ACCEPTED
    assert (await recover(codes[0])).reason is Reason.INVALID
    for _ in range(3):
        await verify(guard, wrong_code(clock))
    assert (await recover("zzzzz-zzzzz")).locked_until == START + timedelta(seconds=300)
    assert (await recover(codes[1])).reason is Reason.LOCKED
    clock.advance(300)
    assert (await recover(codes[1])).reason is Reason.ACCEPTED


def test_policy_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LockoutPolicy(max_attempts=0, lockout_seconds=300)
    with pytest.raises(ValueError):
        LockoutPolicy(max_attempts=5, lockout_seconds=0)


def test_workers_sharing_a_file_accept_one_code_once(tmp_path: Path, clock: ManualClock) -> None:
    """Four threads, each its own event loop and connection to one SQLite file, like four workers."""
    path = str(tmp_path / "guard.db")
    code = current_code(clock)
    wrong = wrong_code(clock)
    roomy = LockoutPolicy(max_attempts=1000, lockout_seconds=300)

    # Four connections creating a new file at once can meet "database is locked" (rarely, under load),
    # which `fhirauth serve` retries in the background; here the file exists before the workers start.
    async def create() -> None:
        store = SQLiteStorage(path, clock)
        await store.start([])
        await store.close()

    asyncio.run(create())
    # A worker that fails before the barrier must fail the test, not hang it.
    barrier = threading.Barrier(4, timeout=30)
    results: list[Verdict] = []
    lock = threading.Lock()

    async def worker() -> None:
        store = SQLiteStorage(path, clock)
        await store.start([])
        guard = AttemptGuard(store, clock)
        barrier.wait()
        verdicts = [await verify(guard, code, roomy) for _ in range(5)]
        verdicts += [await verify(guard, wrong, POLICY, user="user-2") for _ in range(25)]
        await store.close()
        with lock:
            results.extend(verdicts)

    threads = [threading.Thread(target=asyncio.run, args=(worker(),)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    totp = Counter(v.reason for v in results if v.step is not None or v.reason is Reason.REPLAYED)
    assert totp == {Reason.ACCEPTED: 1, Reason.REPLAYED: 19}
    guesses = Counter(v.reason for v in results if v.reason in (Reason.INVALID, Reason.LOCKED))
    assert guesses == {Reason.INVALID: 5, Reason.LOCKED: 95}


# The state record: its layout and its cost per attempt


class CountingSQLite(InterleavingSQLite):
    """Records every storage call an attempt makes: each method of the contract, with its kind."""

    calls: list[str]

    def __getattribute__(self, name: str) -> Any:
        attribute = super().__getattribute__(name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attribute):
            return attribute

        async def counted(*args: Any, **options: Any) -> Any:
            self.calls.append(" ".join([name, *(str(arg) for arg in args[:1])]))
            return await attribute(*args, **options)

        return counted


async def stored_state(storage: SQLiteStorage, user: str = USER) -> dict[str, Any] | None:
    record = await storage.record_get("totp-step", user)
    return record.document if record is not None else None


async def test_the_state_record_after_a_success_a_lock_and_a_reset(
    guard: AttemptGuard, storage: SQLiteStorage, clock: ManualClock
) -> None:
    step = step_at(START.timestamp())
    assert await stored_state(storage) is None
    await verify(guard, current_code(clock))
    assert await stored_state(storage) == {
        "step": step,
        "failures": 0,
        "earlierFailures": 0,
        "lockedUntil": None,
    }
    for _ in range(2):
        await verify(guard, wrong_code(clock))
    assert await stored_state(storage) == {
        "step": step,
        "failures": 2,
        "earlierFailures": 0,
        "lockedUntil": None,
    }
    for _ in range(3):
        await verify(guard, wrong_code(clock))
    locked = {"step": step, "failures": 0, "earlierFailures": 5, "lockedUntil": "2026-01-01T00:05:00.000Z"}
    assert await stored_state(storage) == locked
    # Refused while locked: nothing is written.
    await verify(guard, current_code(clock))
    assert await stored_state(storage) == locked
    await guard.reset(USER)
    assert await stored_state(storage) == {
        "step": step,
        "failures": 0,
        "earlierFailures": 0,
        "lockedUntil": None,
    }


async def test_an_accepted_code_costs_one_read_and_one_compare_and_set(clock: ManualClock) -> None:
    storage = CountingSQLite(":memory:", clock)
    storage.calls = []
    await storage.start([])
    guard = AttemptGuard(storage, clock)
    storage.calls = []
    assert (await verify(guard, current_code(clock, -1))).accepted
    assert storage.calls == ["record_get totp-step", "record_put totp-step"]
    storage.calls = []
    assert (await verify(guard, current_code(clock))).accepted
    assert storage.calls == ["record_get totp-step", "record_put totp-step"]
    storage.calls = []
    assert (await verify(guard, wrong_code(clock))).reason is Reason.INVALID
    assert storage.calls == ["record_get totp-step", "record_put totp-step"]
    storage.calls = []
    assert (await verify(guard, wrong_code(clock), user="user-2")).reason is Reason.INVALID
    assert storage.calls == ["record_get totp-step", "record_put totp-step"]
    await storage.close()


async def test_a_last_step_an_old_version_wrote_reads_as_that_step_with_no_failures(
    guard: AttemptGuard, storage: SQLiteStorage, clock: ManualClock
) -> None:
    # An old-version worker still running beside new ones writes its `{"step"}` over the state;
    # `fhirauth migrate`, run again once it stops, converts what else it wrote.
    step = step_at(START.timestamp())
    await storage.record_set("totp-step", USER, {"step": step})
    assert await verify(guard, current_code(clock)) == Verdict(Reason.REPLAYED)
    assert await stored_state(storage) == {
        "step": step,
        "failures": 1,
        "earlierFailures": 0,
        "lockedUntil": None,
    }


async def test_a_recovery_code_in_flight_holds_the_last_attempt(
    guard: AttemptGuard, clock: ManualClock
) -> None:
    for _ in range(4):
        await verify(guard, wrong_code(clock))
    during: list[Verdict] = []

    async def slow_wrong_recovery_code() -> Verdict:
        # The fifth and last attempt is counted and being checked: another attempt now locks.
        during.append(await verify(guard, current_code(clock)))
        return Verdict(Reason.INVALID)

    locked_until = START + timedelta(seconds=300)
    assert await guard.attempt(USER, POLICY, slow_wrong_recovery_code) == Verdict(
        Reason.INVALID, locked_until=locked_until
    )
    assert during == [Verdict(Reason.LOCKED, locked_until=locked_until)]
    assert await guard.locked_until(USER) == locked_until


async def test_a_check_that_raises_stays_counted(
    guard: AttemptGuard, storage: SQLiteStorage, clock: ManualClock
) -> None:
    async def broken() -> Verdict:
        raise RuntimeError("storage went away")

    with pytest.raises(RuntimeError):
        await guard.attempt(USER, POLICY, broken)
    assert await stored_state(storage) == {
        "step": -1,
        "failures": 1,
        "earlierFailures": 0,
        "lockedUntil": None,
    }


class CommitLog(InterleavingSQLite):
    """Records every state the guard stores, in commit order."""

    committed: list[dict[str, Any]]

    async def record_put(self, kind: str, key: str, document: Any, **options: Any) -> int | None:
        rev = await super().record_put(kind, key, document, **options)
        if rev is not None:
            self.committed.append(document)
        return rev


async def test_a_burst_with_a_right_code_is_answered_as_its_commits_happened(clock: ManualClock) -> None:
    storage = CommitLog(":memory:", clock)
    storage.committed = []
    await storage.start([])
    guard = AttemptGuard(storage, clock)
    step = step_at(START.timestamp())
    codes = [wrong_code(clock)] * 20 + [current_code(clock)]
    verdicts = await asyncio.gather(*(verify(guard, code) for code in codes))
    # Replayed one at a time, the commits are a history a single caller could have made: each failure
    # one more, the fifth locking, a success storing its step and clearing them, nothing after the lock.
    model: dict[str, Any] = {"step": -1, "failures": 0, "earlierFailures": 0, "lockedUntil": None}
    history = []
    for document in storage.committed:
        if document["step"] != model["step"]:
            model = {"step": step, "failures": 0, "earlierFailures": 0, "lockedUntil": None}
            history.append("accepted")
        elif model["failures"] == 4:
            model = {**model, "failures": 0, "earlierFailures": 5, "lockedUntil": "2026-01-01T00:05:00.000Z"}
            history.append("locked")
        else:
            model = {**model, "failures": model["failures"] + 1}
            history.append("failed")
        assert document == model
    assert history[-1] == "locked"
    # Each answer is its commit: a right code committed before the lock is accepted, one that found
    # the lock is refused; every "wrong" answer is a committed failure, every other attempt refused.
    right = verdicts[-1]
    assert right.reason is (Reason.ACCEPTED if "accepted" in history else Reason.LOCKED)
    reasons = Counter(v.reason for v in verdicts)
    assert reasons[Reason.INVALID] == history.count("failed") + history.count("locked")
    assert reasons[Reason.LOCKED] == 21 - len(history)
    await storage.close()
