"""Rate limits counted in storage, so they hold across workers and hosts sharing a backend.

Each limit is a fixed window that opens with the first request counted under a key and lasts
`seconds`, with the window's end as the counter record's expiry. The first request after the window
ends starts the counter again (the contract of `record_incr`), so there is one record per key however
long an attack lasts, and no second round trip to find the window. Keys are stored hashed: a username
field sometimes holds a password typed in the wrong box.

A small limit counts every request with one atomic `record_incr`. A large one would make that write
the cost of every request, so each process leases a share of the window's budget (a hundredth of the
limit) in one write and spends it locally until it is used up or the window ends. Shares are counted
in storage, so the limit still holds across workers; a process holding an unspent share when the
budget runs out refuses at most `share` requests that the limit would have let through.

Limits on failures (FailureLimiter) count only attempts that failed, in the same kind of counter, so
that an attempt that succeeds never pays a storage write.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from fhirauth.clock import Clock
from fhirauth.storage.base import Storage, StorageUnavailable

if TYPE_CHECKING:
    from fhirauth.settings import Settings

RATE_KIND = "rate-limit"


_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)s?\s*$")
OFF = "off"


@dataclass(frozen=True)
class Rate:
    """`count` requests per window of `seconds`."""

    count: int
    seconds: int

    def __post_init__(self) -> None:
        if self.count < 1 or self.seconds < 1:
            raise ValueError("a rate needs a positive count and window")


def parse_rate(text: str) -> Rate | None:
    """ "30/minute" (per second, minute, hour or day) as a Rate; "off" as None."""
    if text.strip().lower() == OFF:
        return None
    match = _RATE.match(text.lower())
    if match is None:
        raise ValueError(f"'{text}' is not a rate: write it as 30/minute, 5/hour, … or off")
    return Rate(int(match.group(1)), _UNITS[match.group(2)])


@dataclass(frozen=True)
class Limit:
    """A named rate; `rate=None` switches it off."""

    name: str
    rate: Rate | None


@dataclass(frozen=True)
class RateLimits:
    """Every limit the server applies: per client address at the HTTP edge, per account inside."""

    login_ip: Limit
    login_account: Limit
    token_ip: Limit
    signup_ip: Limit
    signup_email: Limit
    two_factor_ip: Limit
    client_auth_ip: Limit
    client_auth_client: Limit

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        return cls(
            login_ip=Limit("login-ip", parse_rate(settings.rate_limit_login_ip)),
            login_account=Limit("login-account", parse_rate(settings.rate_limit_login_account)),
            token_ip=Limit("token-ip", parse_rate(settings.rate_limit_token_ip)),
            signup_ip=Limit("signup-ip", parse_rate(settings.rate_limit_signup_ip)),
            signup_email=Limit("signup-email", parse_rate(settings.rate_limit_signup_email)),
            two_factor_ip=Limit("two-factor-ip", parse_rate(settings.rate_limit_two_factor_ip)),
            client_auth_ip=Limit("client-auth-ip", parse_rate(settings.rate_limit_client_auth_ip)),
            client_auth_client=Limit(
                "client-auth-client", parse_rate(settings.rate_limit_client_auth_client)
            ),
        )


class RateLimited(Exception):
    """Refused by `limit`; `retry_after` is the whole number of seconds until its window ends."""

    def __init__(self, limit: str, retry_after: int, *, first: bool) -> None:
        super().__init__(f"rate limit {limit} exceeded; retry after {retry_after} s")
        self.limit = limit
        self.retry_after = retry_after
        # The first refusal of a window: the one worth a log line.
        self.first = first


# A leased share is this fraction of a limit: at most one write per hundred requests.
_SHARES_PER_WINDOW = 100
# Keys with a lease at most, per process: a large per-address limit keeps one per client address.
_MAX_LEASES = 10_000


@dataclass
class _Lease:
    """The part of one key's window this process holds: requests it may still grant, until `ends`."""

    ends: datetime | None = None
    remaining: int = 0
    # This process's last share crossed the limit: its next refusal is the window's first.
    reached_limit: bool = False
    refilling: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Refills that failed on storage: how a request waiting for the lock learns that the one before it
    # failed.
    failed_refills: int = 0

    def spend(self, now: datetime) -> bool:
        if self.remaining < 1 or self.ends is None or now >= self.ends:
            return False
        self.remaining -= 1
        return True


