"""Client secrets: one Argon2 verification per client, secret and version, however many requests ask at once."""

from __future__ import annotations

import asyncio

import pytest

from fhirauth.auth.client_auth import ClientAuthLimits
from fhirauth.auth.clients import ClientRegistry
from fhirauth.ratelimit import FailureLimiter
from fhirauth.services import Services
from tests.auth.oauth_helpers import SECRET, CountingHasher, confidential_client, put

Document = dict[str, object]


@pytest.fixture
def backend() -> str:
    """Verification sharing is process-local; storage only supplies the Client."""
    return "sqlite"


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


@pytest.fixture
def registry(services: Services, hasher: CountingHasher) -> ClientRegistry:
    limits = ClientAuthLimits(
        FailureLimiter(services.storage, services.clock), services.rate_limits, lambda: None
    )
    return ClientRegistry(services.resources, hasher, "root", "root-secret", limits)


async def ids(registry: ClientRegistry, secret: str, times: int) -> list[object]:
    found = await asyncio.gather(*(registry.authenticate("app", secret) for _ in range(times)))
    return [client["id"] if client is not None else None for client in found]


async def test_requests_arriving_together_share_one_verification(
    services: Services, registry: ClientRegistry, hasher: CountingHasher
) -> None:
    await confidential_client(services)
    assert await ids(registry, SECRET, 20) == ["app"] * 20
    assert hasher.verifications == 1
    # Remembered afterwards: no verification at all.
    assert await ids(registry, SECRET, 5) == ["app"] * 5
    assert hasher.verifications == 1


async def test_a_wrong_secret_is_shared_but_never_remembered(
    services: Services, registry: ClientRegistry, hasher: CountingHasher
) -> None:
    await confidential_client(services)
    assert await ids(registry, "wrong", 10) == [None] * 10
    assert hasher.verifications == 1
    assert await ids(registry, "wrong", 1) == [None]
    assert await ids(registry, "also wrong", 1) == [None]
    assert hasher.verifications == 3
    assert await ids(registry, SECRET, 1) == ["app"]
    assert hasher.verifications == 4


async def test_a_new_secret_is_verified_again(
    services: Services, registry: ClientRegistry, hasher: CountingHasher
) -> None:
    await confidential_client(services)
    assert await ids(registry, SECRET, 1) == ["app"]
    await confidential_client(services, secret="new-secret")
    assert await ids(registry, SECRET, 3) == [None] * 3
    assert await ids(registry, "new-secret", 3) == ["app"] * 3
    # The first secret, the old one against the new version, the new one.
    assert hasher.verifications == 3


async def test_a_caller_giving_up_leaves_the_shared_verification_running(
    services: Services, registry: ClientRegistry, hasher: CountingHasher
) -> None:
    await confidential_client(services)
    first = asyncio.ensure_future(registry.authenticate("app", SECRET))
    second = asyncio.ensure_future(registry.authenticate("app", SECRET))
    await asyncio.sleep(0)
    first.cancel()
    assert (await second) is not None
    assert first.cancelled()
    assert hasher.verifications == 1


async def test_a_client_without_a_secret_costs_no_verification(
    services: Services, registry: ClientRegistry, hasher: CountingHasher
) -> None:
    await put(services, "Client", "spa", grant_types=["password"])
    assert await registry.authenticate("spa", "anything") is None
    assert await registry.authenticate("nobody", "anything") is None
    assert hasher.verifications == 0


async def test_clients_are_read_once_and_forgotten_when_written(
    services: Services, registry: ClientRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    await confidential_client(services)
    reads: list[tuple[str, str]] = []
    find = services.resources.find

    async def counting_find(resource_type: str, id: str) -> object:
        reads.append((resource_type, id))
        return await find(resource_type, id)

    monkeypatch.setattr(services.resources, "find", counting_find)
    assert await ids(registry, SECRET, 3) == ["app"] * 3
    assert await registry.get("nobody") is None
    assert await registry.get("nobody") is None
    assert reads == [("Client", "app"), ("Client", "nobody")]
    await confidential_client(services, active=False)
    assert await registry.get("app") is None
    assert await ids(registry, SECRET, 1) == [None]
    assert reads == [("Client", "app"), ("Client", "nobody"), ("Client", "app")]
