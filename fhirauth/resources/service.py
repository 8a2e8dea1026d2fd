"""CRUD and versioning semantics over the storage contract.

Every write is planned first (read the current version, build the new document, check
preconditions) and then committed as storage Writes. Planning and committing apart is what lets a
transaction Bundle commit all of its entries at once.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fhirauth.clock import Clock, isoformat
from fhirauth.errors import BadRequest, Conflict, Gone, NotFound, PreconditionFailed
from fhirauth.resources import search
from fhirauth.resources.patch import json_patch, merge_patch
from fhirauth.resources.schemas import SchemaRegistry
from fhirauth.resources.secrets import (
    SecretFields,
    keep_managed,
    keep_managed_in_patch,
    redact,
    refuse_managed_type,
)
from fhirauth.resources.structure import check_structure, schema_positions
from fhirauth.storage.base import (
    AlreadyExists,
    Create,
    Delete,
    Page,
    Replace,
    Storage,
    Stored,
    VersionConflict,
    Write,
)

Document = dict[str, Any]
ChangeHook = Callable[[Document | None, Document | None], Awaitable[None]]
PatchKind = Literal["merge", "json"]

_UNCONDITIONAL_RETRIES = 5
_MAX_VERSION = 2**63 - 1


@dataclass(frozen=True)
class Written:
    resource: Document
    created: bool
    changed: bool = True


@dataclass(frozen=True)
class Planned:
    write: Write | None
    written: Written
    previous: Document | None


def new_id() -> str:
    """A server-made id: a UUID of version 7 (RFC 9562 §5.7), 74 random bits after the creation time in
    milliseconds. Random ids put every new row on a random page of each storage index, and each such
    page is written again at commit; time-ordered ones append, so a Session insert cost about a third
    less in SQLite. (Python 3.14's `uuid.uuid7` makes this function unnecessary.)"""
    millis = time.time_ns() // 1_000_000
    random = int.from_bytes(os.urandom(10), "big")
    value = (
        (millis & _MILLIS_MASK) << 80
        | 0x7 << 76
        | (random >> 62 & 0xFFF) << 64
        | 0b10 << 62
        | random & _RAND_B_MASK
    )
    # uuid.UUID's canonical form, without the object (a third of the cost of an id).
    digits = f"{value:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


_MILLIS_MASK = (1 << 48) - 1
_RAND_B_MASK = (1 << 62) - 1


def _version_number(text: str) -> int | None:
    """A versionId as a number, or None: ASCII digits only (`isdigit` passes '²', which `int` refuses)
    and at most 64 bits, the most either backend stores (and a bound on what `int` is asked to parse)."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(_MAX_VERSION)):
        return None
    number = int(text)
    return number if number <= _MAX_VERSION else None


def parse_etag(value: str) -> int:
    tag = value.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    number = _version_number(tag.strip('"'))
    if number is None:
        raise BadRequest(f"Malformed version '{value}' in If-Match", "If-Match")
    return number


class View:
    """What a plan reads: storage, overlaid with the writes planned earlier in the same transaction."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._planned: dict[tuple[str, str], Stored] = {}

    async def get(self, resource_type: str, id: str) -> Stored | None:
        planned = self._planned.get((resource_type, id))
        if planned is not None:
            return planned
        return await self._storage.get(resource_type, id)

    def remember(self, write: Write) -> None:
        doc = write.document
        self._planned[(doc["resourceType"], doc["id"])] = Stored(doc, deleted=isinstance(write, Delete))


class ResourceService:
    def __init__(
        self,
        storage: Storage,
        schemas: SchemaRegistry,
        secrets: SecretFields,
        clock: Clock,
        *,
        base_url: str,
    ) -> None:
        self.storage = storage
        self.schemas = schemas
        self.secrets = secrets
        self.clock = clock
        self.base_url = base_url
        self._hooks: dict[str, list[ChangeHook]] = {}

    def on_change(self, resource_type: str, hook: ChangeHook) -> None:
        """Call `hook(before, after)` after every committed write of that type."""
        self._hooks.setdefault(resource_type, []).append(hook)

    def check_type(self, resource_type: str) -> None:
        if resource_type not in self.schemas.types:
            raise NotFound(f"Unknown resource type '{resource_type}'", resource_type)

    # Reads

    async def read(self, resource_type: str, id: str) -> Document:
        self.check_type(resource_type)
        stored = await self.storage.get(resource_type, id)
        if stored is None:
            raise NotFound(f"Resource {resource_type}/{id} not found")
        if stored.deleted:
            raise Gone(f"Resource {resource_type}/{id} was deleted")
        return stored.document

    async def find(self, resource_type: str, id: str) -> Stored | None:
        """The live resource or None: for internal callers that treat absence as an answer."""
        stored = await self.storage.get(resource_type, id)
        return None if stored is None or stored.deleted else stored

    async def vread(self, resource_type: str, id: str, version: str) -> Document:
        self.check_type(resource_type)
        number = _version_number(version)
        if number is None:
            raise NotFound(f"Version {version} of {resource_type}/{id} not found")
        stored = await self.storage.get_version(resource_type, id, number)
        if stored is None:
            raise NotFound(f"Version {version} of {resource_type}/{id} not found")
        if stored.deleted:
            raise Gone(f"Version {version} of {resource_type}/{id} is a deletion")
        return stored.document

    async def history(self, resource_type: str, id: str) -> list[Stored]:
        self.check_type(resource_type)
        versions = await self.storage.history(resource_type, id)
        if not versions:
            raise NotFound(f"Resource {resource_type}/{id} not found")
        return versions

    async def search(
        self, resource_type: str, params: Sequence[tuple[str, str]]
    ) -> tuple[search.SearchRequest, Page]:
        self.check_type(resource_type)
        request = search.parse(resource_type, params)
        return request, await self.storage.search(resource_type, request.query)

    # Planning

    async def _prepare(
        self,
        resource_type: str,
        id: str,
        body: Document,
        previous: Stored | None,
        version: int,
        *,
        secrets_from_previous: bool = True,
    ) -> Document:
        named = body.get("resourceType", resource_type)
        if named != resource_type:
            raise BadRequest(f"resourceType '{named}' does not match '{resource_type}'", "resourceType")
        now = isoformat(self.clock())
        live_previous = previous.document if previous is not None and not previous.deleted else None
        created_at = live_previous["meta"].get("createdAt", now) if live_previous else now
        doc = {k: v for k, v in body.items() if k not in ("meta", "resourceType", "id")}
        doc = {"resourceType": resource_type, "id": id, **doc}
        doc["meta"] = {"versionId": str(version), "lastUpdated": now, "createdAt": created_at}
        self.schemas.validate(doc)
        return await self.secrets.protect(doc, live_previous if secrets_from_previous else None)

    def _check_structure(self, resource_type: str, document: Document) -> None:
        """The structural guard of request bodies, with `$` property names allowed where the type's
        schema marks them: every document a caller has stored passes it."""
        check_structure(document, dollar_keys=schema_positions(self.schemas.schema(resource_type)))

    # `administrator`: whether the caller is the administrator (the root client, the CLI, a seed file),
    # who may also write the server-managed fields (secrets.MANAGED). It defaults to False so that a
    # call site which forgets to say is refused such a change instead of being allowed it.

    async def plan_create(
        self,
        resource_type: str,
        body: Document,
        view: View,
        id: str | None = None,
        *,
        administrator: bool = False,
    ) -> Planned:
        self.check_type(resource_type)
        self._check_structure(resource_type, body)
        id = id or body.get("id")
        existing: Stored | None = None
        if not id:
            # A fresh random id names nothing yet, not even a tombstone: no read (storage would
            # refuse a duplicate anyway).
            id = new_id()
        elif not isinstance(id, str):
            raise BadRequest("'id' must be a string", f"{resource_type}.id")
        else:
            existing = await view.get(resource_type, id)
        if existing is not None and not existing.deleted:
            raise Conflict(f"Resource {resource_type}/{id} already exists")
        if not administrator:
            # A tombstone's managed fields count as stored: deleting and re-creating a User must not
            # be a way around them (its sealed secrets are bound to the same id, so they still open).
            body = keep_managed(resource_type, body, existing.document if existing else None)
        version = existing.version + 1 if existing else 1
        doc = await self._prepare(resource_type, id, body, existing, version)
        write = Create(doc, over_tombstone_version=existing.version if existing else None)
        return Planned(write, Written(doc, created=True), None)

    async def plan_update(
        self,
        resource_type: str,
        id: str,
        body: Document,
        view: View,
        if_match: str | None = None,
        *,
        administrator: bool = False,
    ) -> Planned:
        self.check_type(resource_type)
        # FHIR update: a body naming another id than the url is refused, not rewritten to the url's
        # id, so what a policy judged (the body) is what gets written.
        if "id" in body and body["id"] != id:
            raise BadRequest(f"The body's id does not match '{id}' in the url", f"{resource_type}.id")
        existing = await view.get(resource_type, id)
        live = existing is not None and not existing.deleted
        if if_match is not None:
            expected = None if if_match.strip() == "*" else parse_etag(if_match)
            if not live or (expected is not None and existing.version != expected):  # type: ignore[union-attr]  # `live` says `existing` is not None
                raise PreconditionFailed(f"Version mismatch for {resource_type}/{id}", "If-Match")
        if not live:
            return await self.plan_create(resource_type, body, view, id=id, administrator=administrator)
        assert existing is not None
        self._check_structure(resource_type, body)
        if not administrator:
            body = keep_managed(resource_type, body, existing.document)
        doc = await self._prepare(resource_type, id, body, existing, existing.version + 1)
        if _same_content(doc, existing.document):
            return Planned(None, Written(existing.document, created=False, changed=False), existing.document)
        return Planned(Replace(doc, existing.version), Written(doc, created=False), existing.document)

    async def plan_patch(
        self,
        resource_type: str,
        id: str,
        patch: Any,
        kind: PatchKind,
        view: View,
        if_match: str | None = None,
        *,
        administrator: bool = False,
    ) -> Planned:
        self.check_type(resource_type)
        existing = await view.get(resource_type, id)
        if existing is None:
            raise NotFound(f"Resource {resource_type}/{id} not found")
        if existing.deleted:
            raise Gone(f"Resource {resource_type}/{id} was deleted")
        if if_match is not None and existing.version != parse_etag(if_match):
            raise PreconditionFailed(f"Version mismatch for {resource_type}/{id}", "If-Match")
        # Patches apply to what the caller can see; secret fields come back from the stored version.
        visible = redact(existing.document)
        if kind == "json":
            if not isinstance(patch, list):
                raise BadRequest("A JSON Patch must be an array of operations")
            patched = json_patch(visible, patch)
        else:
            if not isinstance(patch, dict):
                raise BadRequest("A merge patch must be a JSON object")
            patched = merge_patch(visible, patch)
        # The guard a PUT body passes, on the result: a patch's paths and values are not keys of
        # its own body, so PATCH and PUT would otherwise accept different documents.
        self._check_structure(resource_type, patched)
        if not administrator:
            patched = keep_managed_in_patch(resource_type, patched, existing.document)
        doc = await self._prepare(resource_type, id, patched, existing, existing.version + 1)
        return Planned(Replace(doc, existing.version), Written(doc, created=False), existing.document)

    async def plan_delete(
        self,
        resource_type: str,
        id: str,
        view: View,
        if_match: str | None = None,
        *,
        administrator: bool = False,
    ) -> Planned | None:
        self.check_type(resource_type)
        if not administrator:
            refuse_managed_type(resource_type)
        existing = await view.get(resource_type, id)
        if existing is None or existing.deleted:
            if if_match is not None:
                raise PreconditionFailed(f"Resource {resource_type}/{id} does not exist", "If-Match")
            return None
        if if_match is not None and existing.version != parse_etag(if_match):
            raise PreconditionFailed(f"Version mismatch for {resource_type}/{id}", "If-Match")
        tombstone = copy.deepcopy(existing.document)
        tombstone["meta"] = {
            **tombstone["meta"],
            "versionId": str(existing.version + 1),
            "lastUpdated": isoformat(self.clock()),
        }
        write = Delete(tombstone, existing.version)
        return Planned(write, Written(existing.document, created=False), existing.document)

    async def commit(self, plans: Sequence[Planned], *, if_match: bool = True) -> None:
        writes = [plan.write for plan in plans if plan.write is not None]
        if not writes:
            return
        try:
            await self.storage.write(writes)
        except AlreadyExists as error:
            raise Conflict(f"Resource {error.resource_type}/{error.id} already exists") from None
        except VersionConflict as error:
            raise PreconditionFailed(
                f"Resource {error.resource_type}/{error.id} was changed concurrently", "If-Match"
            ) from None
        for plan in plans:
            if plan.write is None:
                continue
            after = None if isinstance(plan.write, Delete) else plan.write.document
            for hook in self._hooks.get(plan.write.document["resourceType"], ()):
                await hook(plan.previous, after)

    # Writes

    async def create(
        self, resource_type: str, body: Document, id: str | None = None, *, administrator: bool = False
    ) -> Written:
        plan = await self.plan_create(
            resource_type, body, View(self.storage), id=id, administrator=administrator
        )
        await self.commit([plan])
        return plan.written

    async def create_internal(self, resource_type: str, body: Document) -> Document:
        """Create a resource the server built itself (a Session per issued token).

        JSON Schema validation guards what callers send; a document assembled by our own code from
        validated parts does not need it, and on the token endpoint it would be half the cost. The id
        is a fresh random one (or one the caller drew that way), so there is no existence read: the
        storage refuses a duplicate anyway.
        """
        id = body.get("id") or new_id()
        now = isoformat(self.clock())
        doc = {k: v for k, v in body.items() if k not in ("meta", "resourceType", "id")}
        doc = {"resourceType": resource_type, "id": id, **doc}
        doc["meta"] = {"versionId": "1", "lastUpdated": now, "createdAt": now}
        doc = await self.secrets.protect(doc, None)
        await self.commit([Planned(Create(doc), Written(doc, created=True), None)])
        return doc

    async def conditional_create(
        self,
        resource_type: str,
        body: Document,
        condition: Sequence[tuple[str, str]],
        *,
        administrator: bool = False,
    ) -> Written:
        """Create unless a resource matches `condition`; one match is returned as it is (200)."""
        _, page = await self.search(resource_type, [*condition, ("_count", "2")])
        if len(page.items) > 1:
            raise PreconditionFailed("The condition matches more than one resource", "If-None-Exist")
        if page.items:
            return Written(page.items[0], created=False, changed=False)
        return await self.create(resource_type, body, administrator=administrator)

    async def update(
        self,
        resource_type: str,
        id: str,
        body: Document,
        if_match: str | None = None,
        *,
        administrator: bool = False,
    ) -> Written:
        # Without If-Match the caller asked for no concurrency control: a lost race is replanned.
        for _ in range(_UNCONDITIONAL_RETRIES if if_match is None else 1):
            plan = await self.plan_update(
                resource_type, id, body, View(self.storage), if_match, administrator=administrator
            )
            try:
                await self.commit([plan])
            except (PreconditionFailed, Conflict):
                if if_match is not None:
                    raise
                continue
            return plan.written
        raise Conflict(f"Resource {resource_type}/{id} is being changed concurrently; try again")

    async def patch(
        self,
        resource_type: str,
        id: str,
        patch: Any,
        kind: PatchKind,
        if_match: str | None = None,
        *,
        administrator: bool = False,
    ) -> Written:
        for _ in range(_UNCONDITIONAL_RETRIES if if_match is None else 1):
            plan = await self.plan_patch(
                resource_type, id, patch, kind, View(self.storage), if_match, administrator=administrator
            )
            try:
                await self.commit([plan])
            except PreconditionFailed:
                if if_match is not None:
                    raise
                continue
            return plan.written
        raise Conflict(f"Resource {resource_type}/{id} is being changed concurrently; try again")

    async def delete(
        self, resource_type: str, id: str, if_match: str | None = None, *, administrator: bool = False
    ) -> Document | None:
        for _ in range(_UNCONDITIONAL_RETRIES if if_match is None else 1):
            plan = await self.plan_delete(
                resource_type, id, View(self.storage), if_match, administrator=administrator
            )
            if plan is None:
                return None
            try:
                await self.commit([plan])
            except PreconditionFailed:
                if if_match is not None:
                    raise
                continue
            return plan.written.resource
        raise Conflict(f"Resource {resource_type}/{id} is being changed concurrently; try again")

    async def save(self, doc: Document, expected_version: int) -> Document:
        """Internal compare-and-set write of a full document (2FA state, sessions, ...).

        Raises PreconditionFailed when someone else wrote first; the caller decides whether to retry.
        """
        resource_type, id = doc["resourceType"], doc["id"]
        existing = await self.storage.get(resource_type, id)
        if existing is None or existing.deleted or existing.version != expected_version:
            raise PreconditionFailed(f"Version mismatch for {resource_type}/{id}", "If-Match")
        # Internal callers hold the whole stored document: a secret they left out is meant to go.
        new = await self._prepare(
            resource_type, id, doc, existing, expected_version + 1, secrets_from_previous=False
        )
        plan = Planned(Replace(new, expected_version), Written(new, created=False), existing.document)
        await self.commit([plan])
        return new


def _same_content(new: Document, old: Document) -> bool:
    return {k: v for k, v in new.items() if k != "meta"} == {k: v for k, v in old.items() if k != "meta"}
