"""The MongoDB backend, on pymongo's asyncio client.

Layout: one collection per resource type holding the current version or tombstone
(`{_id: id, v: version, _deleted: bool, resource: document}`), `<Type>_history` with every version
(`_id: "id/version"`, `rid: id`, and for entries written outside a transaction the writer's token `w`
and the time `at`), and `_records`. The resource is nested under `resource` so that none of its keys
(FHIR allows `_id` as the extension of `id`) can collide with the storage's own fields.

A write of one resource is two commands and no transaction: its history entry first, which claims the
version (an entry's id is unique, so of writers racing for one version only the first goes on), then the
compare-and-set of the current document, which makes the entry visible. History and vread show only
entries at or below the current version. A writer whose compare-and-set fails deletes its entry; one that
stopped between the two (a crash, an outage) leaves an orphan, which a later writer of that version takes
over once it is ORPHAN_SECONDS old, and `purge_orphans` deletes. Writes of several resources (Bundles) stay
one multi-document transaction.

Every collection handle asks for write concern majority with journal, read concern majority and the
primary (see `_collection`), so no acknowledged write, and nothing a read returned, is undone by a
failover.

Record expiry is judged on read by the injected clock and removed by `purge_expired`; there are no TTL
indexes (SecantusDB slows writes about 28x after its TTL sweeper has deleted a document).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from bson.codec_options import TypeDecoder, TypeRegistry
from bson.int64 import Int64
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReadPreference, ReturnDocument, WriteConcern
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)
from pymongo.read_concern import ReadConcern

from fhirauth.clock import Clock
from fhirauth.storage._query import (
    check_amount,
    check_path,
    check_query,
    check_resource_type,
    is_resource_type,
)
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

DEFAULT_DATABASE = "fhirauth"


class _PlainInt64(TypeDecoder):
    """BSON int64 read back as a plain int, as it was written: pymongo's Int64 (an int subclass) is a
    value YAML's SafeDumper cannot represent, so a resource holding 2**31 or more was a 500 in YAML."""

    bson_type = Int64

    def transform_bson(self, value: Any) -> int:
        return int(value)


# An unreachable database must become a 503 within 2 s. pymongo checks the selection deadline only
# every 0.5 s (MIN_HEARTBEAT_INTERVAL), and a bundle whose transaction fails selects again to abort
# it: with 1.5 s such a request waited 2.5 s (measured, tests/e2e/test_storage_faults.py); with 0.5 s
# it waits at most about 1 s. The socket timeout is longer: it bounds each reply, and a large export
# batch is a legitimate slow one.
_CLIENT_OPTIONS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 500,
    "connectTimeoutMS": 1000,
    "socketTimeoutMS": 5000,
    "appname": "fhirauth",
    "type_registry": TypeRegistry([_PlainInt64()]),
}
_UNAVAILABLE = (ConnectionFailure, ExecutionTimeout, WTimeoutError)
_TRANSACTION_ATTEMPTS = 20
_RECORDS = "_records"
_HISTORY_SUFFIX = "_history"
_NO_EXPIRY = 2**63 - 1
# A history entry whose compare-and-set has not come this long after it was written is an orphan: its
# writer stopped. Far above the socket timeout, the longest a live writer waits between the two commands.
ORPHAN_SECONDS = 60
# `purge_orphans` looks at entries this much older still: the maintenance loop runs every minute, so an
# orphan is looked at many times before it leaves the window. One that does is still invisible, and taken
# over by the next writer of its version.
_ORPHAN_WINDOW_SECONDS = 15 * 60

# Majority with journal: an acknowledged write survives the failover of the primary, so a spent code,
# a counted attempt or a rotated token is never given back. Majority reads: nothing read (a Session, a
# lockout) can be rolled back after it was acted on. Not linearizable: no decision rests on a read alone;
# every single-use or counted step is a conditional write, which the primary judges against its latest
# state whatever the read concern, so a stale read can only make a compare-and-set fail. Primary: the
# compare-and-set reads that feed those writes must not come from a lagging secondary.
_WRITE_CONCERN = WriteConcern("majority", j=True)
_READ_CONCERN = ReadConcern("majority")
_READ_PREFERENCE = ReadPreference.PRIMARY
# Bundles: a snapshot of the whole transaction, committed to a majority.
_TRANSACTION_READ_CONCERN = ReadConcern("snapshot")

