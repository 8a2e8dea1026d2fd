"""Rate limits over real storage: small limits count every request, large ones lease shares of the window.

Two RateLimiter instances over one store stand for two workers. On SQLite every record call yields
first (InterleavingSQLite), so gathered requests interleave as they do against a networked backend.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from support.interleaving import InterleavingSQLite
from support.mongo import drop_database, with_database
from support.server import free_port

from fhirauth import ratelimit
from fhirauth.clock import ManualClock
from fhirauth.ratelimit import RATE_KIND, Limit, Rate, RateLimited, RateLimiter, _record_key
from fhirauth.storage.backends import open_storage
from fhirauth.storage.base import Storage, StorageUnavailable

START = datetime.fromisoformat("2026-01-01T00:00:00+00:00")
# 1,000 a minute: shares of 10.
LARGE = Limit("token-ip", Rate(1000, 60))
SMALL = Limit("token-ip", Rate(60, 60))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture(params=["sqlite", "mongo"])
async def storage(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[Storage]:
    if request.param == "sqlite":
        url = "sqlite://:memory:"
        store: Storage = InterleavingSQLite(":memory:", clock)
    else:
        url = with_database(request.getfixturevalue("mongo_uri"), f"rate{uuid.uuid4().hex[:12]}")
        store = open_storage(url, clock)
    await store.start(())
    yield store
    await store.close()
    if request.param == "mongo":
        drop_database(url)


async def granted(limiter: RateLimiter, times: int, limit: Limit = LARGE, key: str = "198.51.100.1") -> int:
    """How many of `times` requests in a row pass."""
    passed = 0
    for _ in range(times):
        try:
            await limiter.hit(limit, key)
        except RateLimited:
            continue
        passed += 1
    return passed


async def refusal(limiter: RateLimiter, limit: Limit = LARGE, key: str = "198.51.100.1") -> RateLimited:
    with pytest.raises(RateLimited) as refused:
        await limiter.hit(limit, key)
    return refused.value


async def stored_count(storage: Storage, limit: Limit = LARGE, key: str = "198.51.100.1") -> int | None:
    record = await storage.record_get(RATE_KIND, _record_key(limit.name, key))
    return None if record is None else int(record.document["count"])


async def test_a_small_limit_counts_every_request(storage: Storage, clock: ManualClock) -> None:
    limiter = RateLimiter(storage, clock)
    assert await granted(limiter, 60, SMALL) == 60
    assert await stored_count(storage, SMALL) == 60
    clock.advance(15)
    first = await refusal(limiter, SMALL)
    assert (first.limit, first.retry_after, first.first) == ("token-ip", 45, True)
    assert (await refusal(limiter, SMALL)).first is False
    # Refused requests are counted too, one write each.
    assert await stored_count(storage, SMALL) == 62
    clock.advance(45)
    assert await granted(limiter, 1, SMALL) == 1
    assert await stored_count(storage, SMALL) == 1


async def test_a_small_limit_holds_across_workers(storage: Storage, clock: ManualClock) -> None:
    one, two = RateLimiter(storage, clock), RateLimiter(storage, clock)
    assert await granted(one, 1, SMALL) == 1
    assert await granted(two, 59, SMALL) == 59
    assert (await refusal(one, SMALL)).first is True
    assert (await refusal(two, SMALL)).first is False


async def test_a_large_limit_leases_shares_in_one_write_each(storage: Storage, clock: ManualClock) -> None:
    limiter = RateLimiter(storage, clock)
    assert await granted(limiter, 1) == 1
    assert await stored_count(storage) == 10
    assert await granted(limiter, 9) == 9
    assert await stored_count(storage) == 10
    assert await granted(limiter, 1) == 1
    assert await stored_count(storage) == 20


async def test_a_large_limit_is_exact_across_two_workers(storage: Storage, clock: ManualClock) -> None:
    one, two = RateLimiter(storage, clock), RateLimiter(storage, clock)
    passed = 0
    for _ in range(500):
        passed += await granted(one, 1) + await granted(two, 1)
    assert passed == 1000
    assert await stored_count(storage) == 1000
    first = await refusal(one)
    assert (first.retry_after, first.first) == (60, True)
    assert (await refusal(two)).first is False
    assert await stored_count(storage) == 1020


async def test_a_worker_spends_its_share_after_the_other_is_refused(
    storage: Storage, clock: ManualClock
) -> None:
    one, two = RateLimiter(storage, clock), RateLimiter(storage, clock)
    assert await granted(one, 1) == 1
    assert await granted(two, 990) == 990
    # The 992nd request overall is refused though the first worker still holds nine: the price of a
    # lease, at most a share per worker.
    assert (await refusal(two)).first is True
    assert await granted(one, 9) == 9
    assert (await refusal(one)).first is False


async def test_a_share_straddling_the_limit_grants_only_what_is_left(
    storage: Storage, clock: ManualClock
) -> None:
    limit = Limit("token-ip", Rate(1005, 60))
    one, two = RateLimiter(storage, clock), RateLimiter(storage, clock)
    assert await granted(one, 1000, limit) == 1000
    assert await granted(one, 5, limit) == 5
    assert await stored_count(storage, limit) == 1010
    # The worker whose share crossed the limit logs the window's first refusal; the other one does not.
    assert (await refusal(two, limit)).first is False
    assert (await refusal(one, limit)).first is True
    assert (await refusal(one, limit)).first is False


async def test_a_lease_ends_with_its_window(storage: Storage, clock: ManualClock) -> None:
    one, two = RateLimiter(storage, clock), RateLimiter(storage, clock)
    assert await granted(one, 1) == 1
    clock.advance(30)
    # The second worker's share belongs to the window the first one opened: it ends 30 s from now.
    assert await granted(two, 1) == 1
    assert await stored_count(storage) == 20
    clock.advance(29.5)
    assert await granted(two, 9) == 9
    assert await stored_count(storage) == 20
    clock.advance(0.5)
    assert await granted(two, 1) == 1
    assert await stored_count(storage) == 10
    record = await storage.record_get(RATE_KIND, _record_key(LARGE.name, "198.51.100.1"))
    assert record is not None and record.expires_at == clock() + timedelta(seconds=60)


async def test_a_full_window_opens_again_when_it_ends(storage: Storage, clock: ManualClock) -> None:
    limiter = RateLimiter(storage, clock)
    assert await granted(limiter, 1000) == 1000
    clock.advance(42)
    assert (await refusal(limiter)).retry_after == 18
    clock.advance(18)
    assert await granted(limiter, 1000) == 1000
    assert (await refusal(limiter)).first is True


async def test_concurrent_requests_of_one_worker_share_one_lease(
    storage: Storage, clock: ManualClock
) -> None:
    limiter = RateLimiter(storage, clock)
    await asyncio.gather(*(limiter.hit(LARGE, "198.51.100.1") for _ in range(35)))
    assert await stored_count(storage) == 40


async def test_keys_are_leased_apart(storage: Storage, clock: ManualClock) -> None:
    limiter = RateLimiter(storage, clock)
    assert await granted(limiter, 1000, key="192.0.2.1") == 1000
    assert await granted(limiter, 1, key="192.0.2.2") == 1
    assert (await refusal(limiter, key="192.0.2.1")).first is True


async def test_the_oldest_lease_goes_when_there_are_too_many(
    storage: Storage, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "_MAX_LEASES", 2)
    limiter = RateLimiter(storage, clock)
    for key in ("a", "b", "c"):
        assert await granted(limiter, 1, key=key) == 1
    assert await granted(limiter, 1, key="c") == 1
    assert await stored_count(storage, key="c") == 10
    # "a" lost its lease (nine requests of its share) and leases again.
    assert await granted(limiter, 1, key="a") == 1
    assert await stored_count(storage, key="a") == 20


async def test_requests_waiting_for_a_refill_that_storage_failed_fail_with_it(
    clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MongoDB at a port nobody listens on: each call fails after its server selection timeout.
    storage = open_storage(f"mongodb://127.0.0.1:{free_port()}/rate", clock)
    refills = 0
    record_incr = storage.record_incr

    async def counted(kind: str, key: str, *, expires_at: datetime, amount: int = 1) -> int:
        nonlocal refills
        refills += 1
        return await record_incr(kind, key, expires_at=expires_at, amount=amount)

    monkeypatch.setattr(storage, "record_incr", counted)
    limiter = RateLimiter(storage, clock)
    waiting = await asyncio.gather(
        *(limiter.hit(LARGE, "198.51.100.1") for _ in range(4)), return_exceptions=True
    )
    # One storage timeout for all four: in turn, the fourth answered after four of them.
    assert [type(outcome) for outcome in waiting] == [StorageUnavailable] * 4
    assert refills == 1
    # A request that comes after the failure asks storage again.
    with pytest.raises(StorageUnavailable):
        await limiter.hit(LARGE, "198.51.100.1")
    assert refills == 2
    await storage.close()


def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one() -> None:
    waits = (0.0, -3.0, 0.001, 1.0, 1.2, 59.5, 60.0, 299.9)
    assert [ratelimit.retry_after(seconds) for seconds in waits] == [1, 1, 1, 1, 2, 60, 60, 300]
