"""Group commit: the writes a SQLite store is handed in one event-loop iteration share one COMMIT.

A COMMIT costs more than the statements before it (it writes every changed page to the WAL), and under
load many requests write in the same iteration. Each write is queued with a future; the first one of
an iteration schedules `flush` with `call_soon`, which runs them all, in order, in one BEGIN IMMEDIATE
… COMMIT, each inside a SAVEPOINT of its own so that a failing write is rolled back alone and the others
stay. A write of one statement needs no savepoint: SQLite undoes a failed statement by itself and the
transaction goes on. Only then are the futures resolved: no caller goes on before its write is
committed, and a failed COMMIT fails every write of the batch.

The statements run inside `flush`, not when queued, so the write lock is held only while SQLite works,
as before, and reads never see a write that is not committed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from fhirauth.storage.base import StorageUnavailable
from fhirauth.storage.sqlite_errors import unavailable

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], Any]


class _Queued(NamedTuple):
    work: Work
    # The work runs a single statement, whose failure SQLite undoes by itself: no savepoint.
    one_statement: bool
    future: asyncio.Future[Any]


class GroupCommit:
    def __init__(self, connection: Callable[[], sqlite3.Connection], writers: threading.Lock) -> None:
        self._connection = connection
        self._writers = writers
        self._queued: list[_Queued] = []

    async def run(self, work: Callable[[sqlite3.Connection], T], *, one_statement: bool = False) -> T:
        """Run `work` in the next batch and return its result once the batch is committed.
        `one_statement`: the work runs a single statement, whose failure SQLite undoes by itself."""
        loop = asyncio.get_running_loop()
        if not self._queued:
            loop.call_soon(self.flush)
        future: asyncio.Future[T] = loop.create_future()
        self._queued.append(_Queued(work, one_statement, future))
        return await future

    def flush(self) -> None:
        """Run and commit the queued writes now (a cancelled caller's write is dropped)."""
        batch = [queued for queued in self._queued if not queued.future.cancelled()]
        self._queued = []
        if not batch:
            return
        try:
            with self._writers, unavailable():
                outcomes = _commit(self._connection(), batch)
        except Exception as error:
            if len(batch) == 1:
                batch[0].future.set_exception(error)
                return
            for queued in batch:
                # One exception per caller: a raised exception collects its raiser's traceback.
                failed = StorageUnavailable(f"SQLite could not commit a batch of writes: {error}")
                failed.__cause__ = error
                queued.future.set_exception(failed)
            return
        for queued, (result, failure) in zip(batch, outcomes, strict=True):
            if failure is None:
                queued.future.set_result(result)
            else:
                queued.future.set_exception(failure)


def _commit(db: sqlite3.Connection, works: list[_Queued]) -> list[tuple[Any, Exception | None]]:
    """Each work's result or its own error, all committed in one transaction, or raise."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if len(works) == 1:
            # Alone in its batch, a write's error is the batch's: no savepoint needed.
            outcomes: list[tuple[Any, Exception | None]] = [(works[0].work(db), None)]
        else:
            outcomes = [_attempt(db, queued.work, queued.one_statement) for queued in works]
        db.execute("COMMIT")
    except BaseException:
        # SQLite rolls back by itself after some errors (disk full, I/O).
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return outcomes


def _attempt(db: sqlite3.Connection, work: Work, one_statement: bool) -> tuple[Any, Exception | None]:
    if not one_statement:
        db.execute("SAVEPOINT write")
    try:
        with unavailable():
            result = work(db)
    except Exception as error:
        if not db.in_transaction:
            # SQLite gave up the whole transaction (disk full, I/O error): the batch fails.
            raise
        if not one_statement:
            db.execute("ROLLBACK TO write")
            db.execute("RELEASE write")
        return None, error
    if not one_statement:
        db.execute("RELEASE write")
    return result, None
