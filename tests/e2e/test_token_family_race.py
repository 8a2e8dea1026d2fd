"""Refreshes racing with one refresh token on `fhirauth serve --workers 2`: exactly one rotation wins,
every other attempt counts as a reuse, and the family (the winner's new tokens included) is revoked."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import httpx2
import pytest
from support.server import ROOT_CLIENT_SECRET, LiveServerFactory, StorageFor

PASSWORD = "correct horse battery staple"
RACERS = 20
APP = {"client_id": "app", "client_secret": "app-secret"}
# The burst comes from one address; the per-address token limit is not what this test is about.
NO_RATE_LIMITS = {"FHIRAUTH_RATE_LIMIT_TOKEN_IP": "off"}
REUSED = "Refresh token was already used; the tokens issued from it are revoked"
REVOKED = "Refresh token was revoked"


def seed_bundle(path: Path) -> Path:
    def put(resource_type: str, id: str, **fields: object) -> dict[str, object]:
        return {
            "request": {"method": "PUT", "url": f"/{resource_type}/{id}"},
            "resource": {"resourceType": resource_type, **fields},
        }

    entries = [
        put(
            "Client",
            "app",
            secret="app-secret",
            grant_types=["password", "refresh_token"],
            auth={"password": {"refresh_token": True}},
        ),
        put("User", "ann", email="ann@example.org", password=PASSWORD),
    ]
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
    return path


async def refresh(client: httpx2.AsyncClient, refresh_token: str) -> httpx2.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, **APP}
    return await client.post("/auth/token", data=form)


@pytest.mark.parametrize("backend", ["sqlite", "mongo"])
async def test_racing_refreshes_have_one_winner_and_revoke_the_family(
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
        form = {"grant_type": "password", "username": "ann@example.org", "password": PASSWORD, **APP}
        first = (await client.post("/auth/token", data=form)).json()
        # Open every connection first, so the refreshes leave together instead of one per handshake.
        await asyncio.gather(*(client.get("/health") for _ in range(RACERS)))

        raced = await asyncio.gather(*(refresh(client, first["refresh_token"]) for _ in range(RACERS)))

        # Exactly one refresh takes the token; every other one is a reuse. The one that took it is
        # answered with new tokens, or, when a reuse revoked the family before its swap landed (the
        # window is wider on MongoDB), with that revocation: either way no live token comes out.
        answers = Counter(r.json().get("error_description", "tokens") for r in raced)
        assert answers in ({"tokens": 1, REUSED: RACERS - 1}, {REVOKED: 1, REUSED: RACERS - 1}), answers
        assert [r.status_code for r in raced] == [200 if "access_token" in r.json() else 400 for r in raced]
        winners = [r.json() for r in raced if r.status_code == 200]
        if not winners:
            await assert_reuses_audited(client)
            return
        (winner,) = winners
        userinfo = await client.get(
            "/auth/userinfo", headers={"Authorization": f"Bearer {winner['access_token']}"}
        )
        assert userinfo.status_code == 401
        after = await refresh(client, winner["refresh_token"])
        assert after.json() == {"error": "invalid_grant", "error_description": REVOKED}
        await assert_reuses_audited(client)


async def assert_reuses_audited(client: httpx2.AsyncClient) -> None:
    audit = await client.get(
        "/AuditEvent",
        params={"action": "refresh-token-reuse", "_count": "100"},
        auth=("root", ROOT_CLIENT_SECRET),
    )
    assert audit.json()["total"] == RACERS - 1
