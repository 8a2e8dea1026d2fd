"""The embedded default backend: SQLite through the stdlib driver, called on the event loop thread.

A statement takes microseconds and runs without an await, so within one process every method is atomic
with respect to other coroutines. Writes are queued and run together at the end of the event-loop
iteration in one transaction (group_commit.py); a read sees committed writes only. Several worker
processes may share one file: WAL lets readers run beside the single writer, and BEGIN IMMEDIATE with
the busy timeout queues the writers. The WAL is checkpointed by a thread of each process
(checkpoints.py), never inside a request's COMMIT.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import orjson

from fhirauth.clock import Clock
from fhirauth.storage._query import check_amount, check_path, check_resource_type, check_values
from fhirauth.storage._time import from_micros_or_none, to_micros, to_micros_or_none
from fhirauth.storage.base import (
    AlreadyExists,
    Create,
    Delete,
    Document,
    Found,
    Index,
    Page,
    Query,
    Record,
    Storage,
    StorageUnavailable,
    Stored,
    VersionConflict,
    Write,
)
from fhirauth.storage.checkpoints import INTERVAL_SECONDS, RESTART_FRAMES, Checkpointer
from fhirauth.storage.group_commit import GroupCommit
from fhirauth.storage.sqlite_errors import unavailable

_BUSY_TIMEOUT_SECONDS = 5.0
# Far below SQLite's limit on bound parameters (32,766), and a transaction Bundle's usual size.
_IDS_PER_READ = 500

_DUPLICATE_CODES = frozenset({sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY})

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS resources (
        type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, deleted INTEGER NOT NULL,
        doc TEXT NOT NULL, PRIMARY KEY (type, id))""",
    """CREATE TABLE IF NOT EXISTS history (
        type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, deleted INTEGER NOT NULL,
        doc TEXT NOT NULL, PRIMARY KEY (type, id, version))""",
    """CREATE TABLE IF NOT EXISTS records (
        kind TEXT NOT NULL, key TEXT NOT NULL, rev INTEGER NOT NULL, expires_at INTEGER,
        doc TEXT NOT NULL, PRIMARY KEY (kind, key))""",
    "CREATE INDEX IF NOT EXISTS records_expiry ON records (expires_at) WHERE expires_at IS NOT NULL",
)

_INSERT_CURRENT = """INSERT INTO resources (type, id, version, deleted, doc) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (type, id) DO NOTHING"""
_UPDATE_CURRENT = """UPDATE resources SET version = ?, deleted = ?, doc = ?
    WHERE type = ? AND id = ? AND version = ? AND deleted = ?"""
# `history` holds the versions a write replaced; the current one is only in `resources`, so a create
# writes one row. (Files written before that layout also hold the current version in `history`: the
# same row, which UNION folds and INSERT OR IGNORE leaves.)
_ARCHIVE_CURRENT = """INSERT OR IGNORE INTO history (type, id, version, deleted, doc)
    SELECT type, id, version, deleted, doc FROM resources
    WHERE type = ? AND id = ? AND version = ? AND deleted = ?"""
_VERSION = """SELECT deleted, doc FROM resources WHERE type = :type AND id = :id AND version = :version
    UNION ALL SELECT deleted, doc FROM history WHERE type = :type AND id = :id AND version = :version
    LIMIT 1"""
_HISTORY = """SELECT version, deleted, doc FROM resources WHERE type = :type AND id = :id
    UNION SELECT version, deleted, doc FROM history WHERE type = :type AND id = :id
    ORDER BY version DESC"""

# The record statements take numbered parameters, always in this order: ?1 kind, ?2 key, ?3 now,
# ?4 expires_at, ?5 doc, ?6 rev (or amount). The sqlite3 module binds a named parameter by building
# its name as a string and looking it up: a write of six cost 7,000 instructions more than by number.
_LIVE_RECORD = "(expires_at IS NULL OR expires_at > ?3)"
_GET_RECORD = f"SELECT rev, expires_at, doc FROM records WHERE kind = ?1 AND key = ?2 AND {_LIVE_RECORD}"
# A create stores rev 1 and a swap rev + 1, so `record_put` knows the new rev from the count of changed
# rows: RETURNING would cost more than the write (SQLite gathers its rows in a temporary table first).
_CREATE_RECORD = f"""INSERT INTO records (kind, key, rev, expires_at, doc) VALUES (?1, ?2, 1, ?4, ?5)
    ON CONFLICT (kind, key) DO UPDATE SET rev = 1, expires_at = excluded.expires_at, doc = excluded.doc
    WHERE NOT {_LIVE_RECORD}"""
