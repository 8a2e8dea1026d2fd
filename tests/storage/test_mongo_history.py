"""MongoDB writes one resource without a transaction: its history entry first, then the compare-and-set
of the current document that makes it visible. An entry whose compare-and-set never came (a writer that
stopped between the two) is an orphan: invisible, taken over once stale, and purged."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from support.mongo import drop_database, with_database

from fhirauth.clock import ManualClock
from fhirauth.maintenance import purge_expired_records
from fhirauth.storage._time import to_micros
from fhirauth.storage.base import Create, Document, Index, Replace, Stored, VersionConflict
from fhirauth.storage.mongo import ORPHAN_SECONDS, MongoStorage


def user(id: str, version: int = 1, **fields: Any) -> Document:
    return {"resourceType": "User", "id": id, "meta": {"versionId": str(version)}, **fields}


@pytest.fixture
def url(mongo_uri: str) -> Iterator[str]:
    url = with_database(mongo_uri, f"test_{uuid.uuid4().hex}")
    yield url
    drop_database(url)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def storage(url: str, clock: ManualClock) -> AsyncIterator[MongoStorage]:
    storage = MongoStorage(url, clock)
    await storage.start([Index("User", "email", unique=True)])
    yield storage
    await storage.close()


def history_ids(url: str) -> list[str]:
    client: MongoClient[dict[str, Any]] = MongoClient(url)
    with client:
        return sorted(row["_id"] for row in client.get_default_database()["User_history"].find())


def leave_orphan(url: str, clock: ManualClock, document: Document) -> None:
    """What a writer leaves that stopped after its history entry, before its compare-and-set."""
    id, version = document["id"], int(document["meta"]["versionId"])
    client: MongoClient[dict[str, Any]] = MongoClient(url)
    with client:
        client.get_default_database()["User_history"].insert_one(
            {
                "_id": f"{id}/{version}",
                "rid": id,
                "v": version,
                "_deleted": False,
                "resource": document,
                "w": "a writer that stopped",
                "at": to_micros(clock()),
            }
        )


async def test_an_orphan_is_invisible_to_history_and_vread(
    storage: MongoStorage, url: str, clock: ManualClock
) -> None:
    await storage.write([Create(user("u1"))])
    leave_orphan(url, clock, user("u1", 2, note="never made current"))
    leave_orphan(url, clock, user("u9", 1, note="never created"))
    assert await storage.history("User", "u1") == [Stored(user("u1"))]
    assert await storage.get_version("User", "u1", 2) is None
    assert await storage.history("User", "u9") == []
    assert await storage.get_version("User", "u9", 1) is None


async def test_a_write_takes_over_an_orphan_once_it_is_stale(
    storage: MongoStorage, url: str, clock: ManualClock
) -> None:
    await storage.write([Create(user("u1"))])
    leave_orphan(url, clock, user("u1", 2, note="never made current"))
    # Until then it may be a writer still on its way to the compare-and-set: that one wins.
    with pytest.raises(VersionConflict):
        await storage.write([Replace(user("u1", 2, note="second"), expected_version=1)])
    clock.advance(ORPHAN_SECONDS + 1)
    await storage.write([Replace(user("u1", 2, note="second"), expected_version=1)])
    assert await storage.history("User", "u1") == [Stored(user("u1", 2, note="second")), Stored(user("u1"))]
    leave_orphan(url, clock, user("u9", 1, note="never created"))
    clock.advance(ORPHAN_SECONDS + 1)
    await storage.write([Create(user("u9"))])
    assert await storage.history("User", "u9") == [Stored(user("u9"))]


async def test_purge_orphans_removes_stale_orphans_only(
    storage: MongoStorage, url: str, clock: ManualClock
) -> None:
    await storage.write([Create(user("u1"))])
    await storage.write([Replace(user("u1", 2), expected_version=1)])
    leave_orphan(url, clock, user("u1", 3, note="never made current"))
    leave_orphan(url, clock, user("u9", 1, note="never created"))
    assert await storage.purge_orphans(clock()) == 0
    clock.advance(ORPHAN_SECONDS + 1)
    leave_orphan(url, clock, user("u8", 1, note="a writer still on its way"))
    assert await storage.purge_orphans(clock()) == 2
    assert history_ids(url) == ["u1/1", "u1/2", "u8/1"]


async def test_a_failed_compare_and_set_removes_its_own_entry(storage: MongoStorage, url: str) -> None:
    await storage.write([Create(user("u1", email="a@example.org"))])
    with pytest.raises(VersionConflict):
        await storage.write([Replace(user("u1", 2), expected_version=7)])
    with pytest.raises(Exception, match="already exists"):
        await storage.write([Create(user("u2", email="a@example.org"))])
    assert history_ids(url) == ["u1/1"]


async def test_the_maintenance_loop_purges_orphans(
    storage: MongoStorage, url: str, clock: ManualClock
) -> None:
    await storage.write([Create(user("u1"))])
    leave_orphan(url, clock, user("u1", 2, note="never made current"))
    waits = 0

    async def sleep(seconds: float) -> None:
        # The injected clock moves instead of real time; the third wait ends the loop.
        nonlocal waits
        waits += 1
        if waits == 3:
            raise asyncio.CancelledError
        clock.advance(seconds)

    with pytest.raises(asyncio.CancelledError):
        await purge_expired_records(storage, clock, interval=ORPHAN_SECONDS, sleep=sleep)
    assert history_ids(url) == ["u1/1"]
