"""Rate limits counted in storage, so they hold across workers and hosts sharing a backend.

Each limit is a fixed window that opens with the first request counted under a key and lasts
`seconds`: one atomic `record_incr` per request, with the window's end as the record's expiry. The
first request after the window ends starts the counter again at 1 (the contract of `record_incr`),
so there is one record per key however long an attack lasts, and no second round trip to find the
window. Keys are stored hashed: a username field sometimes holds a password typed in the wrong box.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from fhirauth.clock import Clock
from fhirauth.storage.base import Storage

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

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        return cls(
            login_ip=Limit("login-ip", parse_rate(settings.rate_limit_login_ip)),
            login_account=Limit("login-account", parse_rate(settings.rate_limit_login_account)),
            token_ip=Limit("token-ip", parse_rate(settings.rate_limit_token_ip)),
            signup_ip=Limit("signup-ip", parse_rate(settings.rate_limit_signup_ip)),
            signup_email=Limit("signup-email", parse_rate(settings.rate_limit_signup_email)),
            two_factor_ip=Limit("two-factor-ip", parse_rate(settings.rate_limit_two_factor_ip)),
        )


class RateLimited(Exception):
    """Refused by `limit`; `retry_after` is the whole number of seconds until its window ends."""

    def __init__(self, limit: str, retry_after: int, *, first: bool) -> None:
        super().__init__(f"rate limit {limit} exceeded; retry after {retry_after} s")
        self.limit = limit
        self.retry_after = retry_after
        # The first refusal of a window: the one worth a log line.
        self.first = first


class RateLimiter:
    def __init__(self, storage: Storage, clock: Clock) -> None:
        self._storage = storage
        self._clock = clock

    async def hit(self, limit: Limit, key: str) -> None:
        """Count one request under `key`; raise RateLimited when it is over the limit.

        Refused requests are counted too (the count is the reservation), which changes nothing:
        the window ends at the same time whatever the count.
        """
        if limit.rate is None:
            return
        record_key = _record_key(limit.name, key)
        now = self._clock()
        count = await self._storage.record_incr(
            RATE_KIND, record_key, expires_at=now + timedelta(seconds=limit.rate.seconds)
        )
        if count <= limit.rate.count:
            return
        record = await self._storage.record_get(RATE_KIND, record_key)
        # The window may have ended in between: then the next request is welcome at once.
        ends = record.expires_at if record is not None and record.expires_at is not None else now
        retry_after = max(1, math.ceil((ends - now).total_seconds()))
        raise RateLimited(limit.name, retry_after, first=count == limit.rate.count + 1)


def _record_key(name: str, key: str) -> str:
    return f"{name}/{hashlib.sha256(key.encode()).hexdigest()}"