_SWAP_RECORD = f"""UPDATE records SET rev = rev + 1, expires_at = ?4, doc = ?5
    WHERE kind = ?1 AND key = ?2 AND rev = ?6 AND {_LIVE_RECORD}"""
_SET_RECORD = """INSERT INTO records (kind, key, rev, expires_at, doc) VALUES (?1, ?2, 1, ?4, ?5)
    ON CONFLICT (kind, key) DO UPDATE SET
        rev = rev + 1, expires_at = excluded.expires_at, doc = excluded.doc"""
# A counter's rev is its count and its document is {"count": rev}.
_INCREMENT_RECORD = f"""INSERT INTO records (kind, key, rev, expires_at, doc)
    VALUES (?1, ?2, ?6, ?4, json_object('count', ?6))
    ON CONFLICT (kind, key) DO UPDATE SET
        rev = CASE WHEN {_LIVE_RECORD} THEN rev + ?6 ELSE ?6 END,
        expires_at = CASE WHEN {_LIVE_RECORD} THEN expires_at ELSE excluded.expires_at END,
        doc = json_object('count', CASE WHEN {_LIVE_RECORD} THEN rev + ?6 ELSE ?6 END)
    RETURNING rev"""
_TAKE_RECORD = (
    f"DELETE FROM records WHERE kind = ?1 AND key = ?2 AND {_LIVE_RECORD} RETURNING rev, expires_at, doc"
)


