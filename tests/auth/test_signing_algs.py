"""JWT signing with RS256 (the default), ES256 and EdDSA: a key set for each, made on first start,
published, rotated; tokens a relying party's library verifies against the published JWKS."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest
from authlib.oidc.core.util import create_half_hash
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import KeySet

from fhirauth.auth.keys import (
    ALGORITHM,
    ALGORITHMS,
    KEY,
    KIND,
    PUBLISH_AHEAD_SECONDS,
    SigningKeys,
    UnsupportedAlgorithm,
)
from fhirauth.auth.tokens import Issuance
from fhirauth.clock import ManualClock
from fhirauth.errors import Invalid
from fhirauth.secretbox import SecretBox
from fhirauth.services import Services

# Each algorithm's published members besides kid, use and alg: the public parts alone.
PUBLIC_MEMBERS = {
    "RS256": {"kty", "n", "e"},
    "ES256": {"kty", "crv", "x", "y"},
    "EdDSA": {"kty", "crv", "x"},
}
Document = dict[str, Any]
CURVES = {"ES256": "P-256", "EdDSA": "Ed25519"}
CLAIMS = {"iss": "http://issuer.test", "sub": "ann", "aud": "api", "exp": 1767229200, "scope": "système/*"}


def _header(token: str) -> dict[str, Any]:
    header = token.split(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))))


def _decode(token: str, jwks: dict[str, Any], alg: str) -> jwt.Token:
    published = KeySet.import_key_set(jwks)
    if alg == "EdDSA":
        # joserfc warns that RFC 9864 prefers "Ed25519"; verifiers know "EdDSA".
        with pytest.warns(SecurityWarning):
            return jwt.decode(token, published, algorithms=[alg])
    return jwt.decode(token, published, algorithms=[alg])


def test_rs256_is_the_default_and_every_algorithm_has_a_set() -> None:
    assert ALGORITHM == "RS256"
    assert ALGORITHMS == ("RS256", "ES256", "EdDSA")


async def test_first_start_makes_and_publishes_one_key_per_algorithm(services: Services) -> None:
    published = (await services.keys.jwks())["keys"]
    assert [key["alg"] for key in published] == list(ALGORITHMS)
    for key in published:
        assert key["use"] == "sig"
        assert set(key) - {"kid", "use", "alg"} == PUBLIC_MEMBERS[key["alg"]]
        if key["alg"] in CURVES:
            assert key["crv"] == CURVES[key["alg"]]
        assert KeySet.import_key_set({"keys": [key]}).keys[0].thumbprint() == key["kid"]
    record = await services.storage.record_get(KIND, KEY)
    assert record is not None
    assert {field: len(entries) for field, entries in record.document.items()} == {
        "keys": 1,
        "es256Keys": 1,
        "eddsaKeys": 1,
    }
    for entries in record.document.values():
        assert entries[0]["private"].startswith(f"fa1:{services.box.primary_kid}:")
        assert "PRIVATE KEY" not in entries[0]["private"]


@pytest.mark.parametrize("alg", ALGORITHMS)
async def test_each_algorithm_signs_what_the_published_set_verifies(services: Services, alg: str) -> None:
    token = await services.keys.sign(CLAIMS, alg)
    jwks = await services.keys.jwks()
    (kid,) = [key["kid"] for key in jwks["keys"] if key["alg"] == alg]
    decoded = _decode(token, jwks, alg)
    assert decoded.header == {"alg": alg, "typ": "JWT", "kid": kid}
    assert decoded.claims == CLAIMS
    signer = await services.keys.signer_for(alg)
    assert (signer.alg, signer.kid) == (alg, kid)
    assert _decode(signer.sign({"sub": "bob"}), jwks, alg).claims == {"sub": "bob"}


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("alg", ALGORITHMS)
async def test_half_hashes_use_the_signatures_hash(services: Services, alg: str) -> None:
    signer = await services.keys.signer_for(alg)
    access_token = "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"
    assert signer.half_hash(access_token) == create_half_hash(access_token, alg).decode("ascii")


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("alg", ["none", "HS256", "RS384", "ES384", "rs256", ""])
async def test_an_algorithm_without_keys_is_refused(services: Services, alg: str) -> None:
    with pytest.raises(UnsupportedAlgorithm, match="one of RS256, ES256, EdDSA"):
        await services.keys.signer_for(alg)
    with pytest.raises(UnsupportedAlgorithm):
        await services.keys.sign({"sub": "ann"}, alg)


async def test_a_store_of_rs256_keys_alone_gets_the_other_sets_and_keeps_its_own(
    services: Services, clock: ManualClock
) -> None:
    """A store written before ES256 and EdDSA were added: its RS256 set stays as it was and keeps
    signing; the new sets sign at once (no server could have signed with them before)."""
    await services.keys.load()
    record = await services.storage.record_get(KIND, KEY)
    assert record is not None
    rs256_only = {"keys": record.document["keys"]}
    await services.storage.record_delete(KIND, KEY)
    await services.storage.record_put(KIND, KEY, rs256_only, expected_rev=None)

    upgraded = SigningKeys(services.storage, services.box, clock)
    token = await upgraded.sign(CLAIMS, "ES256")
    stored = await services.storage.record_get(KIND, KEY)
    assert stored is not None
    assert stored.document["keys"] == rs256_only["keys"]
    assert set(stored.document) == {"keys", "es256Keys", "eddsaKeys"}
    jwks = await upgraded.jwks()
    assert [key["kid"] for key in jwks["keys"]][0] == rs256_only["keys"][0]["kid"]
    assert _decode(token, jwks, "ES256").claims == CLAIMS
    # Another worker reading the completed record adds nothing.
    again = SigningKeys(services.storage, services.box, clock)
    assert await again.jwks() == jwks
    assert (await services.storage.record_get(KIND, KEY)) == stored


async def test_rotation_gives_every_algorithm_a_new_key_that_signs_after_the_publish_ahead(
    services: Services, clock: ManualClock
) -> None:
    before = {alg: (await services.keys.signer_for(alg)).kid for alg in ALGORITHMS}
    rotations = await services.keys.rotate(300)
    assert [rotation.alg for rotation in rotations] == list(ALGORITHMS)
    for rotation in rotations:
        assert rotation.retiring == {before[rotation.alg]: rotation.signs_from + timedelta(seconds=300)}
    published = [(key["alg"], key["kid"]) for key in (await services.keys.jwks())["keys"]]
    assert published == [
        pair
        for rotation in rotations
        for pair in ((rotation.alg, rotation.kid), (rotation.alg, before[rotation.alg]))
    ]
    assert {alg: (await services.keys.signer_for(alg)).kid for alg in ALGORITHMS} == before
    clock.advance(PUBLISH_AHEAD_SECONDS)
    assert {alg: (await services.keys.signer_for(alg)).kid for alg in ALGORITHMS} == {
        rotation.alg: rotation.kid for rotation in rotations
    }
    clock.advance(300)
    assert [key["kid"] for key in (await services.keys.jwks())["keys"]] == [r.kid for r in rotations]


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_rotating_one_algorithm_leaves_the_others_alone(services: Services) -> None:
    before = await services.keys.jwks()
    (rotation,) = await services.keys.rotate(60, ("ES256",))
    assert rotation.alg == "ES256"
    after = [key["kid"] for key in (await services.keys.jwks())["keys"]]
    kids = {key["alg"]: key["kid"] for key in before["keys"]}
    assert after == [kids["RS256"], rotation.kid, kids["ES256"], kids["EdDSA"]]
    with pytest.raises(UnsupportedAlgorithm):
        await services.keys.rotate(60, ("HS256",))


async def test_a_restart_opens_every_set_and_reseal_moves_them_all(
    services: Services, clock: ManualClock
) -> None:
    jwks = await services.keys.jwks()
    both = SecretBox(["a-brand-new-master-secret", "oauth-test-master-secret"])
    assert await SigningKeys(services.storage, both, clock).reseal() == (3, 0)
    only_new = SigningKeys(services.storage, SecretBox(["a-brand-new-master-secret"]), clock)
    assert await only_new.jwks() == jwks
    assert await only_new.reseal() == (0, 3)


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
async def test_a_client_flow_picks_its_access_tokens_algorithm(services: Services, alg: str) -> None:
    client = {
        "resourceType": "Client",
        "id": "api",
        "grant_types": ["client_credentials"],
        "auth": {"client_credentials": {"token_format": "jwt", "token_signing_alg": alg}},
    }
    created = (await services.resources.create("Client", client)).resource
    issued = await services.tokens.issue(Issuance(client=created, flow="client_credentials"))
    assert _header(issued.access_token)["alg"] == alg
    claims = _decode(issued.access_token, await services.keys.jwks(), alg).claims
    assert claims["sub"] == "api" and claims["iss"] == "http://issuer.test"
    assert (await services.sessions.resolve(issued.access_token)) is not None


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    "fields",
    [
        {"auth": {"client_credentials": {"token_format": "jwt", "token_signing_alg": "HS256"}}},
        {"auth": {"client_credentials": {"token_format": "jwt", "token_signing_alg": "none"}}},
        {"id_token_signed_response_alg": "RS384"},
    ],
)
async def test_a_client_may_name_only_an_algorithm_with_keys(services: Services, fields: Document) -> None:
    with pytest.raises(Invalid):
        await services.resources.create("Client", {"resourceType": "Client", "id": "api", **fields})
    assert await services.resources.find("Client", "api") is None
