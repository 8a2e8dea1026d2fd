"""Which SQLite errors mean the store cannot be used (503), as opposed to a statement being wrong."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from fhirauth.storage.base import StorageUnavailable

# Primary result codes that say the store cannot be used.
_UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PERM,
    }
)


@contextmanager
def unavailable() -> Iterator[None]:
    """Turn the errors of an unusable store into StorageUnavailable."""
    try:
        yield
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _UNAVAILABLE_CODES:
            raise StorageUnavailable(f"SQLite database unusable: {exc}") from exc
        raise