class RateLimiter:
    def __init__(self, storage: Storage, clock: Clock) -> None:
        self._storage = storage
        self._clock = clock
        # By (limit name, key): the stored record's key, a hash, is only needed to refill.
        self._leases: dict[tuple[str, str], _Lease] = {}

    async def hit(self, limit: Limit, key: str) -> None:
        """Count one request under `key`; raise RateLimited when it is over the limit.

        Refused requests are counted too (the count is the reservation), which changes nothing:
        the window ends at the same time whatever the count.
        """
        rate = limit.rate
        if rate is None:
            return
        share = max(1, rate.count // _SHARES_PER_WINDOW)
        if share == 1:
            await self._count_one(limit, rate, _record_key(limit.name, key))
            return
        lease_key = (limit.name, key)
        lease = self._leases.get(lease_key)
        if lease is None:
            lease = self._leases[lease_key] = _Lease()
            if len(self._leases) > _MAX_LEASES:
                # Losing a lease costs at most `share` early refusals; the oldest is the likeliest spent.
                del self._leases[next(iter(self._leases))]
        if lease.spend(self._clock()):
            return
        failed_refills = lease.failed_refills
        async with lease.refilling:
            # Whoever held the lock may have refilled the lease meanwhile.
            if lease.spend(self._clock()):
                return
            if lease.failed_refills != failed_refills:
                # Storage failed the refill this request waited for. Trying again, each waiter in turn,
                # answered the k-th one after k storage timeouts (3 s in a MongoDB outage, measured).
                raise StorageUnavailable("storage failed the rate limit refill this request waited for")
            try:
                await self._refill(limit, rate, lease_key, share, lease)
            except StorageUnavailable:
                lease.failed_refills += 1
                raise

    async def _count_one(self, limit: Limit, rate: Rate, record_key: str) -> None:
        now = self._clock()
        count = await self._storage.record_incr(
            RATE_KIND, record_key, expires_at=now + timedelta(seconds=rate.seconds)
        )
        if count > rate.count:
            raise await self._refusal(limit, record_key, now, first=count == rate.count + 1)

    async def _refill(
        self, limit: Limit, rate: Rate, lease_key: tuple[str, str], share: int, lease: _Lease
    ) -> None:
        """Lease a new share for this request and the ones after it; a share straddling the limit
        grants only what is left of it."""
        record_key = _record_key(*lease_key)
        now = self._clock()
        first_pending = lease.reached_limit and lease.ends is not None and now < lease.ends
        window_ends = now + timedelta(seconds=rate.seconds)
        count = await self._storage.record_incr(RATE_KIND, record_key, expires_at=window_ends, amount=share)
        granted = min(share, rate.count - (count - share))
        if granted < 1:
            lease.reached_limit = False
            first = first_pending or count - share == rate.count
            raise await self._refusal(limit, record_key, now, first=first)
        # A count equal to the share started the window; otherwise it began earlier and ends as stored.
        lease.ends = window_ends if count == share else await self._window_end(record_key)
        lease.remaining = granted - 1
        lease.reached_limit = count > rate.count
        # Renewed leases move to the back of the eviction order.
        self._leases[lease_key] = self._leases.pop(lease_key, lease)

    async def _window_end(self, record_key: str) -> datetime | None:
        record = await self._storage.record_get(RATE_KIND, record_key)
        return record.expires_at if record is not None else None

    async def _refusal(self, limit: Limit, record_key: str, now: datetime, *, first: bool) -> RateLimited:
        # The window may have ended in between: then the next request is welcome at once.
        ends = await self._window_end(record_key) or now
        return RateLimited(limit.name, retry_after((ends - now).total_seconds()), first=first)


def retry_after(seconds: float) -> int:
    """What Retry-After says for a wait of `seconds`: whole seconds (RFC 9110 §10.2.3), rounded up so
    that a client that waits that long is welcome, and at least 1."""
    return max(1, math.ceil(seconds))


def _record_key(name: str, key: str) -> str:
    return f"{name}/{hashlib.sha256(key.encode()).hexdigest()}"


# (limit, key) pairs that one attempt is counted under.
Keys = Sequence[tuple[Limit, str]]
# Keys with failures known, per process: past this, the oldest is forgotten (which costs at most one
# attempt more on it).
_MAX_KNOWN = 10_000
# How often the keys whose windows have ended are forgotten, so that a process back at peace is idle.
_SWEEP_SECONDS = 60


@dataclass
class _Failures:
    """What this process knows of one key's current window."""

    # The stored count as this process's latest failure returned it (or more, while its own failures
    # are being written), and the window's end.
    count: int = 0
    ends: datetime | None = None
    # The window's end is the stored one, not this process's guess from its first failure in it.
    settled: bool = False
    in_flight: int = 0
    # The window's first refusal (the one worth a log line) has been made.
    refused: bool = False

    def restart(self, ends: datetime | None) -> None:
        """Forget the window that ended; `ends` is this process's guess at the next one's end."""
        self.count, self.ends, self.refused, self.settled = 0, ends, False, False


class FailureLimiter:
    """Limits on failed attempts, where only a failure costs a storage write.

    Each failure is added to a counter in storage (a fixed window, as for RateLimiter), so the limit
    holds across workers, and the count that write returns is what this process then knows. Before an
    attempt, that knowledge alone decides, with no storage read: a success pays nothing, and a flood
    past the limit costs a dictionary lookup a request. The price: a worker that has not seen a key
    fail lets one more attempt on it run before the count its own failure returns tells it the limit
    is reached. Attempts under way count as failures until they settle, so a burst arriving at once
    runs no more attempts than the limit allows.
    """

    def __init__(self, storage: Storage, clock: Clock) -> None:
        self._storage = storage
        self._clock = clock
        self._known: dict[tuple[str, str], _Failures] = {}
        self._sweep_at = clock()

    @property
    def idle(self) -> bool:
        """Whether no key has failures in this process's knowledge (nor attempts under way): then
        nothing can be refused, and a caller need not even work out its keys."""
        return not self._known

    def check(self, keys: Keys) -> None:
        """RateLimited when the failures (and the attempts under way) under one of `keys` have
        reached its limit."""
        now = self._clock()
        if now >= self._sweep_at:
            self._sweep(now)
        for limit, key in keys:
            self._check(limit, key, now)

    def is_clean(self, limit: Limit, key: str) -> bool:
        """Whether `key` is counted under `limit` and no failure of it is known in the current window."""
        if limit.rate is None:
            return False
        failures = self._known.get((limit.name, key))
        return failures is None or failures.ends is None or self._clock() >= failures.ends

    @contextmanager
    def holding(self, keys: Keys) -> Iterator[None]:
        """Count an attempt under `keys` as under way while it runs (see `check`)."""
        held = [self._entry(limit, key) for limit, key in keys if limit.rate is not None]
        for failures in held:
            failures.in_flight += 1
        try:
            yield
        finally:
            for failures in held:
                failures.in_flight -= 1
            for limit, key in keys:
                self._forget_if_clean((limit.name, key))

    async def failed(self, keys: Keys) -> None:
        """Count one failure under each of `keys`."""
        now = self._clock()
        # Known here before the writes below yield: an attempt starting while they are under way
        # must see this failure, or every failure of a burst would let one more attempt in.
        for limit, key in keys:
            if limit.rate is not None:
                failures = self._entry(limit, key)
                if failures.ends is None or now >= failures.ends:
                    failures.restart(now + timedelta(seconds=limit.rate.seconds))
                failures.count += 1
        for limit, key in keys:
            if limit.rate is not None:
                await self._store_failure(limit, limit.rate, key, now)

    async def _store_failure(self, limit: Limit, rate: Rate, key: str, now: datetime) -> None:
        record_key = _record_key(limit.name, key)
        window_ends = now + timedelta(seconds=rate.seconds)
        count = await self._storage.record_incr(RATE_KIND, record_key, expires_at=window_ends)
        failures = self._entry(limit, key)
        failures.count = max(failures.count, count)
        if failures.settled:
            return
        if count == 1:
            failures.ends = window_ends
        else:
            # The stored window began before this failure, in this process or another.
            record = await self._storage.record_get(RATE_KIND, record_key)
            failures.ends = record.expires_at if record is not None else window_ends
        failures.settled = True

    def _check(self, limit: Limit, key: str, now: datetime) -> None:
        rate = limit.rate
        failures = self._known.get((limit.name, key))
        if rate is None or failures is None:
            return
        if failures.ends is not None and now >= failures.ends:
            failures.restart(None)
        if failures.count + failures.in_flight < rate.count:
            return
        # Refused on attempts under way alone, no window has begun yet: the first failure opens one.
        seconds = (failures.ends - now).total_seconds() if failures.ends is not None else rate.seconds
        first = not failures.refused
        failures.refused = True
        raise RateLimited(limit.name, retry_after(seconds), first=first)

    def _entry(self, limit: Limit, key: str) -> _Failures:
        known_key = (limit.name, key)
        failures = self._known.get(known_key)
        if failures is None:
            failures = self._known[known_key] = _Failures()
            if len(self._known) > _MAX_KNOWN:
                del self._known[next(iter(self._known))]
        return failures

    def _sweep(self, now: datetime) -> None:
        self._sweep_at = now + timedelta(seconds=_SWEEP_SECONDS)
        ended = [
            known_key
            for known_key, failures in self._known.items()
            if failures.in_flight == 0 and (failures.ends is None or now >= failures.ends)
        ]
        for known_key in ended:
            del self._known[known_key]

    def _forget_if_clean(self, known_key: tuple[str, str]) -> None:
        failures = self._known.get(known_key)
        if failures is not None and failures.in_flight == 0 and failures.ends is None:
            del self._known[known_key]
