"""The purge loop removes expired records on its schedule and leaves the live ones."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from fhirauth.clock import ManualClock
from fhirauth.maintenance import purge_expired_records
from fhirauth.storage.backends import open_storage


async def test_expired_records_are_purged_each_interval() -> None:
    clock = ManualClock()
    storage = open_storage("sqlite://:memory:", clock)
    await storage.start([])
    await storage.record_set("rate", "old", {"n": 1}, expires_at=clock() + timedelta(seconds=30))
    await storage.record_set("rate", "young", {"n": 1}, expires_at=clock() + timedelta(seconds=300))
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        # The injected clock moves instead of real time; the third wait ends the loop.
        if len(slept) == 2:
            raise asyncio.CancelledError
        slept.append(seconds)
        clock.advance(seconds)

    with pytest.raises(asyncio.CancelledError):
        await purge_expired_records(storage, clock, interval=60, sleep=sleep)

    assert slept == [60, 60]
    assert await storage.purge_expired(clock()) == 0  # the loop already took "old"
    assert await storage.record_get("rate", "young") is not None
    await storage.close()
