"""One passkey ceremony finished many times at once on `fhirauth serve --workers 2`: the challenge is a
storage record taken by the finish, so exactly one finish succeeds, whichever worker serves it."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import httpx2
import pytest
from support.server import ROOT_CLIENT_SECRET, LiveServerFactory, StorageFor
from support.webauthn_key import SoftKey

PASSWORD = "correct horse battery staple"
BASE = "/app/auth/two-factor/passkeys"
RACERS = 20
NO_RATE_LIMITS = {"FHIRAUTH_RATE_LIMIT_TOKEN_IP": "off", "FHIRAUTH_RATE_LIMIT_TWO_FACTOR_IP": "off"}


def seed_bundle(path: Path) -> Path:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "request": {"method": "PUT", "url": "/Client/app"},
                "resource": {
                    "resourceType": "Client",
                    "first_party": True,
                    "secret": "app-secret",
                    "grant_types": ["password"],
                },
            },
            {
                "request": {"method": "PUT", "url": "/User/ann"},
                "resource": {"resourceType": "User", "email": "ann@example.org", "password": PASSWORD},
            },
        ],
    }
    path.write_text(json.dumps(bundle))
    return path


@pytest.mark.parametrize("backend", ["sqlite", "mongo"])
async def test_racing_finishes_of_one_ceremony_exactly_one_wins(
    backend: str, live_server_factory: LiveServerFactory, storage_for: StorageFor, tmp_path: Path
) -> None:
    server = live_server_factory(
        storage=storage_for(backend),
        workers=2,
        seed=[seed_bundle(tmp_path / "seed.json")],
        env=NO_RATE_LIMITS,
    )
    key = SoftKey(server.url)
    limits = httpx2.Limits(max_connections=RACERS)
    async with httpx2.AsyncClient(base_url=server.url, limits=limits, timeout=60.0) as client:
        form = {
            "grant_type": "password",
            "username": "ann@example.org",
            "password": PASSWORD,
            "client_id": "app",
            "client_secret": "app-secret",
        }
        token = (await client.post("/auth/token", data=form)).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        options = (await client.post(f"{BASE}/registration/options", json={}, headers=auth)).json()[
            "publicKey"
        ]
        created = await client.post(
            f"{BASE}/registration", json={"name": "Laptop", "credential": key.create(options)}, headers=auth
        )
        assert created.status_code == 201, created.text
        options = (await client.post(f"{BASE}/authentication/options", json={}, headers=auth)).json()[
            "publicKey"
        ]
        assertion = key.get(options)
        raced = await asyncio.gather(
            *(
                client.post(f"{BASE}/authentication", json={"credential": assertion}, headers=auth)
                for _ in range(RACERS)
            )
        )
        statuses = Counter(response.status_code for response in raced)
        assert statuses == {200: 1, 422: RACERS - 1}, [r.text for r in raced]
        assert {r.json()["error"] for r in raced if r.status_code == 422} == {"challenge_invalid"}
        stored = (
            await client.get(f"/WebAuthnCredential/{created.json()['id']}", auth=("root", ROOT_CLIENT_SECRET))
        ).json()
        assert stored["signCount"] == 1
        assert stored["meta"]["versionId"] == "2"
