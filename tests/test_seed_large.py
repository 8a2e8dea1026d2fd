"""Seed files are the operator's own: a dataset far beyond a request's key budget loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fhirauth.app import INDEXES, build_services
from fhirauth.clock import ManualClock
from fhirauth.resources.structure import MAX_KEYS
from fhirauth.seeding import SeedError, seed_file
from fhirauth.storage.backends import open_storage
from fhirauth.storage.base import Query
from tests.api.conftest import settings_for


async def test_a_bundle_beyond_the_request_key_budget_seeds(tmp_path: Path) -> None:
    users = 2000
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "User",
                    "id": f"u{i}",
                    "email": f"u{i}@example.org",
                    "data": {"n": i},
                }
            }
            for i in range(users)
        ],
    }
    assert users * 6 > MAX_KEYS
    path = tmp_path / "users.json"
    path.write_text(json.dumps(bundle))
    clock = ManualClock()
    storage = open_storage("sqlite://:memory:", clock)
    await storage.start(INDEXES)
    try:
        services = build_services(settings_for("sqlite://:memory:"), storage, clock)
        await seed_file(services.bundles, path)
        page = await storage.search("User", Query(limit=0))
        assert page.total == users
        # Still refused in a seed file: keys that would reach the database as operators.
        path.write_text(
            json.dumps({**bundle, "entry": [{"resource": {"resourceType": "User", "$where": 1}}]})
        )
        with pytest.raises(SeedError, match=r"must not start with '\$'"):
            await seed_file(services.bundles, path)
    finally:
        await storage.close()
