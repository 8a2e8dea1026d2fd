"""A real PasswordHasher for tests that count its Argon2id runs or need its threads held busy."""

from __future__ import annotations

import threading

from fhirauth.auth.passwords import PasswordHasher

# Long enough for any test to reach its release; short enough that a test stuck on a held
# verification fails instead of hanging.
_HOLD_SECONDS = 5.0


class GatedHasher(PasswordHasher):
    """Argon2id at test-sized cost, counting every verification (real or dummy) it runs.

    After `hold()`, verifications that start wait in their hashing thread until `release()`, so a
    test can keep every thread busy; `entered` is set when the first of them has started.
    """

    def __init__(self, *, threads: int | None = None, queue: int | None = None) -> None:
        super().__init__(memory_cost=64, time_cost=1, threads=threads, queue=queue)
        self.entered = threading.Event()
        self._open = threading.Event()
        self._open.set()
        self._counted = threading.Condition()
        self.verifications = 0

    def hold(self) -> None:
        self.entered.clear()
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def reached(self, verifications: int, timeout: float) -> bool:
        """Whether `verifications` have started within `timeout` seconds."""
        with self._counted:
            return self._counted.wait_for(lambda: self.verifications >= verifications, timeout)

    def verify(self, stored_hash: str, password: str) -> bool:
        with self._counted:
            self.verifications += 1
            self._counted.notify_all()
        if not self._open.is_set():
            self.entered.set()
            assert self._open.wait(_HOLD_SECONDS), "a held verification was never released"
        return super().verify(stored_hash, password)
