"""The MongoDB backend on the wire: how many commands each contract call sends, and the write concern,
read concern and read preference every one of them carries."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from pymongo import ReadPreference, monitoring
from support.mongo import drop_database, with_database

from fhirauth.clock import ManualClock
from fhirauth.storage import mongo
from fhirauth.storage.base import (
    AlreadyExists,
    Create,
    Delete,
    Document,
    Filter,
    Index,
    Query,
    Replace,
    Stored,
    VersionConflict,
)
from fhirauth.storage.mongo import MongoStorage

INDEXES = (Index("User", "email", unique=True), Index("Session", "token"))
MAJORITY = {"w": "majority", "j": True}


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def take(self) -> list[str]:
        names = [next(iter(command)) for command in self.sent]
        self.sent.clear()
        return names


@pytest.fixture
async def watched(
    mongo_uri: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[MongoStorage, Commands, ManualClock]]:
    commands = Commands()
    # The backend's own client, with a listener beside its options: what it sends is what is counted.
    monkeypatch.setitem(mongo._CLIENT_OPTIONS, "event_listeners", [commands])
    url = with_database(mongo_uri, f"test_{uuid.uuid4().hex}")
    clock = ManualClock()
    storage = MongoStorage(url, clock)
    await storage.start(INDEXES)
    # The history index is made with a type's first write; made here, it stays out of the counts.
    await storage.write([Create(user("warm-up"))])
    commands.take()
    yield storage, commands, clock
    await storage.close()
    drop_database(url)


def user(id: str, version: int = 1, **fields: Any) -> Document:
    return {"resourceType": "User", "id": id, "meta": {"versionId": str(version)}, **fields}


async def test_a_read_by_id_is_one_command(watched: tuple[MongoStorage, Commands, ManualClock]) -> None:
    storage, commands, _clock = watched
    assert await storage.get("User", "warm-up") == Stored(user("warm-up"))
    assert commands.take() == ["find"]


async def test_a_search_whose_matches_fit_on_the_page_is_one_command(
    watched: tuple[MongoStorage, Commands, ManualClock],
) -> None:
    storage, commands, _clock = watched
    await storage.write(
        [Create(user("u1", email="a@example.org")), Create(user("u2", email="b@example.org"))]
    )
    commands.take()
    page = await storage.search("User", Query(filters=(Filter("email", ("a@example.org",)),)))
    assert (page.items, page.total) == ([user("u1", email="a@example.org")], 1)
    assert commands.take() == ["find"]
    # A later page that is not full ends the matches too: the total is its offset and its items.
    page = await storage.search("User", Query(offset=1, limit=5))
    assert (len(page.items), page.total) == (2, 3)
    assert commands.take() == ["find"]
    # A full page (or one past the end) cannot tell the total: that takes a count.
    page = await storage.search("User", Query(limit=2))
    assert (len(page.items), page.total) == (2, 3)
    assert commands.take() == ["find", "aggregate"]


async def test_a_single_write_is_two_commands_without_a_transaction(
    watched: tuple[MongoStorage, Commands, ManualClock],
) -> None:
    storage, commands, _clock = watched
    await storage.write([Create(user("u1"))])
    assert commands.take() == ["insert", "insert"]
    await storage.write([Replace(user("u1", 2), expected_version=1)])
    assert commands.take() == ["insert", "update"]
    await storage.write([Delete(user("u1", 3), expected_version=2)])
    assert commands.take() == ["insert", "update"]
    await storage.write([Create(user("u1", 4), over_tombstone_version=3)])
    assert commands.take() == ["insert", "update"]
    assert [stored.version for stored in await storage.history("User", "u1")] == [4, 3, 2, 1]


async def test_a_write_of_several_resources_is_one_transaction(
    watched: tuple[MongoStorage, Commands, ManualClock],
) -> None:
    storage, commands, _clock = watched
    await storage.write([Create(user("u1")), Create(user("u2"))])
    sent = list(commands.sent)
    assert commands.take() == ["update", "insert", "update", "insert", "commitTransaction"]
    assert all("txnNumber" in command for command in sent)
    assert sent[0]["readConcern"] == {"level": "snapshot"}
    assert sent[-1]["writeConcern"] == MAJORITY


async def test_record_calls_are_one_command_each(watched: tuple[MongoStorage, Commands, ManualClock]) -> None:
    storage, commands, clock = watched
    later = clock() + timedelta(minutes=5)
    assert await storage.record_put("code", "k", {"a": 1}, expected_rev=None, expires_at=later) == 1
    assert await storage.record_get("code", "k") is not None
    assert await storage.record_put("code", "k", {"a": 2}, expected_rev=1) == 2
    await storage.record_set("code", "s", {})
    assert await storage.record_take("code", "k") is not None
    await storage.record_delete("code", "s")
    assert commands.take() == ["update", "find", "update", "update", "findAndModify", "delete"]


async def test_every_command_asks_the_primary_for_majority(
    watched: tuple[MongoStorage, Commands, ManualClock],
) -> None:
    storage, commands, clock = watched
    later = clock() + timedelta(minutes=5)
    await storage.write([Create(user("u1", email="a@example.org"))])
    await storage.write([Replace(user("u1", 2, email="a@example.org"), expected_version=1)])
    with pytest.raises(VersionConflict):
        await storage.write([Replace(user("u1", 3), expected_version=1)])
    with pytest.raises(AlreadyExists):
        await storage.write([Create(user("u2", email="a@example.org"))])
    await storage.get("User", "u1")
    await storage.get_many("User", ["u1", "u2"])
    await storage.get_version("User", "u1", 1)
    await storage.history("User", "u1")
    await storage.search("User", Query(limit=1))
    await storage.find_one("Session", "token", "t", follow="user")
    await storage.record_put("code", "k", {}, expected_rev=None, expires_at=later)
    await storage.record_get("code", "k")
    await storage.record_incr("count", "k", expires_at=later)
    await storage.record_take("code", "k")
    await storage.purge_expired(clock())
    await storage.all_resources("User")
    reads = {"find", "aggregate", "count", "distinct"}
    writes = {"insert", "update", "delete", "findAndModify"}
    seen = set()
    for command in commands.sent:
        name = next(iter(command))
        seen.add(name)
        assert command.get("$readPreference", {"mode": "primary"}) == {"mode": "primary"}, command
        if name in reads:
            assert command["readConcern"] == {"level": "majority"}, command
        if name in writes:
            assert command["writeConcern"] == MAJORITY, command
    assert reads & seen and writes & seen


async def test_every_collection_handle_is_configured_explicitly(
    watched: tuple[MongoStorage, Commands, ManualClock],
) -> None:
    storage, _commands, _clock = watched
    await storage.write([Create({"resourceType": "Patient", "id": "p", "meta": {"versionId": "1"}})])
    await storage.record_get("code", "k")
    await storage.search("Session", Query())
    handles = storage.collection_handles()
    assert set(handles) >= {"User", "User_history", "Patient", "Patient_history", "Session", "_records"}
    for name, handle in handles.items():
        assert handle.write_concern.document == MAJORITY, name
        assert handle.read_concern.level == "majority", name
        assert handle.read_preference == ReadPreference.PRIMARY, name


async def test_a_search_by_id_reads_the_id_index(watched: tuple[MongoStorage, Commands, ManualClock]) -> None:
    storage, commands, _clock = watched
    await storage.search("User", Query(filters=(Filter("id", ("warm-up",)),), sort=(("id", True),)))
    (find,) = commands.sent
    assert find["filter"] == {"_deleted": False, "_id": {"$in": ["warm-up"]}}
    assert list(find["sort"].items()) == [("_id", -1)]