MongoDocument = dict[str, Any]


class MongoStorage(Storage):
    def __init__(self, uri: str, clock: Clock) -> None:
        self._clock = clock
        self._client: AsyncMongoClient[MongoDocument] = AsyncMongoClient(uri, **_CLIENT_OPTIONS)
        self._db = self._client.get_default_database(
            DEFAULT_DATABASE,
            read_preference=_READ_PREFERENCE,
            write_concern=_WRITE_CONCERN,
            read_concern=_READ_CONCERN,
        )
        self.database_name = self._db.name
        self._history_indexed: set[str] = set()
        self._collections: dict[str, AsyncCollection[MongoDocument]] = {}
        self._resource_handles: dict[str, AsyncCollection[MongoDocument]] = {}
        # (resource type, follow) → the type its references last named, for `find_one`'s $lookup.
        self._followed: dict[tuple[str, str], str] = {}

    async def start(self, indexes: Sequence[Index]) -> None:
        with _unavailable():
            await self._records.create_index("exp")
            for index in indexes:
                paths = (index.path, *index.extra)
                keys = [(f"resource.{check_path(path)}", ASCENDING) for path in paths]
                options: dict[str, Any] = {}
                if index.unique:
                    # Unique among live resources that have the value, as SQLite's partial index is
                    # (there NULLs never collide; here a missing field would index as null).
                    only: MongoDocument = {"_deleted": False}
                    only.update((key, {"$exists": True}) for key, _ in keys)
                    options = {"unique": True, "partialFilterExpression": only}
                await self._resources(index.resource_type).create_index(keys, **options)

    async def close(self) -> None:
        await self._client.close()

    async def ping(self) -> None:
        with _unavailable():
            await self._client.admin.command("ping")

    async def get(self, resource_type: str, id: str) -> Stored | None:
        with _unavailable():
            row = await self._resources(resource_type).find_one({"_id": id})
        return _stored(row)

    async def get_version(self, resource_type: str, id: str, version: int) -> Stored | None:
        with _unavailable():
            row = await self._history(resource_type).find_one({"_id": f"{id}/{version}"})
            if row is None or version > await self._current_version(resource_type, id):
                return None
        return _stored(row)

    async def history(self, resource_type: str, id: str) -> list[Stored]:
        with _unavailable():
            await self._ensure_history_index(resource_type)
            current = await self._current_version(resource_type, id)
            cursor = self._history(resource_type).find(
                {"rid": id, "v": {"$lte": current}}, sort=[("v", DESCENDING)]
            )
            return [Stored(_resource(row), row["_deleted"]) async for row in cursor]

    async def write(self, writes: Sequence[Write]) -> None:
        with _unavailable():
            for resource_type in {write.document["resourceType"] for write in writes}:
                await self._ensure_history_index(resource_type)
            if len(writes) == 1:
                await self._write_one(writes[0])
            else:
                await self._write_in_transaction(writes)

    async def search(self, resource_type: str, query: Query) -> Page:
        check_query(query)
        match = _match(query)
        collection = self._resources(resource_type)
        sort = [(_field(path), DESCENDING if desc else ASCENDING) for path, desc in query.sort]
        if all(field != "_id" for field, _order in sort):
            # Ties in id order, as SQLite's ORDER BY ..., id.
            sort.append(("_id", ASCENDING))
        with _unavailable():
            items: list[Document] = []
            # A limit of 0 means "no limit" to MongoDB.
            if query.limit:
                cursor = collection.find(
                    match,
                    {"_id": False, "resource": True, "escaped": True},
                    sort=sort,
                    skip=query.offset,
                    limit=query.limit,
                )
                items = [_resource(row) async for row in cursor]
            total: int | None = None
            if query.count_total and query.limit and 0 < len(items) < query.limit:
                # A page that is not full holds the last matches: the total needs no count.
                total = query.offset + len(items)
            elif query.count_total and query.offset == 0 and query.limit and not items:
                total = 0
            elif query.count_total:
                total = await collection.count_documents(match)
        return Page(items, total)

    async def find_one(
        self, resource_type: str, path: str, value: str, *, follow: str | None = None
    ) -> Found | None:
        check_path(path)
        match = {"_deleted": False, f"resource.{path}": value}
        projection = {"_id": False, "resource": True, "escaped": True}
        collection = self._resources(resource_type)
        if follow is None:
            with _unavailable():
                row = await collection.find_one(match, projection)
            return None if row is None else Found(_resource(row))
        check_path(follow)
        # The reference's type is in the document, but a $lookup names its collection beforehand: guess
        # the type the last reference at this path named (a Session's user is a User), and read the
        # target apart only when the guess was wrong. One command in the usual case.
        guess = self._followed.get((resource_type, follow))
        pipeline: list[MongoDocument] = [{"$match": match}, {"$limit": 1}, {"$project": projection}]
        if guess is not None:
            pipeline.append(
                {
                    "$lookup": {
                        "from": self._resources(guess).name,
                        "localField": f"resource.{follow}.id",
                        "foreignField": "_id",
                        "as": "followed",
                    }
                }
            )
        with _unavailable():
            rows = [row async for row in await collection.aggregate(pipeline)]
        if not rows:
            return None
        document = _resource(rows[0])
        reference = _reference(document, follow)
        if reference is None:
            return Found(document)
        target_type, target_id = reference
        if target_type == guess:
            followed = rows[0].get("followed") or [None]
            return Found(document, _stored(followed[0]))
        self._followed[(resource_type, follow)] = target_type
        return Found(document, await self.get(target_type, target_id))

    async def record_get(self, kind: str, key: str) -> Record | None:
        with _unavailable():
            row = await self._records.find_one({"_id": _record_id(kind, key), **self._live()})
        return _record(row)

    async def record_put(
        self,
        kind: str,
        key: str,
        document: Document,
        *,
        expected_rev: int | None,
        expires_at: datetime | None = None,
    ) -> int | None:
        fields = {"exp": to_micros_or_none(expires_at), "doc": document}
        with _unavailable():
            if expected_rev is None:
                # Matches only an expired record; when a live one exists the upsert's insert collides.
                expired = {"_id": _record_id(kind, key), "exp": {"$lte": self._now()}}
                try:
                    await self._records.update_one(expired, {"$set": {"rev": 1, **fields}}, upsert=True)
                except DuplicateKeyError:
                    return None
                return 1
            current = {"_id": _record_id(kind, key), "rev": expected_rev, **self._live()}
            result = await self._records.update_one(current, {"$set": fields, "$inc": {"rev": 1}})
        return expected_rev + 1 if result.matched_count else None

    async def record_set(
        self, kind: str, key: str, document: Document, *, expires_at: datetime | None = None
    ) -> None:
        with _unavailable():
            await self._records.update_one(
                {"_id": _record_id(kind, key)},
                {"$set": {"exp": to_micros_or_none(expires_at), "doc": document}, "$inc": {"rev": 1}},
                upsert=True,
            )

    async def record_incr(self, kind: str, key: str, *, expires_at: datetime, amount: int = 1) -> int:
        check_amount(amount)
        # One pipeline update restarts an expired counter or increments a live one in the same atomic
        # step. A counter's rev is its count and its document is {"count": rev}.
        restart = {
            "$or": [
                {"$eq": [{"$ifNull": ["$rev", None]}, None]},
                {"$lte": [{"$ifNull": ["$exp", _NO_EXPIRY]}, self._now()]},
            ]
        }
        pipeline: list[MongoDocument] = [
            {
                "$set": {
                    "rev": {"$cond": [restart, amount, {"$add": ["$rev", amount]}]},
                    "exp": {"$cond": [restart, to_micros(expires_at), "$exp"]},
                }
            },
            {"$set": {"doc": {"count": "$rev"}}},
        ]
        record_id = _record_id(kind, key)
        with _unavailable():
            while True:
                # No upsert: SecantusDB answers null to one of several upserts racing to create the
                # document (though it applied it), so creating is a plain insert that one caller wins.
                row = await self._records.find_one_and_update(
                    {"_id": record_id}, pipeline, return_document=ReturnDocument.AFTER
                )
                if row is not None:
                    return int(row["rev"])
                try:
                    await self._records.insert_one(
                        {
                            "_id": record_id,
                            "rev": amount,
                            "exp": to_micros(expires_at),
                            "doc": {"count": amount},
                        }
                    )
                except DuplicateKeyError:
                    continue
                return amount

    async def record_take(self, kind: str, key: str) -> Record | None:
        with _unavailable():
            row = await self._records.find_one_and_delete({"_id": _record_id(kind, key), **self._live()})
        return _record(row)

    async def record_delete(self, kind: str, key: str) -> None:
        with _unavailable():
            await self._records.delete_one({"_id": _record_id(kind, key)})

    async def purge_expired(self, now: datetime) -> int:
        with _unavailable():
            result = await self._records.delete_many({"exp": {"$lte": to_micros(now)}})
        return result.deleted_count

    async def purge_orphans(self, now: datetime) -> int:
        stale = to_micros(now) - ORPHAN_SECONDS * 1_000_000
        window = {"$gt": stale - _ORPHAN_WINDOW_SECONDS * 1_000_000, "$lte": stale}
        purged = 0
        with _unavailable():
            names = await self._db.list_collection_names()
            for name in sorted(names):
                if not name.endswith(_HISTORY_SUFFIX) or not is_resource_type(name[: -len(_HISTORY_SUFFIX)]):
                    continue
                resource_type = name[: -len(_HISTORY_SUFFIX)]
                await self._ensure_history_index(resource_type)
                entries = [
                    row
                    async for row in self._history(resource_type).find(
                        {"at": window}, {"rid": True, "v": True, "w": True}
                    )
                ]
                if not entries:
                    continue
                current = {
                    row["_id"]: row["v"]
                    async for row in self._resources(resource_type).find(
                        {"_id": {"$in": list({entry["rid"] for entry in entries})}}, {"v": True}
                    )
                }
                for entry in entries:
                    if entry["v"] > current.get(entry["rid"], 0):
                        result = await self._history(resource_type).delete_one(
                            {"_id": entry["_id"], "w": entry["w"]}
                        )
                        purged += result.deleted_count
        return purged

    async def all_resources(self, resource_type: str | None = None) -> list[Document]:
        with _unavailable():
            if resource_type is None:
                names = sorted(filter(is_resource_type, await self._db.list_collection_names()))
            else:
                names = [resource_type]
            documents: list[Document] = []
            for name in names:
                cursor = self._resources(name).find(
                    {"_deleted": False},
                    {"_id": False, "resource": True, "escaped": True},
                    sort=[("_id", ASCENDING)],
                )
                documents.extend([_resource(row) async for row in cursor])
        return documents

    def collection_handles(self) -> dict[str, AsyncCollection[MongoDocument]]:
        """Every collection handle made so far, by name (the test of their concerns reads them)."""
        return dict(self._collections)

    def _collection(self, name: str) -> AsyncCollection[MongoDocument]:
        # Made once per name: building a handle costs more than some of the commands sent through it.
        handle = self._collections.get(name)
        if handle is None:
            handle = self._db.get_collection(
                name,
                read_preference=_READ_PREFERENCE,
                write_concern=_WRITE_CONCERN,
                read_concern=_READ_CONCERN,
            )
            self._collections[name] = handle
        return handle

    @property
    def _records(self) -> AsyncCollection[MongoDocument]:
        return self._collection(_RECORDS)

    def _resources(self, resource_type: str) -> AsyncCollection[MongoDocument]:
        # "_records" is a collection but no resource type: only a name that passed the check is cached.
        handle = self._resource_handles.get(resource_type)
        if handle is None:
            handle = self._collection(check_resource_type(resource_type))
            self._resource_handles[resource_type] = handle
        return handle

    def _history(self, resource_type: str) -> AsyncCollection[MongoDocument]:
        return self._collection(check_resource_type(resource_type) + _HISTORY_SUFFIX)

    async def _current_version(self, resource_type: str, id: str) -> int:
        """The version of the current document, 0 when there is none: history above it is orphaned."""
        row = await self._resources(resource_type).find_one({"_id": id}, {"v": True})
        return 0 if row is None else int(row["v"])

    async def _ensure_history_index(self, resource_type: str) -> None:
        # History collections appear with their first write, so their indexes are made on first use
        # (once per type and process) rather than at start-up.
        if resource_type not in self._history_indexed:
            history = self._history(resource_type)
            await history.create_index([("rid", ASCENDING), ("v", DESCENDING)])
            await history.create_index("at", sparse=True)
            self._history_indexed.add(resource_type)

    async def _write_one(self, write: Write) -> None:
        """One resource without a transaction: its history entry claims the version, then the
        compare-and-set of the current document makes it visible (see the module's docstring)."""
        document = write.document
        resource_type, id = document["resourceType"], document["id"]
        version = int(document["meta"]["versionId"])
        failure = AlreadyExists if isinstance(write, Create) else VersionConflict
        fields = _resource_fields(document)
        entry = self._entry(write, fields)
        history = self._history(resource_type)
        try:
            await history.insert_one(entry)
        except DuplicateKeyError:
            if not await self._claim(resource_type, id, version, entry):
                raise failure(resource_type, id) from None
        try:
            await self._set_current(write, fields, entry["w"], None)
        except (AlreadyExists, VersionConflict):
            # A retried command whose first attempt had landed is refused by its own write (a server
            # without retryable writes): then the write is done.
            if await self._resources(resource_type).find_one({"_id": id, "w": entry["w"]}, {"_id": True}):
                return
            # Refused for certain: the entry can go. (On a timeout or an outage the outcome is
            # unknown, so the entry stays: current if the write landed, an orphan if not.)
            await history.delete_one({"_id": entry["_id"], "w": entry["w"]})
            raise

    async def _claim(self, resource_type: str, id: str, version: int, entry: MongoDocument) -> bool:
        """After `entry`'s insert met an entry of its version: whether `entry` now holds the version
        (the one in the way was `entry` itself, landed by a retried insert, or a stale orphan)."""
        if await self._current_version(resource_type, id) >= version:
            return False
        history = self._history(resource_type)
        found = await history.find_one({"_id": entry["_id"]}, {"w": True, "at": True})
        if found is not None:
            if found.get("w") == entry["w"]:
                return True
            stale = self._now() - ORPHAN_SECONDS * 1_000_000
            if "w" not in found or found["at"] > stale:
                return False
            await history.delete_one({"_id": found["_id"], "w": found["w"]})
        try:
            await history.insert_one(entry)
        except DuplicateKeyError:
            return False
        return True

    def _entry(self, write: Write, fields: MongoDocument) -> MongoDocument:
        document = write.document
        id, version = document["id"], int(document["meta"]["versionId"])
        return {
            "_id": f"{id}/{version}",
            "rid": id,
            "v": version,
            "_deleted": isinstance(write, Delete),
            **fields,
            "w": secrets.token_hex(8),
            "at": self._now(),
        }

    async def _write_in_transaction(self, writes: Sequence[Write]) -> None:
        for _attempt in range(_TRANSACTION_ATTEMPTS):
            try:
                async with (
                    self._client.start_session() as session,
                    await session.start_transaction(
                        read_concern=_TRANSACTION_READ_CONCERN,
                        write_concern=_WRITE_CONCERN,
                        read_preference=_READ_PREFERENCE,
                    ),
                ):
                    for write in writes:
                        # In one transaction with its compare-and-set, an entry may replace an orphan.
                        fields = _resource_fields(write.document)
                        entry = self._entry(write, fields)
                        await self._history(write.document["resourceType"]).replace_one(
                            {"_id": entry["_id"]}, entry, upsert=True, session=session
                        )
                        await self._set_current(write, fields, entry["w"], session)
                return
            except OperationFailure as exc:
                # WriteConflict: a concurrent transaction touched one of these documents first. Run
                # again, so the version checks judge against what it committed.
                if not exc.has_error_label("TransientTransactionError"):
                    raise
        raise StorageUnavailable("MongoDB transaction kept conflicting with concurrent writes")

    async def _set_current(
        self, write: Write, fields: MongoDocument, token: str, session: AsyncClientSession | None
    ) -> None:
        """The compare-and-set of the current document; `fields` are the resource's (`_resource_fields`),
        `token` its history entry's writer."""
        document = write.document
        resource_type, id = document["resourceType"], document["id"]
        version = int(document["meta"]["versionId"])
        current = self._resources(resource_type)
        entry = {"_id": id, "v": version, "_deleted": isinstance(write, Delete), **fields, "w": token}
        try:
            if isinstance(write, Create):
                if write.over_tombstone_version is None:
                    await current.insert_one(entry, session=session)
                else:
                    tombstone = {"_id": id, "v": write.over_tombstone_version, "_deleted": True}
                    if not (await current.replace_one(tombstone, entry, session=session)).matched_count:
                        raise AlreadyExists(resource_type, id)
            else:
                live = {"_id": id, "v": write.expected_version, "_deleted": False}
                if not (await current.replace_one(live, entry, session=session)).matched_count:
                    raise VersionConflict(resource_type, id)
        except DuplicateKeyError as exc:
            # The id, or a unique secondary index (User email, say), is taken by a live resource.
            raise AlreadyExists(resource_type, id) from exc

    def _live(self) -> MongoDocument:
        return {"$or": [{"exp": None}, {"exp": {"$gt": self._now()}}]}

    def _now(self) -> int:
        return to_micros(self._clock())


@contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except PyMongoError as exc:
        if isinstance(exc, _UNAVAILABLE) or exc.timeout:
            raise StorageUnavailable(f"MongoDB unavailable: {exc}") from exc
        raise


def _field(path: str) -> str:
    """The row's field for a resource path: a resource's id is its row's `_id`, which is indexed."""
    return "_id" if path == "id" else f"resource.{path}"


def _match(query: Query) -> MongoDocument:
    match: MongoDocument = {"_deleted": False}
    repeated: list[MongoDocument] = []
    for condition in query.filters:
        field = _field(condition.path)
        test = {"$in": list(condition.values)}
        if field in match:
            repeated.append({field: test})
        else:
            match[field] = test
    if repeated:
        match["$and"] = repeated
    return match


def _reference(document: Document, path: str) -> tuple[str, str] | None:
    """The (resourceType, id) of the reference at `path`, None when there is no whole one."""
    reference: Any = document
    for key in path.split("."):
        reference = reference.get(key) if isinstance(reference, dict) else None
    if not isinstance(reference, dict):
        return None
    target_type, target_id = reference.get("resourceType"), reference.get("id")
    if (
        not isinstance(target_type, str)
        or not isinstance(target_id, str)
        or not is_resource_type(target_type)
    ):
        return None
    return target_type, target_id


