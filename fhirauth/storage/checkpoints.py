"""WAL checkpoints for a SQLite file, run by a thread of their own instead of inside a request's COMMIT.

SQLite's automatic checkpoint runs in the COMMIT that crosses the threshold: it copies pages into the
database file and fsyncs it on the event-loop thread, stalling every request behind it. The serving
connection turns it off and this thread, with its own connection, checkpoints instead; the driver
releases the GIL while SQLite works, so the copying runs on another core.

A PASSIVE checkpoint never waits for anyone, so under a steady stream of commits it never catches up
with the last frame, and only a fully copied WAL is restarted from its beginning by the next writer.
Once the WAL holds more than `restart_frames` frames, a RESTART checkpoint therefore holds the writers
back for the little that the PASSIVE one left, so the next commit writes from the start of the file
again and the file stays near that bound. (TRUNCATE would also give back the disk space, but cutting a
file of tens of MiB stalled the writers for 0.2–0.9 s where RESTART took at most 75 ms.)
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger("fhirauth.storage")

INTERVAL_SECONDS = 0.25
# 4,096 frames of 4 KiB pages: 16 MiB of WAL, reached in about 0.2 s of back-to-back Session creates.
RESTART_FRAMES = 4096
# A RESTART waits at most this long for writers and readers of other processes, then tries next time.
_BUSY_TIMEOUT_SECONDS = 1.0


class Checkpointer:
    """Checkpoints the WAL of `path` every `interval` seconds until `stop()`.

    `writers` is the lock this process's writes hold around their transactions. A RESTART needs
    SQLite's write lock, and SQLite's busy handler only polls for it (after 1, 2, 5, 10… ms): against
    back-to-back commits it lost for over a second while the WAL kept growing. Holding `writers` makes
    this process's writers wait for the RESTART instead; other processes' are still polled for.
    """

    def __init__(
        self,
        path: str,
        writers: threading.Lock,
        *,
        interval: float = INTERVAL_SECONDS,
        restart_frames: int = RESTART_FRAMES,
    ) -> None:
        self.path = path
        self._writers = writers
        self.interval = interval
        self.restart_frames = restart_frames
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sqlite-checkpoint {path}", daemon=True)
        self._db: sqlite3.Connection | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def checkpoint(self) -> None:
        """One pass: copy what the WAL holds, and restart it when it has grown past the bound."""
        db = self._connection()
        _busy, frames, _copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames > self.restart_frames:
            # Copy what came in during the first pass without blocking anyone, so that the blocking
            # one only has a short tail left to copy.
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            with self._writers:
                db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()

    def _run(self) -> None:
        try:
            while not self._stopping.wait(self.interval):
                try:
                    self.checkpoint()
                except sqlite3.Error as error:
                    # The serving connection reports an unusable file; here it only waits for the next pass.
                    log.warning("WAL checkpoint of %s failed: %s", self.path, error)
        finally:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
            )
        return self._db
