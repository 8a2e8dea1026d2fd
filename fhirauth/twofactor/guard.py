"""Attempt limiting and the TOTP replay guard: the one home of lockout and of "each step only once".

Everything lives in storage records and changes atomically, so several workers (or hosts) sharing a
backend enforce the same limits:

* `2fa-lock/<user>` `{"generation", "lockedUntil", "failures"}`: the lock, the generation that names
  the current failure counter, and the failures of the generations before it. Locking moves to the
  next generation, so the counter starts afresh when the lock ends, while reservations still in
  flight on the old counter can only be refused. The failures add up across locks until a success:
  at NIST's cap (`MAX_CONSECUTIVE_FAILURES`) the lock has no end until an administrator's reset.
* `2fa-failures/<user>/<generation>`: the counter. Every attempt reserves a slot in it with one
  atomic increment *before* its code is looked at, so parallel guesses cannot evaluate more than
  `max_attempts` codes. A success deletes it: failures count only while consecutive.
* `totp-step/<user>` `{"step"}`: the last accepted step, advanced by compare-and-set only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from fhirauth.clock import Clock, isoformat
from fhirauth.storage.base import Storage
from fhirauth.twofactor.totp import match_step, step_at

LOCK = "2fa-lock"
FAILURES = "2fa-failures"
LAST_STEP = "totp-step"

# Failures are forgotten by a success or an administrator's reset, not by time: forgetting a run
# that stopped short of the limit would let a guesser with the password try a few codes every day
# for ever. A year is only the counter records' expiry.
FAILURE_MEMORY = timedelta(days=365)
# NIST SP 800-63B §5.2.2: no more than 100 consecutive failed attempts on one account, whatever
# the AuthConfig's maxAttempts and however many lockouts they are spread over.
MAX_CONSECUTIVE_FAILURES = 100


class Reason(StrEnum):
    ACCEPTED = "accepted"
    INVALID = "invalid"
    REPLAYED = "replayed"
    LOCKED = "locked"


@dataclass(frozen=True)
class Verdict:
    """The outcome of one attempt. INVALID and REPLAYED look alike to the user; the reason is for audit.

    `locked_until` is set on a LOCKED refusal, and on the failure that brought the lock about; a
    LOCKED refusal without it is locked until an administrator's reset (or was lifted meanwhile).
    """

    reason: Reason
    step: int | None = None
    locked_until: datetime | None = None

    @property
    def accepted(self) -> bool:
        return self.reason is Reason.ACCEPTED


@dataclass(frozen=True)
class LockoutPolicy:
    max_attempts: int
    lockout_seconds: int

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.lockout_seconds < 1:
            raise ValueError("max_attempts and lockout_seconds must be positive")


Check = Callable[[], Awaitable[Verdict]]


@dataclass(frozen=True)
class _LockState:
    generation: int
    locked_until: datetime | None
    rev: int | None
    failures: int = 0

    def allowed(self, policy: LockoutPolicy) -> int:
        """Attempts this generation may evaluate: 0 once the failures reach the cap."""
        return max(0, min(policy.max_attempts, MAX_CONSECUTIVE_FAILURES - self.failures))


class AttemptGuard:
    def __init__(self, storage: Storage, clock: Clock) -> None:
        self._storage = storage
        self._clock = clock

    async def verify_totp(
        self, user_id: str, secret_b32: str, code: str, *, past: int, future: int, policy: LockoutPolicy
    ) -> Verdict:
        async def check() -> Verdict:
            return await self._accept_totp(user_id, secret_b32, code, past=past, future=future)

        return await self.attempt(user_id, policy, check)

    async def attempt(self, user_id: str, policy: LockoutPolicy, check: Check) -> Verdict:
        """Run `check` (which returns ACCEPTED, INVALID or REPLAYED) only if the user may try now.

        The TOTP path and the recovery-code path both come through here, so they share one counter
        and one lock. If `check` raises, its slot stays spent.
        """
        lock = await self._read_lock(user_id)
        allowed = lock.allowed(policy)
        if allowed == 0:
            return Verdict(Reason.LOCKED)
        if lock.locked_until is not None and self._clock() < lock.locked_until:
            return Verdict(Reason.LOCKED, locked_until=lock.locked_until)
        counter = _counter_key(user_id, lock.generation)
        slot = await self._storage.record_incr(FAILURES, counter, expires_at=self._clock() + FAILURE_MEMORY)
        if slot > allowed:
            # Raced past the lock check alongside other attempts: refused unseen. Locking here too
            # means the lock (and a fresh counter after it) exists even if the attempt in the last
            # slot never settled.
            return Verdict(Reason.LOCKED, locked_until=await self._lock(user_id, lock, policy, allowed))
        verdict = await check()
        if verdict.accepted:
            await self._storage.record_delete(FAILURES, counter)
            if lock.failures:
                await self._storage.record_set(
                    LOCK, user_id, {"generation": lock.generation + 1, "lockedUntil": None, "failures": 0}
                )
            return verdict
        if slot == allowed:
            return replace(verdict, locked_until=await self._lock(user_id, lock, policy, allowed))
        return verdict

    async def locked_until(self, user_id: str) -> datetime | None:
        lock = await self._read_lock(user_id)
        if lock.locked_until is not None and self._clock() < lock.locked_until:
            return lock.locked_until
        return None

    async def reset(self, user_id: str) -> None:
        """Clear the failures and the lock (an administrator's reset); the last accepted step stays."""
        lock = await self._read_lock(user_id)
        await self._storage.record_set(
            LOCK, user_id, {"generation": lock.generation + 1, "lockedUntil": None, "failures": 0}
        )
        await self._storage.record_delete(FAILURES, _counter_key(user_id, lock.generation))

    async def _accept_totp(
        self, user_id: str, secret_b32: str, code: str, *, past: int, future: int
    ) -> Verdict:
        current = step_at(self._clock().timestamp())
        last = await self._storage.record_get(LAST_STEP, user_id)
        floor = int(last.document["step"]) if last is not None else -1
        match = match_step(secret_b32, code, current_step=current, past=past, future=future, floor=floor)
        if match.step is None:
            return Verdict(Reason.REPLAYED if match.replayed else Reason.INVALID)
        while True:
            expected_rev = last.rev if last is not None else None
            stored = await self._storage.record_put(
                LAST_STEP, user_id, {"step": match.step}, expected_rev=expected_rev
            )
            if stored is not None:
                return Verdict(Reason.ACCEPTED, step=match.step)
            last = await self._storage.record_get(LAST_STEP, user_id)
            if last is not None and int(last.document["step"]) >= match.step:
                # Another attempt accepted this step (or a later one) first. The loser of the race
                # is refused; it never retries its way to success.
                return Verdict(Reason.REPLAYED)
            # An older step was recorded meanwhile: ours is still strictly newer, so try again.

    async def _read_lock(self, user_id: str) -> _LockState:
        record = await self._storage.record_get(LOCK, user_id)
        if record is None:
            return _LockState(generation=0, locked_until=None, rev=None)
        until = record.document.get("lockedUntil")
        return _LockState(
            generation=int(record.document["generation"]),
            locked_until=datetime.fromisoformat(until) if until else None,
            rev=record.rev,
            failures=int(record.document.get("failures", 0)),
        )

    async def _lock(
        self, user_id: str, seen: _LockState, policy: LockoutPolicy, allowed: int
    ) -> datetime | None:
        """Lock from now on, unless someone changed the lock since `seen`; return the lock in force.

        At the cap the lock has no end (`lockedUntil` null, `failures` at the cap).
        """
        failures = seen.failures + allowed
        # Stored at millisecond precision; what is reported is what is stored.
        until = (
            isoformat(self._clock() + timedelta(seconds=policy.lockout_seconds))
            if failures < MAX_CONSECUTIVE_FAILURES
            else None
        )
        document = {"generation": seen.generation + 1, "lockedUntil": until, "failures": failures}
        if await self._storage.record_put(LOCK, user_id, document, expected_rev=seen.rev) is not None:
            return datetime.fromisoformat(until) if until else None
        return await self.locked_until(user_id)


def _counter_key(user_id: str, generation: int) -> str:
    return f"{user_id}/{generation}"
