"""Password brute-force detection: Keycloak's temporary lockout ("multiple" strategy) under NIST's cap.

The schedule, with Keycloak's defaults (factor 30, increment 60 s, max wait 900 s): failures 1-29 cost
nothing; the 30th locks the account for 60 s; from then on every failure locks it again, for
increment × ⌊failures / factor⌋ seconds (60 s up to the 59th, 120 s from the 60th, …, never more than
the max wait). NIST SP 800-63B §5.2.2 allows at most 100 consecutive failures per account: the
`max_failures`-th locks the account until a successful sign-in is possible again, i.e. until an
administrator sets a new password. A success forgets every failure.

Everything lives in storage records that change atomically, so all workers and hosts enforce one count:

* `login-lock/<user>` `{"generation", "failures", "lockedUntil"}`: the failures counted before the
  current generation, and the lock in force. Each lock (and each success that follows failures)
  moves to the next generation, so the next run of attempts counts in a fresh counter while attempts
  still in flight on the old one can only be refused.
* `login-failures/<user>/<generation>`: every attempt reserves a slot with one atomic increment
  *before* its password is looked at, and only the slots the schedule allows are evaluated: a
  parallel burst cannot check more passwords than the schedule permits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from fhirauth.clock import Clock, isoformat
from fhirauth.storage.base import Storage

LOCK = "login-lock"
FAILURES = "login-failures"

# NIST SP 800-63B §5.2.2: "no more than 100" consecutive failed attempts on a single account.
NIST_MAX_FAILURES = 100
# Failures are forgotten by a success or an administrator's reset; a year is only the records' expiry.
FAILURE_MEMORY = timedelta(days=365)


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    REFUSED = "refused"
    LOCKED = "locked"


@dataclass(frozen=True)
class Verdict:
    """One attempt's outcome. `locked_until` is set on a LOCKED refusal (None there: until an
    administrator's reset, or the lock was lifted meanwhile) and on the failure that caused a lock."""

    outcome: Outcome
    locked_until: datetime | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome is Outcome.ACCEPTED


@dataclass(frozen=True)
class BruteForcePolicy:
    failure_factor: int = 30
    wait_increment_seconds: int = 60
    max_wait_seconds: int = 900
    max_failures: int = NIST_MAX_FAILURES

    def __post_init__(self) -> None:
        if min(self.failure_factor, self.wait_increment_seconds, self.max_wait_seconds) < 1:
            raise ValueError("failure_factor, wait_increment_seconds and max_wait_seconds must be positive")
        if not 1 <= self.max_failures <= NIST_MAX_FAILURES:
            raise ValueError(f"max_failures must be between 1 and {NIST_MAX_FAILURES}")

    def wait_after(self, failures: int) -> int:
        """Seconds locked after the `failures`-th consecutive failure (0: not locked)."""
        return min(self.max_wait_seconds, self.wait_increment_seconds * (failures // self.failure_factor))

    def attempts_after(self, failures: int) -> int:
        """How many passwords may be checked, after `failures` consecutive failures, before the next lock.

        0 means locked for good: the cap is reached.
        """
        until_lock = self.failure_factor - failures if failures < self.failure_factor else 1
        return max(0, min(until_lock, self.max_failures - failures))


Check = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class _State:
    generation: int
    failures: int
    locked_until: datetime | None
    rev: int | None


class PasswordLockout:
    def __init__(self, storage: Storage, clock: Clock, policy: BruteForcePolicy) -> None:
        self._storage = storage
        self._clock = clock
        self._policy = policy

    async def attempt(self, user_id: str, check: Check) -> Verdict:
        """Run `check` (True when the password is right) only if the account may try now.

        If `check` raises, its slot stays spent.
        """
        state = await self._read(user_id)
        allowed = self._policy.attempts_after(state.failures)
        if allowed == 0:
            return Verdict(Outcome.LOCKED)
        if state.locked_until is not None and self._clock() < state.locked_until:
            return Verdict(Outcome.LOCKED, state.locked_until)
        counter = _counter_key(user_id, state.generation)
        slot = await self._storage.record_incr(FAILURES, counter, expires_at=self._clock() + FAILURE_MEMORY)
        if slot > allowed:
            # Raced past the lock check alongside other attempts: refused unseen, and locked here
            # too, so the lock exists even if the attempt in the last slot never settles.
            return Verdict(Outcome.LOCKED, await self._lock(user_id, state, allowed))
        if await check():
            await self._forget(user_id, state, slot, counter)
            return Verdict(Outcome.ACCEPTED)
        if slot == allowed:
            return Verdict(Outcome.REFUSED, await self._lock(user_id, state, allowed))
        return Verdict(Outcome.REFUSED)

    async def reset(self, user_id: str) -> None:
        """Forget the failures and lift any lock (an administrator set a new password)."""
        state = await self._read(user_id)
        await self._storage.record_set(
            LOCK,
            user_id,
            {"generation": state.generation + 1, "failures": 0, "lockedUntil": None},
            expires_at=self._clock() + FAILURE_MEMORY,
        )

    async def _forget(self, user_id: str, seen: _State, slot: int, counter: str) -> None:
        if seen.failures == 0 and slot == 1:
            # Nobody failed in this run: emptying its counter is enough.
            await self._storage.record_delete(FAILURES, counter)
            return
        # A success wins over any lock set meanwhile: the right password was just shown.
        await self._storage.record_set(
            LOCK,
            user_id,
            {"generation": seen.generation + 1, "failures": 0, "lockedUntil": None},
            expires_at=self._clock() + FAILURE_MEMORY,
        )

    async def _lock(self, user_id: str, seen: _State, allowed: int) -> datetime | None:
        """Lock after the run that began at `seen` used its `allowed` slots, unless someone changed the
        lock since; return the lock in force."""
        failures = seen.failures + allowed
        until: str | None = None
        if self._policy.attempts_after(failures) > 0:
            # Stored at millisecond precision; what is reported is what is stored.
            until = isoformat(self._clock() + timedelta(seconds=self._policy.wait_after(failures)))
        document = {"generation": seen.generation + 1, "failures": failures, "lockedUntil": until}
        written = await self._storage.record_put(
            LOCK, user_id, document, expected_rev=seen.rev, expires_at=self._clock() + FAILURE_MEMORY
        )
        if written is not None:
            return datetime.fromisoformat(until) if until else None
        current = await self._read(user_id)
        if current.locked_until is not None and self._clock() < current.locked_until:
            return current.locked_until
        return None

    async def _read(self, user_id: str) -> _State:
        record = await self._storage.record_get(LOCK, user_id)
        if record is None:
            return _State(generation=0, failures=0, locked_until=None, rev=None)
        until = record.document.get("lockedUntil")
        return _State(
            generation=int(record.document["generation"]),
            failures=int(record.document.get("failures", 0)),
            locked_until=datetime.fromisoformat(until) if until else None,
            rev=record.rev,
        )


def _counter_key(user_id: str, generation: int) -> str:
    return f"{user_id}/{generation}"
