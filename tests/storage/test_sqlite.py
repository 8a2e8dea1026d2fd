"""What only SQLite has: query plans, and several connections (worker processes) on one file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fhirauth.clock import ManualClock
from fhirauth.storage.base import Create, Filter, Index, Query, Replace, Stored, VersionConflict
from fhirauth.storage.sqlite import SQLiteStorage


@pytest.fixture
async def sqlite(indexes: tuple[Index, ...]) -> AsyncIterator[SQLiteStorage]:
    storage = SQLiteStorage(":memory:", ManualClock())
    await storage.start(indexes)
    yield storage
    await storage.close()


@pytest.mark.parametrize(
    ("resource_type", "filters", "index"),
    [
        ("User", (Filter("email", ("ann@example.org",)),), "unique index User email"),
        ("User", (Filter("email", ("ann@example.org", "bob@example.org")),), "unique index User email"),
        ("User", (Filter("active", (True,)), Filter("name.family", ("Smith",))), "index User name.family"),
        ("Session", (Filter("token", ("t1",)),), "index Session token"),
        ("Session", (Filter("token", ("t1", "t2")),), "index Session token"),
    ],
)
def test_search_on_an_indexed_path_uses_the_index(
    sqlite: SQLiteStorage, resource_type: str, filters: tuple[Filter, ...], index: str
) -> None:
    plan = sqlite.query_plan(resource_type, Query(filters=filters))
    # Page first, then count; a unique index with one value needs no sort.
    searches = [line for line in plan if line.startswith("SEARCH")]
    assert searches == [f"SEARCH resources USING INDEX {index} (<expr>=?)"] * 2


def test_search_without_filters_walks_the_type_in_the_primary_key(sqlite: SQLiteStorage) -> None:
    plan = sqlite.query_plan("User", Query())
    assert plan == ["SEARCH resources USING INDEX sqlite_autoindex_resources_1 (type=?)"] * 2


async def test_two_connections_on_one_file_share_data_and_version_checks(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    first, second = SQLiteStorage(path, ManualClock()), SQLiteStorage(path, ManualClock())
    await first.start(())
    await second.start(())
    await first.write([Create({"resourceType": "User", "id": "u1", "meta": {"versionId": "1"}})])
    version_2 = {"resourceType": "User", "id": "u1", "meta": {"versionId": "2"}, "by": "second"}
    await second.write([Replace(version_2, expected_version=1)])
    with pytest.raises(VersionConflict):
        await first.write([Replace({**version_2, "by": "first"}, expected_version=1)])
    assert await first.get("User", "u1") == Stored(version_2)
    await first.close()
    await second.close()
