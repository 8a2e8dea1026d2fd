"""The hashing queue is bounded: work past the threads and the queue is refused at once, not queued."""

from __future__ import annotations

import asyncio

import pytest

from fhirauth.auth.passwords import HashingBusy
from tests.auth.hashers import GatedHasher


async def test_work_past_the_thread_and_the_queue_is_refused_at_once() -> None:
    hasher = GatedHasher(threads=1, queue=1)
    stored = hasher.hash("secret")
    hasher.hold()
    running = asyncio.ensure_future(hasher.verify_async(stored, "secret"))
    waiting = asyncio.ensure_future(hasher.verify_async(stored, "wrong"))
    await asyncio.to_thread(hasher.entered.wait, 5)
    # Every kind of hashing work shares the one bound.
    for refused in (
        hasher.verify_async(stored, "secret"),
        hasher.verify_dummy_async(),
        hasher.hash_async("new password"),
    ):
        with pytest.raises(HashingBusy) as busy:
            await refused
        assert busy.value.retry_after == 1
    assert not waiting.done()
    hasher.release()
    assert (await running, await waiting) == (True, False)
    # The room is given back: work is admitted again.
    assert await hasher.verify_async(stored, "secret") is True
    assert hasher.verifications == 3


async def test_refused_work_leaves_its_room_to_the_next() -> None:
    hasher = GatedHasher(threads=1, queue=0)
    stored = hasher.hash("secret")
    hasher.hold()
    running = asyncio.ensure_future(hasher.verify_async(stored, "secret"))
    await asyncio.to_thread(hasher.entered.wait, 5)
    for _ in range(3):
        with pytest.raises(HashingBusy):
            await hasher.verify_async(stored, "secret")
    hasher.release()
    assert await running is True
    assert await hasher.verify_async(stored, "secret") is True


async def test_a_cancelled_wait_gives_its_room_back() -> None:
    hasher = GatedHasher(threads=1, queue=1)
    stored = hasher.hash("secret")
    hasher.hold()
    running = asyncio.ensure_future(hasher.verify_async(stored, "secret"))
    await asyncio.to_thread(hasher.entered.wait, 5)
    waiting = asyncio.ensure_future(hasher.verify_async(stored, "secret"))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # The cancelled request's place in the queue is free again.
    queued = asyncio.ensure_future(hasher.verify_async(stored, "secret"))
    await asyncio.sleep(0)
    assert not queued.done()
    hasher.release()
    assert (await running, await queued) == (True, True)


async def test_the_queue_holds_32_hashes_per_thread_by_default() -> None:
    hasher = GatedHasher(threads=2)
    stored = hasher.hash("secret")
    hasher.hold()
    admitted = [asyncio.ensure_future(hasher.verify_async(stored, "secret")) for _ in range(2 + 64)]
    await asyncio.to_thread(hasher.entered.wait, 5)
    await asyncio.sleep(0)
    assert not any(task.done() for task in admitted)
    with pytest.raises(HashingBusy):
        await hasher.verify_async(stored, "secret")
    hasher.release()
    assert all(await asyncio.gather(*admitted))
