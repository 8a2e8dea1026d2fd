"""The signing key set: made once, kept sealed in storage, shared by racing workers, published public-only."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from support.server import free_port

from fhirauth.auth import keys
from fhirauth.auth.keys import KEY, KIND, SigningKeys
from fhirauth.clock import ManualClock
from fhirauth.secretbox import SecretBox, SecretBoxError, is_encrypted
from fhirauth.services import Services
from fhirauth.storage.backends import open_storage
from fhirauth.storage.base import Record, StorageUnavailable

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


async def test_jwks_publishes_the_public_key_only_with_its_thumbprint_as_kid(services: Services) -> None:
    (key,) = (await services.keys.jwks())["keys"]
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


async def test_signatures_are_made_off_the_event_loop_and_verify(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    signed_on: set[int] = set()
    encode = keys.jwt.encode

    def recording_encode(*args: Any, **kwargs: Any) -> str:
        signed_on.add(threading.get_ident())
        return encode(*args, **kwargs)

    monkeypatch.setattr(keys.jwt, "encode", recording_encode)
    claims = [{"sub": f"user{n}", "scope": "openid profile", "exp": 1767229200 + n} for n in range(8)]
    tokens = await asyncio.gather(*(services.keys.sign(c) for c in claims))
    assert signed_on and threading.get_ident() not in signed_on
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
