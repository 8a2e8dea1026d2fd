from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable

import anyio
import argon2
import pytest

from fhirauth.auth.passwords import PasswordHasher

hasher = PasswordHasher()


def test_hash_uses_owasp_argon2id_parameters() -> None:
    stored = hasher.hash("correct horse")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    params = argon2.extract_parameters(stored)
    assert (params.salt_len, params.hash_len) == (16, 32)
    assert hasher.hash("correct horse") != stored


def test_verify() -> None:
    stored = hasher.hash("correct horse")
    assert hasher.verify(stored, "correct horse") is True
    assert hasher.verify(stored, "correct horsE") is False
    assert hasher.verify(stored, "") is False


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plaintext",
        "$argon2id$garbage",
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$",
        "$argon2id$v=19$m=19456,t=2,p=1$0U9LzRDgdZbLCkjQndPRSQ$cCpJPM+tCmrPm9LyG0/YZxYdOzdQZfOlEaSketyZPlc",
        "$argon2i$v=19$m=19456,t=2,p=1$0U9LzRDgdZbLCkjQndPRSQ$cCpJPM+tCmrPm9LyG0/YZxYdOzdQZfOlEaSketyZPlc",
        "$argon2id$v=19$m=19456,t=2,p=1$ünï$cCpJPM",
    ],
)
def test_verify_never_raises(stored: str) -> None:
    assert hasher.verify(stored, "correct horse") is False


def test_is_hash() -> None:
    assert hasher.is_hash(hasher.hash("x"))
    assert not hasher.is_hash("correct horse")
    assert not hasher.is_hash("$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo")
    assert not hasher.is_hash("$argon2id$v=19$m=19456,t=2$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo")


def test_planted_hash_with_huge_cost_is_not_a_hash() -> None:
    bomb = "$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA"
    assert not hasher.is_hash(bomb)
    started = time.perf_counter()
    assert hasher.verify(bomb, "x") is False
    assert time.perf_counter() - started < 0.01


def test_imported_hash_with_other_parameters_verifies_and_needs_rehash() -> None:
    imported = argon2.PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("old password")
    assert hasher.is_hash(imported)
    assert hasher.verify(imported, "old password") is True
    assert hasher.needs_rehash(imported) is True
    assert hasher.needs_rehash(hasher.hash("x")) is False


async def test_async_variants() -> None:
    stored = await hasher.hash_async("correct horse")
    assert await hasher.verify_async(stored, "correct horse") is True
    assert await hasher.verify_async(stored, "wrong") is False


async def test_async_verify_leaves_the_event_loop_free() -> None:
    stored = hasher.hash("correct horse")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(ticker)
        assert await hasher.verify_async(stored, "correct horse") is True
        tasks.cancel_scope.cancel()
    assert ticks > 10


async def test_dummy_verify_costs_about_a_real_verify() -> None:
    stored = hasher.hash("correct horse")

    async def median(action: Callable[[], Awaitable[object]]) -> float:
        durations = []
        for _ in range(5):
            started = time.perf_counter()
            await action()
            durations.append(time.perf_counter() - started)
        return sorted(durations)[2]

    real = await median(lambda: hasher.verify_async(stored, "wrong"))
    dummy = await median(hasher.verify_dummy_async)
    assert 0.5 < dummy / real < 2


class CountingHasher(PasswordHasher):
    def __init__(self, threads: int) -> None:
        self.active = 0
        self.most_active = 0
        self._count_lock = threading.Lock()
        super().__init__(threads=threads)

    def verify(self, stored_hash: str, password: str) -> bool:
        with self._count_lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            return super().verify(stored_hash, password)
        finally:
            with self._count_lock:
                self.active -= 1


async def test_hashes_run_at_most_one_per_thread_slot() -> None:
    counting = CountingHasher(threads=2)
    stored = counting.hash("correct horse")
    async with anyio.create_task_group() as tasks:
        for _ in range(8):
            tasks.start_soon(counting.verify_async, stored, "wrong")
    assert counting.most_active == 2
