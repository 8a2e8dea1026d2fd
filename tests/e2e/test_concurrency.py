"""If-Match under real concurrency: 50 racing PUTs against one uvicorn server of 1 or 2 workers."""

from __future__ import annotations

import asyncio

import httpx2
import pytest
from support.server import ROOT_CLIENT_SECRET, LiveServerFactory, StorageFor

RACERS = 50


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("backend", ["sqlite", "mongo"])
async def test_one_of_many_conditional_puts_wins(
    backend: str, workers: int, live_server_factory: LiveServerFactory, storage_for: StorageFor
) -> None:
    server = live_server_factory(storage=storage_for(backend), workers=workers)
    limits = httpx2.Limits(max_connections=RACERS)
    async with httpx2.AsyncClient(
        base_url=server.url, auth=("root", ROOT_CLIENT_SECRET), limits=limits, timeout=30.0
    ) as client:
        created = await client.put("/User/racer", json={"resourceType": "User", "email": "racer@example.com"})
        assert created.status_code == 201
        assert created.json()["meta"]["versionId"] == "1"

        bodies = [
            {"resourceType": "User", "email": "racer@example.com", "name": {"givenName": f"racer-{n}"}}
            for n in range(RACERS)
        ]
        responses = await asyncio.gather(
            *(client.put("/User/racer", json=body, headers={"If-Match": 'W/"1"'}) for body in bodies)
        )

        statuses = [response.status_code for response in responses]
        assert sorted(statuses) == [200] + [412] * (RACERS - 1)
        winner = statuses.index(200)
        assert responses[winner].json()["meta"]["versionId"] == "2"
        assert responses[winner].headers["ETag"] == 'W/"2"'
        for response in responses:
            if response.status_code == 412:
                assert response.json()["issue"][0]["code"] == "conflict"

        final = (await client.get("/User/racer")).json()
        assert final["meta"]["versionId"] == "2"
        assert final["name"] == {"givenName": f"racer-{winner}"}

        history = (await client.get("/User/racer/_history")).json()
        assert history["total"] == 2
        assert [entry["response"]["etag"] for entry in history["entry"]] == ['W/"2"', 'W/"1"']