class SQLiteStorage(Storage):
    def __init__(
        self,
        path: str,
        clock: Clock,
        *,
        checkpoint_interval: float = INTERVAL_SECONDS,
        restart_frames: int = RESTART_FRAMES,
    ) -> None:
        self.path = path
        self._clock = clock
        self._connection: sqlite3.Connection | None = None
        self._checkpoints = (checkpoint_interval, restart_frames)
        # Held around every write transaction, so the checkpointer can hold this process's writers back
        # for a RESTART without polling for SQLite's write lock.
        self._writers = threading.Lock()
        self.checkpointer: Checkpointer | None = None
        self._batches = GroupCommit(lambda: self._db, self._writers)
        # (resource type, leading path) → index name, for INDEXED BY.
        self._index_names: dict[tuple[str, str], str] = {}

    async def start(self, indexes: Sequence[Index]) -> None:
        if self._connection is None:
            with unavailable():
                self._connection = _connect(self.path)
            if _in_wal_mode(self._connection):
                interval, restart_frames = self._checkpoints
                self.checkpointer = Checkpointer(
                    self.path, self._writers, interval=interval, restart_frames=restart_frames
                )
                self.checkpointer.start()
        with self._writers, self._transaction("BEGIN IMMEDIATE") as db:
            for statement in _SCHEMA:
                db.execute(statement)
            for index in indexes:
                name = _index_name(index)
                db.execute(_index_sql(index, name))
                self._index_names.setdefault((index.resource_type, index.path), name)

    async def close(self) -> None:
        self._batches.flush()
        if self.checkpointer is not None:
            self.checkpointer.stop()
            self.checkpointer = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def ping(self) -> None:
        # Reads the file header, so a vanished or unreadable file shows up here.
        self._fetch("PRAGMA schema_version", ())

    async def get(self, resource_type: str, id: str) -> Stored | None:
        rows = self._fetch(
            "SELECT deleted, doc FROM resources WHERE type = ? AND id = ?", (resource_type, id)
        )
        return _stored(*rows[0]) if rows else None

    async def get_many(self, resource_type: str, ids: Sequence[str]) -> dict[str, Stored]:
        found: dict[str, Stored] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), _IDS_PER_READ):
            chunk = unique[start : start + _IDS_PER_READ]
            rows = self._fetch(
                f"SELECT id, deleted, doc FROM resources WHERE type = ? AND id IN ({', '.join('?' * len(chunk))})",
                (resource_type, *chunk),
            )
            found.update((id, _stored(deleted, doc)) for id, deleted, doc in rows)
        return found

    async def get_version(self, resource_type: str, id: str, version: int) -> Stored | None:
        rows = self._fetch(_VERSION, {"type": resource_type, "id": id, "version": version})
        return _stored(*rows[0]) if rows else None

    async def history(self, resource_type: str, id: str) -> list[Stored]:
        rows = self._fetch(_HISTORY, {"type": resource_type, "id": id})
        return [_stored(deleted, doc) for _version, deleted, doc in rows]

    async def write(self, writes: Sequence[Write]) -> None:
        def apply_all(db: sqlite3.Connection) -> None:
            for write in writes:
                _apply(db, write)

        await self._batches.run(apply_all, one_statement=len(writes) == 1 and _is_insert(writes[0]))

    async def search(self, resource_type: str, query: Query) -> Page:
        page, count, params = self._search_sql(resource_type, query)
        arguments = (*params, query.limit, query.offset)
        rows = self._fetch(page, arguments)
        total: int | None = None
        if query.count_total and query.offset == 0 and len(rows) < query.limit:
            # A first page with room to spare holds every match (a lookup by email, say).
            total = len(rows)
        elif query.count_total:
            # Page and total again in one read transaction, so both come from the same snapshot.
            with self._transaction("BEGIN") as db:
                rows = db.execute(page, arguments).fetchall()
                total = db.execute(count, params).fetchone()[0]
        return Page([orjson.loads(doc) for (doc,) in rows], total)

    async def find_one(
        self, resource_type: str, path: str, value: str, *, follow: str | None = None
    ) -> Found | None:
        index_name = self._index_names.get((resource_type, path))
        rows = self._fetch(_find_statement(resource_type, path, follow, index_name), (value,))
        if not rows:
            return None
        doc, deleted, referenced = rows[0]
        return Found(orjson.loads(doc), None if referenced is None else _stored(deleted, referenced))

    def query_plan(self, resource_type: str, query: Query) -> list[str]:
        """SQLite's plan for the page and then the count statement of `search`, one line per step."""
        page, count, params = self._search_sql(resource_type, query)
        rows = self._fetch(f"EXPLAIN QUERY PLAN {page}", (*params, query.limit, query.offset))
        rows += self._fetch(f"EXPLAIN QUERY PLAN {count}", params)
        return [detail for *_ids, detail in rows]

    async def record_get(self, kind: str, key: str) -> Record | None:
        rows = self._fetch(_GET_RECORD, (kind, key, self._now()))
        return _record(*rows[0]) if rows else None

    async def record_put(
        self,
        kind: str,
        key: str,
        document: Document,
        *,
        expected_rev: int | None,
        expires_at: datetime | None = None,
    ) -> int | None:
        params = (kind, key, self._now(), to_micros_or_none(expires_at), _dumps(document))
        if expected_rev is None:
            return 1 if await self._changed(_CREATE_RECORD, params) else None
        return expected_rev + 1 if await self._changed(_SWAP_RECORD, (*params, expected_rev)) else None

    async def record_set(
        self, kind: str, key: str, document: Document, *, expires_at: datetime | None = None
    ) -> None:
        expiry = to_micros_or_none(expires_at)
        # ?3 stands unused: the parameters keep their one order.
        await self._change(_SET_RECORD, (kind, key, None, expiry, _dumps(document)))

    async def record_incr(self, kind: str, key: str, *, expires_at: datetime, amount: int = 1) -> int:
        check_amount(amount)
        params = (kind, key, self._now(), to_micros(expires_at), None, amount)
        ((count,),) = await self._change(_INCREMENT_RECORD, params)
        return int(count)

    async def record_take(self, kind: str, key: str) -> Record | None:
        rows = await self._change(_TAKE_RECORD, (kind, key, self._now()))
        return _record(*rows[0]) if rows else None

    async def record_delete(self, kind: str, key: str) -> None:
        await self._change("DELETE FROM records WHERE kind = ? AND key = ?", (kind, key))

    async def purge_expired(self, now: datetime) -> int:
        def purge(db: sqlite3.Connection) -> int:
            return db.execute("DELETE FROM records WHERE expires_at <= ?", (to_micros(now),)).rowcount

        return await self._batches.run(purge, one_statement=True)

    async def all_resources(self, resource_type: str | None = None) -> list[Document]:
        if resource_type is None:
            rows = self._fetch("SELECT doc FROM resources WHERE deleted = 0 ORDER BY type, id", ())
        else:
            rows = self._fetch(
                "SELECT doc FROM resources WHERE type = ? AND deleted = 0 ORDER BY id", (resource_type,)
            )
        return [orjson.loads(doc) for (doc,) in rows]

    @property
    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            # A file that could not be opened at start-up (read-only or missing directory) is retried
            # in the background; meanwhile every call must be a 503, not an internal error.
            raise StorageUnavailable(f"SQLite database {self.path} is not open")
        return self._connection

    def _fetch(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> list[Any]:
        with unavailable():
            return self._db.execute(sql, params).fetchall()

    async def _change(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> list[Any]:
        """One write statement, committed with the other writes of this event-loop iteration."""
        return await self._batches.run(lambda db: db.execute(sql, params).fetchall(), one_statement=True)

    async def _changed(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> int:
        """`_change` for a statement that returns no rows: how many rows it changed."""
        return await self._batches.run(lambda db: db.execute(sql, params).rowcount, one_statement=True)

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        db = self._db
        with unavailable():
            db.execute(begin)
            try:
                yield db
            except BaseException:
                # SQLite rolls back by itself after some errors (disk full, I/O).
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _now(self) -> int:
        return to_micros(self._clock())

    def _search_sql(self, resource_type: str, query: Query) -> tuple[str, str, list[Any]]:
        """The page statement, the count statement and their shared parameters."""
        check_values(query)
        params: list[Any] = []
        for condition in query.filters:
            # json_extract yields 1/0 for JSON true/false.
            params.extend(int(value) if isinstance(value, bool) else value for value in condition.values)
        # Without statistics the planner rates `type = ?` on the primary key as selective as the
        # expression index and takes the key because it also yields ORDER BY id: a scan of the type.
        # (`IN ()` cannot use an index at all.)
        indexed = (self._index_names.get((resource_type, c.path)) for c in query.filters if c.values)
        index_name = next((name for name in indexed if name is not None), None)
        shape = tuple((c.path, len(c.values)) for c in query.filters)
        sort = tuple((path, bool(descending)) for path, descending in query.sort)
        page, count = _search_statements(resource_type, shape, sort, index_name)
        return page, count, params


# A request's search has one of a few shapes; building its SQL text cost as much as running it.
@functools.lru_cache(maxsize=512)
def _search_statements(
    resource_type: str,
    shape: tuple[tuple[str, int], ...],
    sort: tuple[tuple[str, bool], ...],
    index_name: str | None,
) -> tuple[str, str]:
    """The page and count statements of a query shape: (path, number of values) per filter."""
    clauses = [_live_of(resource_type)]
    clauses += [f"{_extract(path)} IN ({', '.join('?' * values)})" for path, values in shape]
    source = "resources" if index_name is None else f'resources INDEXED BY "{index_name}"'
    where = " AND ".join(clauses)
    keys = [f"{_extract(path)} {'DESC' if descending else 'ASC'}" for path, descending in sort]
    order = ", ".join([*keys, "id"])
    page = f"SELECT doc FROM {source} WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?"
    return page, f"SELECT count(*) FROM {source} WHERE {where}"


@functools.lru_cache(maxsize=64)
def _find_statement(resource_type: str, path: str, follow: str | None, index_name: str | None) -> str:
    """One statement for `find_one`: the match (no ORDER BY: any one will do) and what it refers to."""
    source = "resources AS f" if index_name is None else f'resources AS f INDEXED BY "{index_name}"'
    where = f"{_live_of(resource_type, 'f')} AND {_extract(path, 'f')} = ?"
    if follow is None:
        return f"SELECT f.doc, NULL, NULL FROM {source} WHERE {where} LIMIT 1"
    return (
        f"SELECT f.doc, r.deleted, r.doc FROM {source} LEFT JOIN resources AS r"
        f" ON r.type = {_extract(f'{follow}.resourceType', 'f')} AND r.id = {_extract(f'{follow}.id', 'f')}"
        f" WHERE {where} LIMIT 1"
    )


def _connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: transactions are opened explicitly, so a bundle is one BEGIN IMMEDIATE.
    # check_same_thread=False: the loop that uses the storage may run on another thread than the one
    # that opened it (TestClient's portal, for one); all calls still come from one thread at a time.
    db = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA wal_autocheckpoint=0")
    except BaseException:
        db.close()
        raise
    return db


def _in_wal_mode(db: sqlite3.Connection) -> bool:
    # An in-memory database keeps its journal in memory: no WAL, nothing to checkpoint.
    (mode,) = db.execute("PRAGMA journal_mode").fetchone()
    return bool(mode == "wal")


def _is_insert(write: Write) -> bool:
    """Whether `_apply` writes `write` with one statement (the others archive first)."""
    return isinstance(write, Create) and write.over_tombstone_version is None


def _apply(db: sqlite3.Connection, write: Write) -> None:
    document = write.document
    resource_type, id = document["resourceType"], document["id"]
    version = int(document["meta"]["versionId"])
    deleted = isinstance(write, Delete)
    text = _dumps(document)
    try:
        if _is_insert(write):
            if not db.execute(_INSERT_CURRENT, (resource_type, id, version, deleted, text)).rowcount:
                raise AlreadyExists(resource_type, id)
            return
        missing: type[AlreadyExists] | type[VersionConflict]
        if isinstance(write, Create):
            replaced, missing = (resource_type, id, write.over_tombstone_version, True), AlreadyExists
        else:
            replaced, missing = (resource_type, id, write.expected_version, False), VersionConflict
        # Archived first: an UPDATE that finds nothing raises, and the write's rollback takes both back.
        db.execute(_ARCHIVE_CURRENT, replaced)
        if not db.execute(_UPDATE_CURRENT, (version, deleted, text, *replaced)).rowcount:
            raise missing(resource_type, id)
    except sqlite3.IntegrityError as exc:
        # A unique secondary index (User email, say) already holds this value for a live resource.
        if exc.sqlite_errorcode in _DUPLICATE_CODES:
            raise AlreadyExists(resource_type, id) from exc
        raise


def _index_name(index: Index) -> str:
    paths = ",".join(check_path(path) for path in (index.path, *index.extra))
    kind = "unique index" if index.unique else "index"
    return f"{kind} {check_resource_type(index.resource_type)} {paths}"


def _index_sql(index: Index, name: str) -> str:
    kind = "UNIQUE INDEX" if index.unique else "INDEX"
    columns = ", ".join(_extract(path) for path in (index.path, *index.extra))
    live = _live_of(index.resource_type)
    return f'CREATE {kind} IF NOT EXISTS "{name}" ON resources ({columns}) WHERE {live}'


def _live_of(resource_type: str, table: str | None = None) -> str:
    # Literal, not bound: SQLite uses a partial index only when the query's WHERE visibly implies the
    # index's WHERE, so search and the index share this exact text.
    prefix = "" if table is None else f"{table}."
    return f"{prefix}type = '{check_resource_type(resource_type)}' AND {prefix}deleted = 0"


def _extract(path: str, table: str | None = None) -> str:
    column = "doc" if table is None else f"{table}.doc"
    return f"json_extract({column}, '$.{check_path(path)}')"


def _stored(deleted: int, doc: str) -> Stored:
    return Stored(orjson.loads(doc), bool(deleted))


def _record(rev: int, expires_at: int | None, doc: str) -> Record:
    return Record(orjson.loads(doc), rev, from_micros_or_none(expires_at))


def _dumps(document: Document) -> str:
    return orjson.dumps(document).decode()
