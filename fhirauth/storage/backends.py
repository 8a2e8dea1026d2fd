"""The storage URL picks the backend from one table; each backend is imported only when used, so SQLite
deployments never import pymongo."""

from __future__ import annotations

from collections.abc import Callable

from fhirauth.clock import Clock
from fhirauth.storage.base import Storage


def _sqlite(url: str, clock: Clock) -> Storage:
    from fhirauth.storage.sqlite import SQLiteStorage

    return SQLiteStorage(sqlite_path(url), clock)


def _mongo(url: str, clock: Clock) -> Storage:
    from fhirauth.storage.mongo import MongoStorage

    return MongoStorage(url, clock)


BACKENDS: dict[str, Callable[[str, Clock], Storage]] = {
    "sqlite": _sqlite,
    "mongodb": _mongo,
    "mongodb+srv": _mongo,
}


def open_storage(url: str, clock: Clock) -> Storage:
    """The backend for `url`, not yet started: `await storage.start(indexes)` connects."""
    # Only the scheme goes into the messages: the rest of a URL may hold a password.
    scheme, separator, _rest = url.partition("://")
    if not separator:
        raise ValueError(f"Storage URL needs a scheme, one of {', '.join(BACKENDS)}")
    opener = BACKENDS.get(scheme.lower())
    if opener is None:
        raise ValueError(f"Unsupported storage URL scheme {scheme!r}; expected one of {', '.join(BACKENDS)}")
    return opener(url, clock)


def sqlite_path(url: str) -> str:
    """`sqlite:///relative.db`, `sqlite:////absolute.db` and `sqlite://:memory:` to a file path."""
    rest = url.partition("://")[2]
    if rest == ":memory:":
        return rest
    if rest.startswith("/") and len(rest) > 1:
        return rest[1:]
    raise ValueError(
        "SQLite URLs look like sqlite:///relative.db, sqlite:////absolute.db or sqlite://:memory:"
    )