def _stored(row: MongoDocument | None) -> Stored | None:
    return None if row is None else Stored(_resource(row), row["_deleted"])


def _resource_fields(document: Document) -> MongoDocument:
    """How a resource is kept in its row. MongoDB stores `$`-prefixed names (matcho operators, JSON
    Schema keywords), but pymongo reads an object holding `$ref` and `$id` back as a DBRef, and
    queries and indexes cannot reach such names; a resource holding any is stored with every name
    that starts with `$` or `~` prefixed by `~`, and the row marked `escaped`."""
    if not _has_dollar_key(document):
        return {"resource": document}
    return {"resource": _escape_keys(document), "escaped": True}


def _resource(row: MongoDocument) -> Document:
    resource: Document = row["resource"]
    return _unescape_keys(resource) if row.get("escaped") else resource


def _has_dollar_key(document: Document) -> bool:
    # A plain loop over exact types: every write asks, and most documents hold no such name.
    stack: list[Any] = [document]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            for key, child in node.items():
                if key[:1] == "$":
                    return True
                if type(child) is dict or type(child) is list:
                    stack.append(child)
        else:
            for child in node:
                if type(child) is dict or type(child) is list:
                    stack.append(child)
    return False


def _escape_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            ("~" + key if key.startswith(("$", "~")) else key): _escape_keys(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_escape_keys(item) for item in value]
    return value


def _unescape_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {key.removeprefix("~"): _unescape_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unescape_keys(item) for item in value]
    return value


def _record(row: MongoDocument | None) -> Record | None:
    if row is None:
        return None
    return Record(row["doc"], row["rev"], from_micros_or_none(row["exp"]))


def _record_id(kind: str, key: str) -> MongoDocument:
    return {"kind": kind, "key": key}
