"""Signing-key rotation on both backends: published before it signs, old keys kept until their tokens
expire, then gone from the JWKS; other workers follow within RELOAD_SECONDS."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError
from joserfc.jwk import KeySet

from fhirauth.auth.keys import KEY, KIND, PUBLISH_AHEAD_SECONDS, RELOAD_SECONDS, SigningKeys
from fhirauth.auth.tokens import Issuance, longest_jwt_lifetime
from fhirauth.clock import ManualClock
from fhirauth.secretbox import SecretBox
from fhirauth.services import Services
from fhirauth.storage.base import StorageUnavailable

LIFETIME = 300
CLIENT = {
    "resourceType": "Client",
    "id": "api",
    "grant_types": ["client_credentials"],
    "auth": {"client_credentials": {"token_format": "jwt", "access_token_expiration": LIFETIME}},
}


def _header_kid(token: str) -> str:
    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


async def _kids(keys: SigningKeys) -> list[str]:
    """The published RS256 keys (tests/auth/test_signing_algs.py rotates the other algorithms)."""
    return [key["kid"] for key in (await keys.jwks())["keys"] if key["alg"] == "RS256"]


async def _issue(services: Services) -> str:
    stored = await services.resources.find("Client", "api")
    client = stored.document if stored else (await services.resources.create("Client", CLIENT)).resource
    return (await services.tokens.issue(Issuance(client=client, flow="client_credentials"))).access_token


async def _verifies(services: Services, token: str) -> bool:
    published = KeySet.import_key_set(await services.keys.jwks())
    try:
        jwt.decode(token, published, algorithms=["RS256"])
    except InvalidKeyIdError:
        return False
    return True


async def test_old_tokens_verify_until_they_expire_and_new_tokens_carry_the_new_kid(
    services: Services, clock: ManualClock
) -> None:
    before = await _issue(services)
    (old_kid,) = await _kids(services.keys)
    assert _header_kid(before) == old_kid

    (rotation,) = await services.keys.rotate(LIFETIME, ("RS256",))
    assert rotation.signs_from == clock() + timedelta(seconds=PUBLISH_AHEAD_SECONDS)
    assert rotation.retiring == {old_kid: rotation.signs_from + timedelta(seconds=LIFETIME)}
    assert rotation.pruned == []
    # Published at once, newest first; the old key still signs until signsFrom.
    assert await _kids(services.keys) == [rotation.kid, old_kid]
    assert await _verifies(services, before)
    assert _header_kid(await _issue(services)) == old_kid

    clock.advance(PUBLISH_AHEAD_SECONDS)
    after = await _issue(services)
    assert _header_kid(after) == rotation.kid
    assert await _verifies(services, before)
    assert await _verifies(services, after)
    # The last token the old key signed lives until exactly its retirement.
    last_old = jwt.decode(before, KeySet.import_key_set(await services.keys.jwks()), algorithms=["RS256"])
    assert last_old.claims["exp"] <= int(rotation.retiring[old_kid].timestamp())

    clock.advance(LIFETIME - 1)
    assert await _kids(services.keys) == [rotation.kid, old_kid]
    clock.advance(1)
    assert await _kids(services.keys) == [rotation.kid]
    assert not await _verifies(services, before)
    assert await _verifies(services, after)
    # The server itself refuses the old token too: it expired with its Session.
    assert await services.sessions.resolve(before) is None


async def test_other_workers_publish_the_new_key_within_the_reload_interval(
    services: Services, clock: ManualClock
) -> None:
    worker = SigningKeys(services.storage, services.box, clock)
    (old_kid,) = await _kids(worker)

    (rotation,) = await services.keys.rotate(LIFETIME, ("RS256",))
    clock.advance(RELOAD_SECONDS - 1)
    assert await _kids(worker) == [old_kid]
    clock.advance(1)
    assert await _kids(worker) == [rotation.kid, old_kid]
    assert _header_kid(await worker.sign({"sub": "ann"})) == old_kid
    clock.advance(PUBLISH_AHEAD_SECONDS - RELOAD_SECONDS)
    assert _header_kid(await worker.sign({"sub": "ann"})) == rotation.kid


async def test_a_second_rotation_prunes_retired_keys_and_keeps_the_others(
    services: Services, clock: ManualClock
) -> None:
    (first,) = await _kids(services.keys)
    (second,) = await services.keys.rotate(60, ("RS256",))
    clock.advance(PUBLISH_AHEAD_SECONDS + 60)
    (third,) = await services.keys.rotate(600, ("RS256",))
    assert third.pruned == [first]
    assert third.retiring == {second.kid: third.signs_from + timedelta(seconds=600)}
    record = await services.storage.record_get(KIND, KEY)
    assert record is not None
    assert [entry["kid"] for entry in record.document["keys"]] == [third.kid, second.kid]
    assert await _kids(services.keys) == [third.kid, second.kid]
    # A worker starting now reads the same set and signs with the key whose time has come.
    restarted = SigningKeys(services.storage, services.box, clock)
    assert await _kids(restarted) == [third.kid, second.kid]
    assert _header_kid(await restarted.sign({})) == second.kid


async def test_rotation_keeps_private_parts_sealed_and_refuses_a_negative_retirement(
    services: Services,
) -> None:
    await services.keys.rotate(0)
    record = await services.storage.record_get(KIND, KEY)
    assert record is not None
    for entry in record.document["keys"]:
        assert entry["private"].startswith(f"fa1:{services.box.primary_kid}:")
    with pytest.raises(ValueError, match="negative"):
        await services.keys.rotate(-1)


async def test_reseal_moves_private_parts_to_the_new_master_secret(
    services: Services, clock: ManualClock
) -> None:
    await services.keys.rotate(600)
    kids = await _kids(services.keys)
    both = SecretBox(["a-brand-new-master-secret", "oauth-test-master-secret"])
    keys = SigningKeys(services.storage, both, clock)
    # Two keys of each algorithm.
    assert await keys.reseal() == (6, 0)
    assert await keys.reseal() == (0, 6)
    only_new = SigningKeys(services.storage, SecretBox(["a-brand-new-master-secret"]), clock)
    assert await _kids(only_new) == kids


def test_the_longest_jwt_lifetime_counts_jwt_flows_only() -> None:
    opaque_long = {"id": "a", "auth": {"password": {"access_token_expiration": 86400}}}
    jwt_long = {
        "id": "b",
        "auth": {
            "authorization_code": {"token_format": "jwt", "access_token_expiration": 7200},
            "implicit": {"token_format": "jwt"},
        },
    }
    jwt_short = {
        "id": "c",
        "auth": {"client_credentials": {"token_format": "jwt", "access_token_expiration": 60}},
    }
    assert longest_jwt_lifetime([]) == 3600
    assert longest_jwt_lifetime([opaque_long, jwt_short]) == 3600
    assert longest_jwt_lifetime([opaque_long, jwt_long, jwt_short]) == 7200


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_last_key_set_read_is_published_while_storage_is_down(
    services: Services, clock: ManualClock
) -> None:
    published = await services.keys.jwks()
    await services.storage.close()
    clock.advance(RELOAD_SECONDS)
    assert await services.keys.jwks() == published
    fresh = SigningKeys(services.storage, services.box, clock)
    with pytest.raises(StorageUnavailable):
        await fresh.jwks()
