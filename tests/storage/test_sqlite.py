"""What only SQLite has: query plans, several connections (worker processes) on one file, and the
layout of its history table."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fhirauth.clock import ManualClock
from fhirauth.storage.base import Create, Delete, Filter, Index, Query, Replace, Stored, VersionConflict
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


def user_version(version: int, **fields: str) -> dict[str, object]:
    return {"resourceType": "User", "id": "u1", "meta": {"versionId": str(version)}, **fields}


def history_rows(path: Path) -> list[tuple[int, int]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT version, deleted FROM history ORDER BY version").fetchall()


async def test_history_rows_hold_only_replaced_versions(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    storage = SQLiteStorage(str(path), ManualClock())
    await storage.start(())
    await storage.write([Create(user_version(1))])
    assert history_rows(path) == []
    await storage.write([Replace(user_version(2, by="b"), expected_version=1)])
    await storage.write([Delete(user_version(3), expected_version=2)])
    await storage.write([Create(user_version(4, by="d"), over_tombstone_version=3)])
    assert history_rows(path) == [(1, 0), (2, 0), (3, 1)]
    # A write that is refused archives nothing.
    with pytest.raises(VersionConflict):
        await storage.write([Replace(user_version(5), expected_version=2)])
    assert history_rows(path) == [(1, 0), (2, 0), (3, 1)]
    assert [(s.version, s.deleted) for s in await storage.history("User", "u1")] == [
        (4, False),
        (3, True),
        (2, False),
        (1, False),
    ]
    assert await storage.get_version("User", "u1", 4) == Stored(user_version(4, by="d"))
    assert await storage.get_version("User", "u1", 1) == Stored(user_version(1))
    await storage.close()


async def test_a_file_whose_history_also_holds_current_versions_reads_and_writes_as_before(
    tmp_path: Path,
) -> None:
    """Files written before the history table held only replaced versions have every version there."""
    path = tmp_path / "x.db"
    storage = SQLiteStorage(str(path), ManualClock())
    await storage.start(())
    await storage.write([Create(user_version(1))])
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO history SELECT type, id, version, deleted, doc FROM resources")
    assert [s.version for s in await storage.history("User", "u1")] == [1]
    await storage.write([Replace(user_version(2, by="b"), expected_version=1)])
    assert [s.version for s in await storage.history("User", "u1")] == [2, 1]
    assert await storage.get_version("User", "u1", 1) == Stored(user_version(1))
    assert history_rows(path) == [(1, 0)]
    await storage.close()
