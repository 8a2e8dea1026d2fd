"""Attempt limiting and the TOTP replay guard: the one home of lockout and of "each step only once".

One storage record per user, `totp-step/<user>`, changed only by compare-and-set, so several workers
(or hosts) sharing a backend enforce the same limits:

    {"step", "failures", "earlierFailures", "lockedUntil"}

* `step`: the last accepted TOTP step (-1 before the first).
* `failures`: failed attempts since the last lock began, or since the last success or reset.
  Reaching the policy's `max_attempts` locks until `lockedUntil` and moves them to
  `earlierFailures`, so the count starts afresh when the lock ends.
* `earlierFailures`: the failures of the rounds before, kept until a success or an administrator's
  reset. At NIST's cap (`MAX_CONSECUTIVE_FAILURES`) the lock has no end (`lockedUntil` null).

A TOTP code costs one read and one compare-and-set: read the state, refuse if locked, evaluate the
code, then commit the outcome (success: its step, the failures cleared; failure: one more, locking
at the limit). When the compare-and-set finds the record changed, the attempt reads it again and
decides again (the code is not computed twice), so an outcome is only revealed once it is stored:
of two attempts racing with one code exactly one commits the step; of a burst of wrong codes at
most `max_attempts` commit a failure before one of them commits the lock that refuses the rest.

A recovery code is spent in the User document, a write of its own the state record cannot share,
so `attempt` counts a failure *before* running its check (and clears it after a success): parallel
guesses cannot run more checks than the attempts left.

Failures are forgotten by a success or an administrator's reset, not by time: forgetting a run that
stopped short of the limit would let a guesser with the password try a few codes every day for ever.

The guard used to keep three records: the last step (`totp-step/<user>` `{"step"}`), a lock
(`2fa-lock/<user>` `{"generation", "lockedUntil", "failures"}`) and a failure counter per generation
(`2fa-failures/<user>/<generation>`). The state took over the last step's kind and key, so a user's
old step comes with the state read, and the first compare-and-set replaces it. A user whose state is
absent or still of that shape has the old lock read too, and the old counter when a failure needs
its count; both are carried over (a lock in force and the failures towards NIST's cap still hold)
and deleted. A counter that a success makes irrelevant is left to its own one-year expiry.
Only the old layout wrote those two kinds, and old workers are to be stopped before new ones start
(README, "Two-factor authentication"): a guard that finds none of them skips the two reads at its
users' first attempts, and looks again a minute later, so records that an old worker still running
beside it writes are missed for a minute at most.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from fhirauth.clock import Clock, isoformat
from fhirauth.storage.base import Record, Storage
from fhirauth.twofactor.totp import decide, matching_steps, step_at

STATE = "totp-step"
LEGACY_LOCK = "2fa-lock"
LEGACY_FAILURES = "2fa-failures"

# How long an answer to "does the store hold records of the old layout?" is used before asking again.
OLD_LAYOUT_RECHECK = timedelta(minutes=1)

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
class _State:
    step: int = -1
    failures: int = 0
    earlier_failures: int = 0
    locked_until: datetime | None = None
    # The rev the state was read at; None when no record exists yet (the commit creates it).
    rev: int | None = None
    # Records of the old layout this state was carried over from, deleted once it is stored.
    legacy: tuple[tuple[str, str], ...] = ()
    # The old layout's failure counter, not read yet: its count is only needed for a failure.
    unread_counter: str | None = None

    def allowed(self, policy: LockoutPolicy) -> int:
        """Failures this round may reach: 0 once the earlier rounds reach the cap."""
        return max(0, min(policy.max_attempts, MAX_CONSECUTIVE_FAILURES - self.earlier_failures))

    def refusal(self, policy: LockoutPolicy, now: datetime) -> Verdict | None:
        """LOCKED when no attempt may be evaluated now, else None."""
        if self.allowed(policy) == 0:
            return Verdict(Reason.LOCKED)
        if self.locked_until is not None and now < self.locked_until:
            return Verdict(Reason.LOCKED, locked_until=self.locked_until)
        return None

    def full(self, policy: LockoutPolicy) -> bool:
        """Every attempt of this round is counted, but no lock yet: the last one is still in flight
        (a recovery code being spent), or maxAttempts was lowered. The next attempt locks."""
        return self.failures >= self.allowed(policy)

    def succeeded(self, step: int | None) -> _State:
        # Built directly: every accepted code comes here, and `replace` costs twice as much.
        return _State(
            step=self.step if step is None else step,
            rev=self.rev,
            legacy=self.legacy,
            unread_counter=self.unread_counter,
        )

    def counted(self) -> _State:
        return replace(self, failures=self.failures + 1)

    def locked(self, policy: LockoutPolicy, now: datetime) -> _State:
        earlier = self.earlier_failures + self.failures
        # Stored at millisecond precision; what is reported is what is stored.
        until = (
            datetime.fromisoformat(isoformat(now + timedelta(seconds=policy.lockout_seconds)))
            if earlier < MAX_CONSECUTIVE_FAILURES
            else None
        )
        return replace(self, failures=0, earlier_failures=earlier, locked_until=until)

    def document(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "failures": self.failures,
            "earlierFailures": self.earlier_failures,
            "lockedUntil": isoformat(self.locked_until) if self.locked_until else None,
        }

    @classmethod
    def of(cls, record: Record) -> _State:
        doc = record.document
        until = doc.get("lockedUntil")
        return cls(
            step=int(doc["step"]),
            failures=int(doc["failures"]),
            earlier_failures=int(doc["earlierFailures"]),
            locked_until=datetime.fromisoformat(until) if until else None,
            rev=record.rev,
        )

    @classmethod
    def of_old_layout(
        cls, user_id: str, last_step: Record | None, lock: Record | None, *, counters: bool = True
    ) -> _State:
        """The old last step (absent or `{"step"}`) and lock; the counter named by the lock's
        generation is left unread (none, when the store holds no `counters`)."""
        until = lock.document.get("lockedUntil") if lock is not None else None
        generation = int(lock.document["generation"]) if lock is not None else 0
        return cls(
            step=int(last_step.document["step"]) if last_step is not None else -1,
            earlier_failures=int(lock.document.get("failures", 0)) if lock is not None else 0,
            locked_until=datetime.fromisoformat(until) if until else None,
            rev=last_step.rev if last_step is not None else None,
            legacy=((LEGACY_LOCK, user_id),) if lock is not None else (),
            unread_counter=f"{user_id}/{generation}" if counters else None,
        )


class AttemptGuard:
    def __init__(self, storage: Storage, clock: Clock) -> None:
        self._storage = storage
        self._clock = clock
        # Whether the store held records of the old layout, and when that was asked.
        self._old_layout: tuple[bool, datetime] | None = None

    async def verify_totp(
        self, user_id: str, secret_b32: str, code: str, *, past: int, future: int, policy: LockoutPolicy
    ) -> Verdict:
        state = await self._read(user_id)
        matched: tuple[int, ...] | None = None
        while True:
            now = self._clock()
            refused = state.refusal(policy, now)
            if refused is not None:
                return refused
            if state.full(policy):
                outcome, verdict = _locked_now(state, policy, now)
            else:
                if matched is None:
                    current = step_at(now.timestamp())
                    matched = matching_steps(secret_b32, code, current_step=current, past=past, future=future)
                match = decide(matched, state.step)
                if match.step is not None:
                    outcome, verdict = state.succeeded(match.step), Verdict(Reason.ACCEPTED, step=match.step)
                elif state.unread_counter is not None:
                    state = await self._count_old_failures(state, state.unread_counter)
                    continue
                else:
                    # A code whose step another attempt committed first is a replay: the loser of a
                    # race never retries its way to success.
                    outcome = state.counted()
                    verdict = Verdict(Reason.REPLAYED if match.replayed else Reason.INVALID)
                    if outcome.full(policy):
                        outcome = outcome.locked(policy, now)
                        verdict = replace(verdict, locked_until=outcome.locked_until)
            if await self._commit(user_id, state, outcome) is not None:
                return verdict
            state = await self._read(user_id)

    async def attempt(self, user_id: str, policy: LockoutPolicy, check: Check) -> Verdict:
        """Run `check` (which returns ACCEPTED, INVALID or REPLAYED) only if the user may try now.

        The TOTP path and the recovery-code path share one count and one lock. The attempt is
        counted as a failure before `check` runs; if `check` raises, it stays counted.
        """
        state = await self._read(user_id)
        while True:
            if state.unread_counter is not None:
                state = await self._count_old_failures(state, state.unread_counter)
            now = self._clock()
            refused = state.refusal(policy, now)
            if refused is not None:
                return refused
            if state.full(policy):
                locked, verdict = _locked_now(state, policy, now)
                if await self._commit(user_id, state, locked) is not None:
                    return verdict
            else:
                reserved = state.counted()
                rev = await self._commit(user_id, state, reserved)
                if rev is not None:
                    reserved = replace(reserved, rev=rev, legacy=(), unread_counter=None)
                    break
            state = await self._read(user_id)
        verdict = await check()
        if verdict.accepted:
            await self._update(user_id, lambda state: state.succeeded(None))
            return verdict
        if reserved.full(policy):
            locked = reserved.locked(policy, self._clock())
            if await self._commit(user_id, reserved, locked) is not None:
                return replace(verdict, locked_until=locked.locked_until)
            # Changed meanwhile: locked by an attempt that found this round full, or cleared by a success.
            return replace(verdict, locked_until=await self.locked_until(user_id))
        return verdict

    async def locked_until(self, user_id: str) -> datetime | None:
        state = await self._read(user_id)
        if state.locked_until is not None and self._clock() < state.locked_until:
            return state.locked_until
        return None

    async def reset(self, user_id: str) -> None:
        """Clear the failures and the lock (an administrator's reset); the last accepted step stays."""
        await self._update(user_id, lambda state: state.succeeded(None))

    async def _update(self, user_id: str, change: Callable[[_State], _State]) -> None:
        while True:
            state = await self._read(user_id)
            if await self._commit(user_id, state, change(state)) is not None:
                return

    async def _commit(self, user_id: str, seen: _State, outcome: _State) -> int | None:
        """Store `outcome` if the record is still as `seen` was read; its new rev, or None."""
        rev = await self._storage.record_put(STATE, user_id, outcome.document(), expected_rev=seen.rev)
        if rev is not None:
            for kind, key in seen.legacy:
                await self._storage.record_delete(kind, key)
        return rev

    async def _read(self, user_id: str) -> _State:
        record = await self._storage.record_get(STATE, user_id)
        if record is not None and "failures" in record.document:
            return _State.of(record)
        if not await self._old_layout_present():
            return _State.of_old_layout(user_id, record, None, counters=False)
        return _State.of_old_layout(user_id, record, await self._storage.record_get(LEGACY_LOCK, user_id))

    async def _old_layout_present(self) -> bool:
        now = self._clock()
        if self._old_layout is None or now - self._old_layout[1] >= OLD_LAYOUT_RECHECK:
            present = await self._storage.has_records(LEGACY_LOCK) or await self._storage.has_records(
                LEGACY_FAILURES
            )
            self._old_layout = (present, now)
        return self._old_layout[0]

    async def _count_old_failures(self, state: _State, counter_key: str) -> _State:
        counter = await self._storage.record_get(LEGACY_FAILURES, counter_key)
        if counter is None:
            return replace(state, unread_counter=None)
        return replace(
            state,
            failures=int(counter.document["count"]),
            legacy=(*state.legacy, (LEGACY_FAILURES, counter_key)),
            unread_counter=None,
        )


def _locked_now(state: _State, policy: LockoutPolicy, now: datetime) -> tuple[_State, Verdict]:
    locked = state.locked(policy, now)
    return locked, Verdict(Reason.LOCKED, locked_until=locked.locked_until)
