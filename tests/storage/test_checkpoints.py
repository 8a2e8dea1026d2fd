"""SQLite's WAL is checkpointed by a thread of each store, never by a request's COMMIT, and stays bounded."""

from __future__ import annotations

import threading
from pathlib import Path

from fhirauth.clock import ManualClock
from fhirauth.storage.base import Create, Document
from fhirauth.storage.sqlite import SQLiteStorage


def session(n: int) -> Document:
    return {"resourceType": "Session", "id": f"s{n}", "meta": {"versionId": "1"}, "token": f"t{n:06}" * 20}


FRAME_BYTES = 24 + 4096  # a frame header and a page


def frames_in_wal(wal: Path) -> int:
    """The frames the WAL file has room for: before a restart, the frames it holds."""
    return (wal.stat().st_size - 32) // FRAME_BYTES


def checkpoint_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("sqlite-checkpoint")]


async def test_a_file_store_checkpoints_in_a_thread_that_close_ends(tmp_path: Path) -> None:
    storage = SQLiteStorage(str(tmp_path / "x.db"), ManualClock())
    await storage.start(())
    await storage.start(())  # started twice, as the app's retry may: still one thread
    assert len(checkpoint_threads()) == 1
    checkpointer = storage.checkpointer
    assert checkpointer is not None and checkpointer.running
    await storage.close()
    assert not checkpointer.running
    assert checkpoint_threads() == []


async def test_an_in_memory_store_has_no_wal_and_no_thread() -> None:
    storage = SQLiteStorage(":memory:", ManualClock())
    await storage.start(())
    assert storage.checkpointer is None
    assert checkpoint_threads() == []
    await storage.close()


async def test_commits_leave_the_wal_to_the_checkpointer_after_which_it_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    wal = path.with_name("x.db-wal")
    # The thread waits an hour between passes, so the test runs the one pass itself.
    storage = SQLiteStorage(str(path), ManualClock(), checkpoint_interval=3600, restart_frames=100)
    await storage.start(())
    for n in range(1200):
        await storage.write([Create(session(n))])
    # SQLite's own checkpoint would have started the WAL over at 1,000 frames.
    grown = frames_in_wal(wal)
    assert grown > 2000
    assert storage.checkpointer is not None
    storage.checkpointer.checkpoint()
    for n in range(1200, 1800):
        await storage.write([Create(session(n))])
    # Written from the start of the file again, into the room the first 1,200 left.
    assert frames_in_wal(wal) == grown
    assert [n for n in range(1800) if await storage.get("Session", f"s{n}") is None] == []
    await storage.close()


async def test_the_wal_stays_bounded_under_sustained_writes(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    storage = SQLiteStorage(str(path), ManualClock(), checkpoint_interval=0.005, restart_frames=200)
    await storage.start(())
    wal = path.with_name("x.db-wal")
    largest = 0
    for n in range(6000):
        await storage.write([Create(session(n))])
        largest = max(largest, frames_in_wal(wal))
    await storage.close()
    # Unchecked, these commits fill some 13,000 frames (see the test above); a pass every 5 ms keeps a
    # few hundred, and some thousands while the machine is busy.
    assert largest < 6000
