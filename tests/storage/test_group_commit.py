"""SQLite commits the writes of one event-loop iteration together, and each write still stands alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from fhirauth.clock import ManualClock
from fhirauth.storage.base import (
    AlreadyExists,
    Create,
    Document,
    Index,
    Record,
    Replace,
    StorageUnavailable,
    Stored,
)
from fhirauth.storage.sqlite import SQLiteStorage


def user(id: str, **fields: object) -> Document:
    return {"resourceType": "User", "id": id, "meta": {"versionId": "1"}, **fields}


@pytest.fixture
async def sqlite() -> AsyncIterator[SQLiteStorage]:
    storage = SQLiteStorage(":memory:", ManualClock())
    await storage.start(())
    yield storage
    await storage.close()


@pytest.fixture
def statements(sqlite: SQLiteStorage) -> list[str]:
    """Every statement the store's connection runs from here on."""
    seen: list[str] = []
    assert sqlite._connection is not None
    sqlite._connection.set_trace_callback(seen.append)
    return seen


async def test_concurrent_writes_share_one_commit(sqlite: SQLiteStorage, statements: list[str]) -> None:
    clock = ManualClock()
    await asyncio.gather(
        *(sqlite.write([Create(user(f"u{n}"))]) for n in range(5)),
        *(sqlite.record_incr("attempts", "ann", expires_at=clock() + timedelta(minutes=1)) for _ in range(3)),
        sqlite.record_set("code", "c1", {"user": "u1"}),
    )
    assert statements.count("BEGIN IMMEDIATE") == 1
    assert statements.count("COMMIT") == 1
    assert [await sqlite.get("User", f"u{n}") for n in range(5)] == [Stored(user(f"u{n}")) for n in range(5)]
    assert await sqlite.record_get("code", "c1") == Record({"user": "u1"}, 1)
    counter = await sqlite.record_get("attempts", "ann")
    assert counter is not None and counter.rev == 3


async def test_writes_in_one_batch_see_each_other_in_order(sqlite: SQLiteStorage) -> None:
    clock = ManualClock()
    expiry = clock() + timedelta(minutes=1)
    counts = await asyncio.gather(
        *(sqlite.record_incr("attempts", "ann", expires_at=expiry) for _ in range(4))
    )
    assert counts == [1, 2, 3, 4]
    await sqlite.record_set("code", "c1", {"user": "u1"})
    taken = await asyncio.gather(sqlite.record_take("code", "c1"), sqlite.record_take("code", "c1"))
    assert taken == [Record({"user": "u1"}, 1), None]


async def test_a_failing_write_leaves_the_others_of_its_batch_committed_and_itself_absent(
    sqlite: SQLiteStorage, statements: list[str]
) -> None:
    await sqlite.write([Create(user("taken"))])
    statements.clear()
    results = await asyncio.gather(
        sqlite.write([Create(user("before"))]),
        # Its first Create succeeds inside the batch; its second fails, so both are rolled back.
        sqlite.write([Create(user("half")), Create(user("taken", email="new@example.org"))]),
        sqlite.write([Create(user("after"))]),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], AlreadyExists) and results[1].id == "taken"
    assert statements.count("COMMIT") == 1
    assert statements.count("SAVEPOINT write") == 1
    assert await sqlite.get("User", "before") == Stored(user("before"))
    assert await sqlite.get("User", "after") == Stored(user("after"))
    assert await sqlite.get("User", "half") is None
    assert await sqlite.get("User", "taken") == Stored(user("taken"))
    assert await sqlite.history("User", "half") == []


