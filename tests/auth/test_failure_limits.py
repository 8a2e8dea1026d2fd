"""Limits on failed client authentication inside the ClientRegistry, on both backends: one client's
secrets are verified one at a time, a burst runs no more verifications than the limit allows, and a
failure counts before its write returns."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import timedelta

import pytest

from fhirauth.auth.client_auth import ClientAuthLimits
from fhirauth.auth.clients import ClientRegistry
from fhirauth.ratelimit import (
    RATE_KIND,
    FailureLimiter,
    Limit,
    RateLimited,
    _record_key,
    parse_rate,
)
from fhirauth.services import Services
from tests.auth.hashers import GatedHasher
from tests.auth.oauth_helpers import confidential_client


def limited(
    services: Services, hasher: GatedHasher, address: Callable[[], str | None] = lambda: None, **rates: str
) -> ClientRegistry:
    limits = dataclasses.replace(
        services.rate_limits,
        **{name: Limit(name.replace("_", "-"), parse_rate(rate)) for name, rate in rates.items()},
    )
    client_limits = ClientAuthLimits(FailureLimiter(services.storage, services.clock), limits, address)
    return ClientRegistry(services.resources, hasher, "root", "root-secret", client_limits)


async def test_one_client_has_one_secret_verified_at_a_time(services: Services) -> None:
    await confidential_client(services)
    hasher = GatedHasher(threads=2)
    registry = limited(services, hasher, client_auth_client="off")
    await registry.get("app")
    hasher.hold()
    attempts = [asyncio.ensure_future(registry.authenticate("app", f"wrong {n}")) for n in range(3)]
    assert await asyncio.to_thread(hasher.entered.wait, 5)
    # A second thread is free, yet the next secret waits for its turn: wrong secrets naming one
    # client hold one hashing thread at most, and leave the others to sign-ins.
    assert not await asyncio.to_thread(hasher.reached, 2, 0.5)
    hasher.release()
    assert await asyncio.gather(*attempts) == [None, None, None]
    assert hasher.verifications == 3


async def test_a_burst_runs_no_more_verifications_than_the_limit(services: Services) -> None:
    await confidential_client(services)
    hasher = GatedHasher()
    registry = limited(services, hasher, client_auth_client="3/minute")
    await registry.get("app")
    attempts = [asyncio.ensure_future(registry.authenticate("app", f"wrong {n}")) for n in range(5)]
    outcomes = await asyncio.gather(*attempts, return_exceptions=True)
    assert outcomes[:3] == [None, None, None]
    for refused in outcomes[3:]:
        assert isinstance(refused, RateLimited)
        assert (refused.limit, refused.retry_after) == ("client-auth-client", 60)
    # Only the first refusal of the window is the one worth a log line.
    assert [refused.first for refused in outcomes[3:]] == [True, False]  # type: ignore[union-attr]
    assert hasher.verifications == 3
    with pytest.raises(RateLimited):
        await registry.authenticate("app", "wrong again")
    assert hasher.verifications == 3


async def test_an_address_past_its_limit_is_refused_before_the_client_is_looked_up(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    await confidential_client(services)
    hasher = GatedHasher()
    # The address the HTTP layer would name: the last one here.
    addresses = ["203.0.113.1"]
    registry = limited(
        services, hasher, lambda: addresses[-1], client_auth_ip="2/minute", client_auth_client="off"
    )
    assert await registry.authenticate("nobody", "x") is None
    assert await registry.authenticate("app", "wrong") is None
    lookups: list[str] = []
    find = services.resources.find

    async def counted_find(resource_type: str, id: str) -> object:
        lookups.append(id)
        return await find(resource_type, id)

    monkeypatch.setattr(services.resources, "find", counted_find)
    with pytest.raises(RateLimited):
        await registry.authenticate("someone-else", "x")
    assert (lookups, hasher.verifications) == ([], 1)
    # The root client's secret too, right as it is: refused before it is compared.
    with pytest.raises(RateLimited):
        await registry.authenticate("root", "root-secret")
    addresses.append("203.0.113.2")
    assert await registry.authenticate("someone-else", "x") is None
    assert lookups == ["someone-else"]


async def test_a_failure_counts_at_once_not_when_its_write_returns(services: Services) -> None:
    limiter = FailureLimiter(services.storage, services.clock)
    keys = [(Limit("client-auth-client", parse_rate("1/minute")), "app")]
    limiter.check(keys)
    counting = asyncio.ensure_future(limiter.failed(keys))
    # The failure's write is under way: an attempt starting now must already see it.
    await asyncio.sleep(0)
    assert not counting.done()
    with pytest.raises(RateLimited) as refused:
        limiter.check(keys)
    assert refused.value.retry_after == 60
    await counting
    with pytest.raises(RateLimited):
        limiter.check(keys)
    stored = await services.storage.record_get(RATE_KIND, _record_key("client-auth-client", "app"))
    assert stored is not None
    assert stored.expires_at == services.clock() + timedelta(seconds=60)


async def test_keys_whose_windows_ended_are_forgotten(services: Services) -> None:
    limiter = FailureLimiter(services.storage, services.clock)
    limit = Limit("client-auth-ip", parse_rate("5/minute"))
    await limiter.failed([(limit, "203.0.113.1")])
    assert not limiter.idle
    services.clock.advance(60)
    # Any check after the window has ended forgets it: the process is idle again, and client
    # authentication no longer works out addresses.
    limiter.check([(limit, "198.51.100.1")])
    assert limiter.idle
