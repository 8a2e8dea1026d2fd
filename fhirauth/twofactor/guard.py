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

Records of the layout before this one (a lock and failure counters beside the last step) are
converted by `fhirauth migrate` (fhirauth/migrations.py), which builds the state with
`state_document`. A last step alone, as an old-version worker still running writes it, reads as
that step with no failures.
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
        return _State(step=self.step if step is None else step, rev=self.rev)

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
            failures=int(doc.get("failures", 0)),
            earlier_failures=int(doc.get("earlierFailures", 0)),
            locked_until=datetime.fromisoformat(until) if until else None,
            rev=record.rev,
        )


def state_document(
    *, step: int, failures: int, earlier_failures: int, locked_until: datetime | None
) -> dict[str, Any]:
    """The state record as the guard stores it."""
    return _State(step, failures, earlier_failures, locked_until).document()


class AttemptGuard:
    def __init__(self, storage: Storage, clock: Clock) -> None:
        self._storage = storage
        self._clock = clock

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
                    reserved = replace(reserved, rev=rev)
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
        return await self._storage.record_put(STATE, user_id, outcome.document(), expected_rev=seen.rev)

    async def _read(self, user_id: str) -> _State:
        record = await self._storage.record_get(STATE, user_id)
        return _State() if record is None else _State.of(record)


def _locked_now(state: _State, policy: LockoutPolicy, now: datetime) -> tuple[_State, Verdict]:
    locked = state.locked(policy, now)
    return locked, Verdict(Reason.LOCKED, locked_until=locked.locked_until)
