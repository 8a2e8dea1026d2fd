"""A transaction Bundle reads the resources its entries name in one go, and plans exactly as before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from fhirauth.app import INDEXES, Services, build_services
from fhirauth.clock import ManualClock
from fhirauth.errors import Conflict
from fhirauth.resources.bundles import Target, _target
from fhirauth.storage.base import Stored
from fhirauth.storage.sqlite import SQLiteStorage
from tests.api.conftest import settings_for


@pytest.fixture
async def services() -> AsyncIterator[Services]:
    clock = ManualClock()
    storage = SQLiteStorage(":memory:", clock)
    await storage.start(INDEXES)
    yield build_services(settings_for("sqlite://:memory:"), storage, clock)
    await storage.close()


def entry(method: str, url: str, resource: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"request": {"method": method, "url": url}, **({"resource": resource} if resource else {})}


def user(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "User", **fields}


async def transaction(services: Services, *entries: dict[str, Any]) -> list[str]:
    result = await services.bundles.process(
        {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}, administrator=True
    )
    return [e["response"]["status"] for e in result["entry"]]


def versions(stored: Stored | None) -> tuple[str, bool] | None:
    return None if stored is None else (stored.document["meta"]["versionId"], stored.deleted)


async def test_a_transaction_reads_what_its_entries_name_in_one_statement(services: Services) -> None:
    await transaction(
        services,
        entry("PUT", "User/live", user(email="live@example.org")),
        entry("PUT", "User/gone", user(email="gone@example.org")),
    )
    await transaction(services, entry("DELETE", "User/gone"))
    storage = services.storage
    assert isinstance(storage, SQLiteStorage) and storage._connection is not None
    statements: list[str] = []
    storage._connection.set_trace_callback(statements.append)

    statuses = await transaction(
        services,
        entry("PUT", "User/live", user(email="live@example.org", userName="changed")),
        entry("PUT", "/User/gone", user(email="back@example.org")),
        entry("PUT", "User/new", user(email="new@example.org")),
        # The same resource again: the entry above, planned but not committed, is what it sees.
        entry("PUT", "User/new", user(email="new@example.org", userName="second")),
        entry("PUT", "http://example.org/User/other", user(email="other@example.org")),
    )

    assert statuses == ["200 OK", "201 Created", "201 Created", "200 OK", "201 Created"]
    reads = [s for s in statements if s.startswith("SELECT")]
    assert reads == [
        "SELECT id, deleted, doc FROM resources WHERE type = 'User' AND id IN ('live', 'gone', 'new')",
        # An absolute url is left to the planning, which reads as it always did (upsert: twice).
        "SELECT deleted, doc FROM resources WHERE type = 'User' AND id = 'other'",
        "SELECT deleted, doc FROM resources WHERE type = 'User' AND id = 'other'",
    ]
    found = await storage.get_many("User", ["live", "gone", "new", "other"])
    assert {id: versions(stored) for id, stored in found.items()} == {
        "live": ("2", False),
        "gone": ("3", False),
        "new": ("2", False),
        "other": ("1", False),
    }
    assert found["new"].document["userName"] == "second"
    assert found["live"].document["userName"] == "changed"


async def test_seeding_a_bundle_again_changes_nothing(services: Services) -> None:
    entries = [entry("PUT", f"User/u{n}", user(email=f"u{n}@example.org")) for n in range(20)]
    assert await transaction(services, *entries) == ["201 Created"] * 20
    assert await transaction(services, *entries) == ["200 OK"] * 20
    found = await services.storage.get_many("User", [f"u{n}" for n in range(20)])
    assert {versions(stored) for stored in found.values()} == {("1", False)}
    assert len(found) == 20


async def test_a_failing_entry_still_fails_the_whole_transaction(services: Services) -> None:
    await transaction(services, entry("PUT", "User/taken", user(email="taken@example.org")))
    with pytest.raises(Conflict) as caught:
        await transaction(
            services,
            entry("PUT", "User/fresh", user(email="fresh@example.org")),
            entry("PUT", "User/taken", user(email="taken@example.org")),
            entry("POST", "User", user(id="taken")),
        )
    assert caught.value.diagnostics == "Bundle.entry[2]: Resource User/taken already exists"
    assert await services.storage.get("User", "fresh") is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("User/u1", Target("User", "u1", [])),
        ("/User/u1/", Target("User", "u1", [])),
        ("http://example.org/User/u1", Target("User", "u1", [])),
        # An authority, not a type: as urlsplit reads it.
        ("//User/u1", Target("u1", None, [])),
        ("User?email=a%40example.org", Target("User", None, [("email", "a@example.org")])),
        ("User/u1#part", Target("User", "u1", [])),
    ],
)
def test_entry_urls_read_as_urlsplit_reads_them(url: str, expected: Target) -> None:
    assert _target(url, 0) == expected
