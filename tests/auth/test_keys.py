"""The signing key set: made once, kept sealed in storage, shared by racing workers, published public-only."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from support.server import free_port

from fhirauth.auth.keys import KEY, KIND, REFRESH_SECONDS, RELOAD_SECONDS, SigningKeys
from fhirauth.clock import ManualClock
from fhirauth.secretbox import SecretBox, SecretBoxError, is_encrypted
from fhirauth.services import Services
from fhirauth.storage.backends import open_storage
from fhirauth.storage.base import Record, Storage, StorageUnavailable

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}


async def test_first_load_stores_one_sealed_key(services: Services) -> None:
    await services.keys.load()
    record = await services.storage.record_get(KIND, KEY)
    assert record is not None
    (entry,) = record.document["keys"]
    assert set(entry) == {"kid", "created", "private"}
    assert entry["created"] == "2026-01-01T00:00:00.000Z"
    assert is_encrypted(entry["private"])
    assert "PRIVATE KEY" not in entry["private"]


def _rs256(jwks: dict[str, Any]) -> list[dict[str, Any]]:
    """The RS256 keys of a published set (tests/auth/test_signing_algs.py covers the other algorithms)."""
    return [key for key in jwks["keys"] if key["alg"] == "RS256"]


async def test_jwks_publishes_the_public_key_only_with_its_thumbprint_as_kid(services: Services) -> None:
    (key,) = _rs256(await services.keys.jwks())
    assert PRIVATE_MEMBERS.isdisjoint(key)
    assert {key["kty"], key["alg"], key["use"], key["e"]} == {"RSA", "RS256", "sig", "AQAB"}
    assert RSAKey.import_key(key).thumbprint() == key["kid"]


async def test_a_restart_loads_the_same_key(services: Services, clock: ManualClock) -> None:
    first = await services.keys.jwks()
    again = SigningKeys(services.storage, services.box, clock)
    assert await again.jwks() == first


async def test_racing_workers_end_up_with_one_key(services: Services, clock: ManualClock) -> None:
    workers = [SigningKeys(services.storage, services.box, clock) for _ in range(4)]
    await asyncio.gather(*(worker.load() for worker in workers))
    sets = [await worker.jwks() for worker in workers]
    assert all(each == sets[0] for each in sets)
    record = await services.storage.record_get(KIND, KEY)
    assert record is not None and record.rev == 1
    assert [entry["kid"] for entry in record.document["keys"]] == [sets[0]["keys"][0]["kid"]]


async def test_another_master_secret_cannot_open_the_stored_key(
    services: Services, clock: ManualClock
) -> None:
    await services.keys.load()
    stranger = SigningKeys(services.storage, SecretBox(["another-master-secret"]), clock)
    with pytest.raises(SecretBoxError, match="No master secret with key id"):
        await stranger.load()


async def test_signed_tokens_verify_with_the_published_set(services: Services) -> None:
    token = await services.keys.sign({"sub": "ann", "iss": "http://issuer.test"})
    published = KeySet.import_key_set(await services.keys.jwks())
    decoded = jwt.decode(token, published, algorithms=["RS256"])
    assert decoded.claims == {"sub": "ann", "iss": "http://issuer.test"}
    assert decoded.header == {"alg": "RS256", "typ": "JWT", "kid": published.keys[0].kid}


async def test_concurrent_signatures_each_verify(services: Services) -> None:
    claims = [{"sub": f"user{n}", "scope": "openid profile", "exp": 1767229200 + n} for n in range(8)]
    tokens = await asyncio.gather(*(services.keys.sign(c) for c in claims))
    published = KeySet.import_key_set(await services.keys.jwks())
    assert [jwt.decode(token, published, algorithms=["RS256"]).claims for token in tokens] == claims


async def test_callers_waiting_for_a_first_load_that_storage_failed_fail_with_it(
    clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MongoDB at a port nobody listens on: each call fails after its server selection timeout.
    storage = open_storage(f"mongodb://127.0.0.1:{free_port()}/keys", clock)
    reads = 0
    record_get = storage.record_get

    async def counted(kind: str, key: str) -> Record | None:
        nonlocal reads
        reads += 1
        return await record_get(kind, key)

    monkeypatch.setattr(storage, "record_get", counted)
    signing_keys = SigningKeys(storage, SecretBox(["keys-test-master-secret"]), clock)
    waiting = await asyncio.gather(
        signing_keys.load(),
        signing_keys.jwks(),
        signing_keys.sign({"sub": "ann"}),
        signing_keys.jwks(),
        return_exceptions=True,
    )
    # One storage timeout for all four: in turn, the fourth answered after four of them.
    assert [type(outcome) for outcome in waiting] == [StorageUnavailable] * 4
    assert reads == 1
    # A caller that comes after the failure asks storage again.
    with pytest.raises(StorageUnavailable):
        await signing_keys.jwks()
    assert reads == 2
    await storage.close()


class _Reads:
    """Counts a storage's key set reads; holds them while `gate` is clear, and waits for them to end."""

    def __init__(
        self, storage: Storage, monkeypatch: pytest.MonkeyPatch, first: Record | None = None
    ) -> None:
        self.started = 0
        self.finished = 0
        self.gate = asyncio.Event()
        self.gate.set()
        record_get = storage.record_get

        async def counted(kind: str, key: str) -> Record | None:
            self.started += 1
            try:
                await self.gate.wait()
                # The first read answers from elsewhere: keys loaded before storage went down.
                if first is not None and self.started == 1:
                    return first
                return await record_get(kind, key)
            finally:
                self.finished += 1

        monkeypatch.setattr(storage, "record_get", counted)

    async def settled(self) -> None:
        async with asyncio.timeout(5):
            while self.finished < self.started:
                await asyncio.sleep(0.01)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_busy_worker_signs_and_publishes_at_once_with_the_keys_it_holds_while_storage_is_down(
    services: Services, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await services.keys.load()
    loaded = await services.storage.record_get(KIND, KEY)
    # MongoDB at a port nobody listens on: each read fails after its server selection timeout.
    storage = open_storage(f"mongodb://127.0.0.1:{free_port()}/keys", clock)
    reads = _Reads(storage, monkeypatch, first=loaded)
    signing_keys = SigningKeys(storage, services.box, clock)
    published = await signing_keys.jwks()
    (kid,) = [key["kid"] for key in _rs256(published)]
    verifier = KeySet.import_key_set(published)
    # A request a second, twice through the reload interval: before, the one at RELOAD_SECONDS waited
    # for the failed read.
    for second in range(1, 2 * RELOAD_SECONDS + 1):
        clock.advance(1)
        started = time.perf_counter()
        answers = await asyncio.gather(
            signing_keys.sign({"sub": "ann"}), signing_keys.jwks(), signing_keys.sign({"sub": "bob"})
        )
        assert time.perf_counter() - started < 0.3, second
        assert answers[1] == published
        assert {jwt.decode(token, verifier).header["kid"] for token in answers[::2]} == {kid}
        await reads.settled()
    # The load, then one background read each REFRESH_SECONDS, however many requests found the set old.
    assert reads.started == 1 + 2 * RELOAD_SECONDS // REFRESH_SECONDS
    await signing_keys.close()
    await storage.close()


async def test_a_stale_worker_signs_at_once_and_publishes_another_workers_rotation_once_reread(
    services: Services, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = SigningKeys(services.storage, services.box, clock)
    idle = SigningKeys(services.storage, services.box, clock)
    (old,) = _rs256(await worker.jwks())
    assert _rs256(await idle.jwks()) == [old]
    (rotation,) = await services.keys.rotate(600, ("RS256",))
    reads = _Reads(services.storage, monkeypatch)
    reads.gate.clear()
    clock.advance(REFRESH_SECONDS)
    # The background read is held: the requests answer from the set held, and start no other read.
    token = await worker.sign({"sub": "ann"})
    assert jwt.decode(token, KeySet.import_key_set({"keys": [old]})).header["kid"] == old["kid"]
    assert _rs256(await worker.jwks()) == [old]
    # Signing no longer awaits a thread: the background read starts at the loop's next turn.
    await asyncio.sleep(0)
    assert reads.started == 1
    reads.gate.set()
    await reads.settled()
    # Newest first, the old key still published for the tokens it signed.
    assert [key["kid"] for key in _rs256(await worker.jwks())] == [rotation.kid, old["kid"]]
    assert reads.started == 1
    # A worker whose set is RELOAD_SECONDS old reads before it answers: a set that old may lack the key
    # another server has started signing with.
    clock.advance(RELOAD_SECONDS - REFRESH_SECONDS)
    assert [key["kid"] for key in _rs256(await idle.jwks())] == [rotation.kid, old["kid"]]
    assert reads.started == 2
    await worker.close()


async def test_closing_cancels_a_background_read_in_flight(
    services: Services, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    published = await services.keys.jwks()
    reads = _Reads(services.storage, monkeypatch)
    reads.gate.clear()
    clock.advance(REFRESH_SECONDS)
    assert await services.keys.jwks() == published
    await asyncio.sleep(0)
    assert reads.started == 1
    await services.keys.close()
    assert reads.finished == 1
    reads.gate.set()
