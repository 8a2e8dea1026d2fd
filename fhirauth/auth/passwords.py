"""Password hashing: Argon2id at the OWASP Password Storage Cheat Sheet parameters.

argon2-cffi releases the GIL, so the async variants run the work in a worker thread and the event
loop keeps serving while a login hashes.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import ClassVar, TypeVar

import argon2
from anyio import CapacityLimiter, to_thread
from argon2.exceptions import InvalidHashError, VerificationError

from fhirauth.errors import Issue, Unavailable
from fhirauth.security import random_token

T = TypeVar("T")
Verify = Callable[[str, str], Awaitable[bool]]

# OWASP: m=19 MiB, t=2, p=1. Spelled out because argon2-cffi's own default (64 MiB, t=3, p=4) costs
# five times as much and would cap a two-core box at about a dozen logins a second.
MEMORY_COST_KIB = 19456
TIME_COST = 2
PARALLELISM = 1

# An imported hash is verified with its own parameters; these bounds keep a planted hash from
# turning every login attempt into a memory or CPU bomb.
_MAX_MEMORY_COST_KIB = 262144
_MAX_TIME_COST = 10
_MAX_PARALLELISM = 8
_QUEUE_PER_THREAD = 32


class HashingBusy(Unavailable):
    """Every hashing thread is taken and the queue is full. A 503 like any other Unavailable, so that
    a batch Bundle refuses only the entry that needed a hash; each face answers it in its own format,
    with Retry-After (fhirauth/http/limits.py)."""

    # Retry-After counts whole seconds, and a full queue (by default) empties within one.
    retry_after: ClassVar[int] = 1

    def __init__(self) -> None:
        message = "The server is busy; try again in 1 second"
        super().__init__(message, issues=[Issue(message, "transient", severity="fatal")])


class PasswordHasher:
    def __init__(
        self,
        *,
        memory_cost: int = MEMORY_COST_KIB,
        time_cost: int = TIME_COST,
        parallelism: int = PARALLELISM,
        threads: int | None = None,
        queue: int | None = None,
    ) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=argon2.Type.ID,
        )
        # One hash per core at a time. anyio's shared pool would run up to 40, holding 40 x 19 MiB
        # while they fight over the cores: no faster (measured 70-73 vs 75-82 verifies/s on two
        # cores, and 31/s while its threads warm up), and a login burst could exhaust memory.
        threads = threads or os.cpu_count() or 1
        self._limiter = CapacityLimiter(threads)
        # Hashes admitted (running or waiting for a thread) and how many may be. Past that, waiting
        # only grows: unbounded, a burst queued minutes of work that every later login waited behind,
        # for clients long gone. Refused at once, the client is told to come back. By default the
        # queue holds 32 hashes a thread, about 0.8 s of work at ~25 ms each: a burst of sign-ins is
        # served within a second, and a longer wait is refused.
        self._admitted = 0
        self._room = threads + (_QUEUE_PER_THREAD * threads if queue is None else queue)
        # Made up front so that the first unknown-user login costs the same as every other one.
        self._dummy_hash = self.hash(random_token())

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored_hash: str, password: str) -> bool:
        """True when `password` matches; False for a mismatch or a hash that is not ours to check."""
        if not self.is_hash(stored_hash):
            return False
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """Whether a verified hash was made with other parameters and should be replaced."""
        return self._hasher.check_needs_rehash(stored_hash)

    def is_hash(self, value: str) -> bool:
        """Whether `value` is already an Argon2id hash (kept as is, e.g. when a dataset is restored)."""
        if not value.isascii() or not value.startswith("$argon2id$"):
            return False
        try:
            params = argon2.extract_parameters(value)
        except InvalidHashError:
            return False
        return (
            params.version == argon2.low_level.ARGON2_VERSION
            and params.memory_cost <= _MAX_MEMORY_COST_KIB
            and params.time_cost <= _MAX_TIME_COST
            and params.parallelism <= _MAX_PARALLELISM
        )

    async def hash_async(self, password: str) -> str:
        """`hash` in a hashing thread; HashingBusy when the threads and the queue are full."""
        return await self._run(self.hash, password)

    async def verify_async(self, stored_hash: str, password: str) -> bool:
        """`verify` in a hashing thread; HashingBusy when the threads and the queue are full."""
        return await self._run(self.verify, stored_hash, password)

    async def verify_dummy_async(self) -> None:
        """Spend what a real verify costs, for a login naming an unknown user.

        Answering such a login at once would tell an observer which accounts exist.
        """
        await self._run(self.verify, self._dummy_hash, random_token())

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[Verify]:
        """Room in the queue for one verification, taken now (HashingBusy when there is none): for a
        caller that must know the hash will run before it spends something on it, a lockout attempt."""
        if self._admitted >= self._room:
            raise HashingBusy()
        self._admitted += 1
        try:
            yield self._verify_in_thread
        finally:
            self._admitted -= 1

    async def _verify_in_thread(self, stored_hash: str, password: str) -> bool:
        return await self._in_thread(self.verify, stored_hash, password)

    async def _in_thread(self, work: Callable[..., T], *args: str) -> T:
        return await to_thread.run_sync(work, *args, limiter=self._limiter)

    async def _run(self, work: Callable[..., T], *args: str) -> T:
        async with self.admitted():
            return await self._in_thread(work, *args)