async def test_a_failing_statement_is_undone_alone_without_a_savepoint(tmp_path: Path) -> None:
    storage = SQLiteStorage(str(tmp_path / "x.db"), ManualClock())
    await storage.start([Index("User", "email", unique=True)])
    await storage.write([Create(user("ann", email="ann@example.org"))])
    assert storage._connection is not None
    statements: list[str] = []
    storage._connection.set_trace_callback(statements.append)
    results = await asyncio.gather(
        storage.write([Create(user("before"))]),
        # One INSERT, refused by the unique index after SQLite began it: SQLite undoes it by itself.
        storage.write([Create(user("copy", email="ann@example.org"))]),
        storage.record_set("code", "c1", {"user": "u1"}),
        # Two statements (archive, update): inside a savepoint, whose rollback takes both back.
        storage.write([Replace(user("ann", email="ann@example.org") | {"meta": {"versionId": "2"}}, 1)]),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None and results[3] is None
    assert isinstance(results[1], AlreadyExists) and results[1].id == "copy"
    assert statements.count("COMMIT") == 1
    assert statements.count("SAVEPOINT write") == 1
    assert await storage.get("User", "copy") is None
    assert await storage.history("User", "copy") == []
    assert await storage.get("User", "before") == Stored(user("before"))
    assert await storage.record_get("code", "c1") == Record({"user": "u1"}, 1)
    assert [s.version for s in await storage.history("User", "ann")] == [2, 1]
    await storage.close()


async def test_a_longer_write_failing_after_its_first_statement_is_undone_whole(tmp_path: Path) -> None:
    storage = SQLiteStorage(str(tmp_path / "x.db"), ManualClock())
    await storage.start([Index("User", "email", unique=True)])
    await storage.write(
        [Create(user("ann", email="ann@example.org")), Create(user("bob", email="bob@x.org"))]
    )
    bob_v2 = user("bob", email="ann@example.org") | {"meta": {"versionId": "2"}}
    results = await asyncio.gather(
        storage.record_set("code", "c1", {}),
        # Archives version 1, then the update is refused by the unique index: both are undone.
        storage.write([Replace(bob_v2, 1)]),
        storage.record_set("code", "c2", {}),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], AlreadyExists) and results[1].id == "bob"
    assert await storage.get("User", "bob") == Stored(user("bob", email="bob@x.org"))
    assert [s.document for s in await storage.history("User", "bob")] == [user("bob", email="bob@x.org")]
    assert storage._connection is not None
    archived = storage._connection.execute("SELECT count(*) FROM history WHERE id = 'bob'").fetchone()
    assert archived == (0,)
    await storage.close()


async def test_a_write_alone_in_its_batch_fails_as_before(sqlite: SQLiteStorage) -> None:
    await sqlite.write([Create(user("taken"))])
    with pytest.raises(AlreadyExists):
        await sqlite.write([Create(user("half")), Create(user("taken"))])
    assert await sqlite.get("User", "half") is None
    await sqlite.write([Create(user("half"))])
    assert await sqlite.get("User", "half") == Stored(user("half"))


async def test_a_failing_commit_fails_every_write_of_the_batch(sqlite: SQLiteStorage) -> None:
    db = sqlite._connection
    assert db is not None
    # A deferred foreign key is checked at COMMIT: a "poison" record makes the COMMIT itself fail.
    db.executescript(
        """PRAGMA foreign_keys = ON;
        CREATE TABLE parent (id TEXT PRIMARY KEY);
        CREATE TABLE child (parent TEXT REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);
        CREATE TRIGGER poison AFTER INSERT ON records WHEN NEW.kind = 'poison'
        BEGIN INSERT INTO child VALUES ('missing'); END;"""
    )
    results = await asyncio.gather(
        sqlite.write([Create(user("u1"))]),
        sqlite.record_set("poison", "p", {}),
        sqlite.write([Create(user("u2"))]),
        return_exceptions=True,
    )
    assert [type(result) for result in results] == [StorageUnavailable] * 3
    assert all("FOREIGN KEY constraint failed" in str(result) for result in results)
    assert await sqlite.get("User", "u1") is None
    assert await sqlite.get("User", "u2") is None
    assert await sqlite.record_get("poison", "p") is None
    # The store goes on working.
    await sqlite.write([Create(user("u3"))])
    assert await sqlite.get("User", "u3") == Stored(user("u3"))


async def test_a_caller_cancelled_before_the_commit_writes_nothing(sqlite: SQLiteStorage) -> None:
    cancelled = asyncio.ensure_future(sqlite.write([Create(user("gone"))]))
    kept = asyncio.ensure_future(sqlite.write([Create(user("kept"))]))
    await asyncio.sleep(0)  # both queued, the batch not yet run
    cancelled.cancel()
    await kept
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert await sqlite.get("User", "gone") is None
    assert await sqlite.get("User", "kept") == Stored(user("kept"))


async def test_close_commits_what_is_queued(tmp_path: Path) -> None:
    path = str(tmp_path / "x.db")
    storage = SQLiteStorage(path, ManualClock())
    await storage.start(())
    queued = asyncio.ensure_future(storage.write([Create(user("u1"))]))
    await asyncio.sleep(0)  # queued, the batch not yet run
    await storage.close()
    await queued
    reopened = SQLiteStorage(path, ManualClock())
    await reopened.start(())
    assert await reopened.get("User", "u1") == Stored(user("u1"))
    await reopened.close()
