"""A backend that cannot be used reports StorageUnavailable, and soon."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from fhirauth.clock import ManualClock
from fhirauth.storage.backends import open_storage
from fhirauth.storage.base import Storage, StorageUnavailable


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _seconds_until_unavailable(call: Callable[[], Awaitable[object]]) -> float:
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        await call()
    return time.monotonic() - started


async def test_mongo_at_a_closed_port_is_unavailable_within_two_and_a_half_seconds() -> None:
    storage = open_storage(f"mongodb://127.0.0.1:{_closed_port()}/fhirauth", ManualClock())
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: storage.start(()),
        storage.ping,
        lambda: storage.get("User", "u1"),
        lambda: storage.record_incr("attempts", "ann", expires_at=ManualClock()()),
    ]
    # Concurrently, so the suite waits one server-selection timeout rather than four.
    seconds = await asyncio.gather(*(_seconds_until_unavailable(call) for call in calls))
    await storage.close()
    assert max(seconds) < 2.5


async def test_sqlite_in_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    storage: Storage = open_storage(f"sqlite:///{tmp_path / 'missing' / 'fhirauth.db'}", ManualClock())
    with pytest.raises(StorageUnavailable, match="unable to open database file"):
        await storage.start(())
    # Start can be retried once the directory is there (the app retries in the background).
    (tmp_path / "missing").mkdir()
    await storage.start(())
    await storage.ping()
    await storage.close()
