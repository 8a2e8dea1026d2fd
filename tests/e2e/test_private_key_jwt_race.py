"""A client assertion is spent once under real concurrency: `fhirauth serve --workers 2` over HTTP,
on both backends. The jti is a create-only storage record, so of requests racing with one assertion
on two workers exactly one gets a token."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from support.server import LiveServerFactory, StorageFor

KEY = RSAKey.generate_key(2048, private=True, parameters={"kid": "race-1"})
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
RACERS = 20
PAIRS = 10
# A burst of refusals from one address would reach the failure limit; this test is about the jti.
NO_RATE_LIMITS = {"FHIRAUTH_RATE_LIMIT_TOKEN_IP": "off", "FHIRAUTH_RATE_LIMIT_CLIENT_AUTH_IP": "off"}


def seed_bundle(path: Path) -> Path:
    client = {
        "resourceType": "Client",
        "grant_types": ["client_credentials"],
        "jwks": {"keys": [KEY.as_dict(private=False)]},
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "PUT", "url": "/Client/backend"}, "resource": client}],
    }
    path.write_text(json.dumps(bundle))
    return path


def assertion(base_url: str) -> str:
    claims = {
        "iss": "backend",
        "sub": "backend",
        # A live server's base URL is its own (support/server.py).
        "aud": f"{base_url}/auth/token",
        "exp": int(time.time()) + 240,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode({"alg": "RS384", "typ": "JWT", "kid": KEY.kid}, claims, KEY, algorithms=["RS384"])


async def token(client: httpx2.AsyncClient, signed: str) -> httpx2.Response:
    form = {
        "grant_type": "client_credentials",
        "scope": "system/User.rs",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": signed,
    }
    return await client.post("/auth/token", data=form)


@pytest.mark.parametrize("backend", ["sqlite", "mongo"])
async def test_racing_requests_with_one_assertion_get_one_token(
    backend: str, live_server_factory: LiveServerFactory, storage_for: StorageFor, tmp_path: Path
) -> None:
    server = live_server_factory(
        storage=storage_for(backend),
        workers=2,
        seed=[seed_bundle(tmp_path / "seed.json")],
        env=NO_RATE_LIMITS,
    )
    limits = httpx2.Limits(max_connections=RACERS)
    async with httpx2.AsyncClient(base_url=server.url, limits=limits, timeout=60.0) as client:
        signed = assertion(server.url)
        raced = await asyncio.gather(*(token(client, signed) for _ in range(RACERS)))
        assert Counter(response.status_code for response in raced) == {200: 1, 401: RACERS - 1}
        refusals = {response.json()["error_description"] for response in raced if response.status_code == 401}
        assert refusals == {"This client assertion was used before ('jti')"}
        # Two at a time, as two workers most often take them: one each, every time.
        for _ in range(PAIRS):
            signed = assertion(server.url)
            pair = await asyncio.gather(token(client, signed), token(client, signed))
            assert sorted(response.status_code for response in pair) == [200, 401]
        # The spent assertion stays spent; a new one works.
        assert (await token(client, signed)).status_code == 401
        assert (await token(client, assertion(server.url))).status_code == 200
