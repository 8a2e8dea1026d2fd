"""Bundles posted to `/`: transaction (all or nothing), batch (each on its own), collection (upsert each)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fhirauth.errors import BadRequest, Forbidden, OutcomeError
from fhirauth.resources.secrets import redact
from fhirauth.resources.service import PatchKind, Planned, ResourceService, View, Written, new_id
from fhirauth.storage.base import Storage, Stored, Write

Document = dict[str, Any]
Progress = Callable[[int], None]


@dataclass(frozen=True)
class RequestAlone:
    """A request as the caller would send it on its own: every entry of a Bundle is authorized as the
    request it describes."""

    method: str
    path: str
    query: Sequence[tuple[str, str]] = ()
    # The entry's conditions as the headers that carry them alone (`if-none-exist`, `if-match`).
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None


# Whether the caller may send that request.
EntryAuthorizer = Callable[[RequestAlone], Awaitable[bool]]

_REASONS = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}
# A bare relative path such as `User/u1`, whose urlsplit would be the path alone (no scheme, no
# authority, no query, nothing urlsplit strips): most entries of a seed file, split without it.
_PLAIN_PATH = re.compile(r"(?!//)[A-Za-z0-9._\-/]+")


@dataclass(frozen=True)
class Target:
    resource_type: str
    id: str | None
    params: list[tuple[str, str]]

    @property
    def path(self) -> str:
        return f"/{self.resource_type}" if self.id is None else f"/{self.resource_type}/{self.id}"


@dataclass(frozen=True)
class EntryRequest:
    """What an entry asks for, checked for shape: a collection entry is the upsert it stands for."""

    method: str
    target: Target
    resource: Any
    if_match: str | None
    if_none_exist: str | None

    def alone(self) -> RequestAlone:
        headers = {
            name: value
            for name, value in (("if-none-exist", self.if_none_exist), ("if-match", self.if_match))
            if value is not None
        }
        body = self.resource if self.method in ("POST", "PUT", "PATCH") else None
        return RequestAlone(self.method, self.target.path, self.target.params, headers, body)


def _target(url: Any, index: int) -> Target:
    if not isinstance(url, str) or not url.strip("/"):
        raise BadRequest("Entry request.url is missing", f"Bundle.entry[{index}].request.url")
    if _PLAIN_PATH.fullmatch(url):
        path, query = url, ""
    else:
        try:
            parts = urlsplit(url)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            raise BadRequest(f"Malformed entry url '{url}'", f"Bundle.entry[{index}].request.url") from None
        path, query = parts.path, parts.query
    segments = [s for s in path.split("/") if s]
    if not segments or len(segments) > 2:
        raise BadRequest(f"Unsupported entry url '{url}'", f"Bundle.entry[{index}].request.url")
    return Target(segments[0], segments[1] if len(segments) == 2 else None, parse_qsl(query) if query else [])


def _location(doc: Document) -> str:
    return f"/{doc['resourceType']}/{doc['id']}/_history/{doc['meta']['versionId']}"


def _response(status: int, doc: Document | None) -> Document:
    response: Document = {"status": _REASONS.get(status, str(status))}
    if doc is not None:
        response["location"] = _location(doc)
        response["etag"] = f'W/"{doc["meta"]["versionId"]}"'
        response["lastModified"] = doc["meta"]["lastUpdated"]
    return {"response": response, **({"resource": redact(doc)} if doc is not None else {})}


def _resolve_references(value: Any, mapping: dict[str, tuple[str, str]]) -> Any:
    """Replace `urn:uuid:` fullUrls of other entries by the ids they were given."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "id" and isinstance(item, str) and item in mapping:
                out[key] = mapping[item][1]
            else:
                out[key] = _resolve_references(item, mapping)
        return out
    if isinstance(value, list):
        return [_resolve_references(item, mapping) for item in value]
    if isinstance(value, str) and value in mapping:
        return "/".join(mapping[value])
    return value


def _named(entry: Document) -> tuple[str, str] | None:
    """The resource an entry names by its request url or its resource's id, if it plainly names one.

    Only a hint for reading ahead: `_plan` parses and checks every entry itself.
    """
    request, resource = entry.get("request"), entry.get("resource")
    url = request.get("url") if isinstance(request, dict) else None
    if isinstance(url, str) and _PLAIN_PATH.fullmatch(url):
        segments = [s for s in url.split("/") if s]
        if len(segments) == 2:
            return segments[0], segments[1]
    if isinstance(resource, dict):
        resource_type, id = resource.get("resourceType"), resource.get("id")
        if isinstance(resource_type, str) and isinstance(id, str):
            return resource_type, id
    return None


class _ReadAhead(View):
    """A transaction's view, with the stored versions of the resources its entries name read at once.

    One read per type instead of one (or two: an upsert of a new id reads, then creates, which reads
    again) per entry. Reading early is as safe as reading late: the writes are compare-and-set.
    """

    def __init__(self, storage: Storage, read: dict[tuple[str, str], Stored | None]) -> None:
        super().__init__(storage)
        self._read = read

    @classmethod
    async def of(cls, storage: Storage, entries: list[Document]) -> _ReadAhead:
        ids: dict[str, list[str]] = {}
        for entry in entries:
            named = _named(entry)
            if named is not None:
                ids.setdefault(named[0], []).append(named[1])
        read: dict[tuple[str, str], Stored | None] = {}
        for resource_type, of_type in ids.items():
            found = await storage.get_many(resource_type, of_type)
            read.update(((resource_type, id), found.get(id)) for id in of_type)
        return cls(storage, read)

    async def get(self, resource_type: str, id: str) -> Stored | None:
        key = (resource_type, id)
        if key in self._read:
            return self._read[key]
        return await super().get(resource_type, id)

    def remember(self, write: Write) -> None:
        # From now on the planned write answers for this resource.
        self._read.pop((write.document["resourceType"], write.document["id"]), None)
        super().remember(write)


class BundleProcessor:
    def __init__(self, resources: ResourceService) -> None:
        self.resources = resources

    async def process(
        self,
        bundle: Any,
        progress: Progress | None = None,
        *,
        authorize: EntryAuthorizer | None = None,
        administrator: bool = False,
    ) -> Document:
        """Run a Bundle's entries; each is authorized by `authorize` first unless the caller is an
        administrator. Without an administrator or an `authorize`, every entry is refused: a call
        site that forgets to say who is calling fails closed."""
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise BadRequest("Expected a Bundle", "Bundle")
        kind = bundle.get("type")
        entries = bundle.get("entry", [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise BadRequest("Bundle.entry must be an array of objects", "Bundle.entry")
        entries = self._assign_ids(entries)
        caller = _Caller(authorize, administrator)
        if kind == "transaction":
            results = await self._transaction(entries, caller, progress)
            response_type = "transaction-response"
        elif kind in ("batch", "collection"):
            results = await self._batch(entries, kind, caller, progress)
            response_type = "batch-response"
        else:
            raise BadRequest("Bundle.type must be transaction, batch or collection", "Bundle.type")
        return {"resourceType": "Bundle", "type": response_type, "entry": results}

    def _assign_ids(self, entries: list[Document]) -> list[Document]:
        mapping: dict[str, tuple[str, str]] = {}
        for entry in entries:
            full_url = entry.get("fullUrl")
            resource = entry.get("resource")
            if isinstance(full_url, str) and full_url.startswith("urn:uuid:") and isinstance(resource, dict):
                resource_type = resource.get("resourceType")
                if isinstance(resource_type, str):
                    mapping[full_url] = (resource_type, str(resource.get("id") or new_id()))
        if not mapping:
            return entries
        resolved = []
        for entry in entries:
            entry = dict(entry)
            full_url = entry.get("fullUrl")
            if isinstance(full_url, str) and full_url in mapping and isinstance(entry.get("resource"), dict):
                entry["resource"] = {**entry["resource"], "id": mapping[full_url][1]}
            if "resource" in entry:
                entry["resource"] = _resolve_references(entry["resource"], mapping)
            resolved.append(entry)
        return resolved

    async def _plan(self, request: EntryRequest, view: View, caller: _Caller) -> tuple[int, Planned | None]:
        method, target, resource = request.method, request.target, request.resource
        administrator = caller.administrator
        if method == "POST" and target.id is None:
            condition = target.params or (parse_qsl(request.if_none_exist) if request.if_none_exist else [])
            if condition:
                _, page = await self.resources.search(target.resource_type, [*condition, ("_count", "2")])
                if len(page.items) > 1:
                    raise BadRequest("The condition matches more than one resource")
                if page.items:
                    matched = page.items[0]
                    if not await caller.may_read(matched):
                        # The create is satisfied, the record not shown: FHIR's minimal 200.
                        return 200, None
                    return 200, Planned(None, _existing(matched), None)
                wanted_id = dict(condition).get("_id")
                if wanted_id and isinstance(resource, dict):
                    resource = {**resource, "id": wanted_id}
            assert isinstance(resource, dict)
            return 201, await self.resources.plan_create(
                target.resource_type, resource, view, administrator=administrator
            )
        if method == "PUT":
            assert isinstance(resource, dict) and target.id is not None
            plan = await self.resources.plan_update(
                target.resource_type, target.id, resource, view, request.if_match, administrator=administrator
            )
            return (201 if plan.written.created else 200), plan
        if method == "PATCH":
            assert target.id is not None
            patch_kind: PatchKind = "json" if isinstance(resource, list) else "merge"
            return 200, await self.resources.plan_patch(
                target.resource_type,
                target.id,
                resource,
                patch_kind,
                view,
                request.if_match,
                administrator=administrator,
            )
        if method == "DELETE":
            assert target.id is not None
            deletion = await self.resources.plan_delete(
                target.resource_type, target.id, view, request.if_match, administrator=administrator
            )
            return (200 if deletion else 204), deletion
        assert method == "GET" and target.id is not None
        doc = await self.resources.read(target.resource_type, target.id)
        return 200, Planned(None, _existing(doc), None)

    async def _transaction(
        self, entries: list[Document], caller: _Caller, progress: Progress | None
    ) -> list[Document]:
        # Every entry is read and authorized before anything is planned: one refusal refuses them all.
        requests = []
        for index, entry in enumerate(entries):
            try:
                request = _entry_request(entry, index, "transaction")
                await caller.check(request, index)
            except OutcomeError as error:
                _point_at_entry(error, index)
                raise
            requests.append(request)
        view = await _ReadAhead.of(self.resources.storage, entries)
        planned: list[tuple[int, Planned | None]] = []
        for index, request in enumerate(requests):
            try:
                status, plan = await self._plan(request, view, caller)
            except OutcomeError as error:
                _point_at_entry(error, index)
                raise
            if plan is not None and plan.write is not None:
                view.remember(plan.write)
            planned.append((status, plan))
            if progress:
                progress(1)
        await self.resources.commit([plan for _, plan in planned if plan is not None])
        return [_response(status, plan.written.resource if plan else None) for status, plan in planned]

    async def _batch(
        self, entries: list[Document], kind: str, caller: _Caller, progress: Progress | None
    ) -> list[Document]:
        results = []
        for index, entry in enumerate(entries):
            try:
                request = _entry_request(entry, index, kind)
                await caller.check(request, index)
                status, plan = await self._plan(request, View(self.resources.storage), caller)
                if plan is not None:
                    await self.resources.commit([plan])
                results.append(_response(status, plan.written.resource if plan else None))
            except OutcomeError as error:
                _point_at_entry(error, index)
                results.append({"response": {"status": str(error.status), "outcome": error.outcome()}})
            if progress:
                progress(1)
        return results


@dataclass(frozen=True)
class _Caller:
    authorize: EntryAuthorizer | None
    administrator: bool

    async def check(self, request: EntryRequest, index: int) -> None:
        if self.administrator:
            return
        path = request.target.path
        if self.authorize is None or not await self.authorize(request.alone()):
            raise Forbidden(f"Access denied to {request.method} {path}", f"Bundle.entry[{index}]")

    async def may_read(self, doc: Document) -> bool:
        """Whether the caller may read `doc` by `GET /Type/id`."""
        if self.administrator:
            return True
        read = RequestAlone("GET", f"/{doc['resourceType']}/{doc['id']}")
        return self.authorize is not None and await self.authorize(read)


def _entry_request(entry: Document, index: int, kind: str) -> EntryRequest:
    resource = entry.get("resource")
    request = entry.get("request")
    if kind == "collection" or request is None:
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise BadRequest("Entry has no resource", f"Bundle.entry[{index}].resource")
        if "id" in resource:
            request = {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
        else:
            request = {"method": "POST", "url": resource["resourceType"]}
    if not isinstance(request, dict):
        raise BadRequest("Entry request must be an object", f"Bundle.entry[{index}].request")
    method = str(request.get("method", "")).upper()
    target = _target(request.get("url"), index)
    if_match = _optional_text(request, "ifMatch", index)
    if_none_exist = _optional_text(request, "ifNoneExist", index)
    if method in ("POST", "PUT", "PATCH") and not isinstance(resource, (dict, list)):
        raise BadRequest("Entry has no resource", f"Bundle.entry[{index}].resource")
    if method == "GET" and kind != "transaction" and target.id is None:
        raise BadRequest("Searches are not supported inside a batch", f"Bundle.entry[{index}].request")
    supported = (
        (method == "POST" and target.id is None and isinstance(resource, dict))
        or (method == "PUT" and target.id is not None and isinstance(resource, dict))
        or (method in ("PATCH", "DELETE") and target.id is not None)
        or (method == "GET" and kind != "transaction")
    )
    if not supported:
        raise BadRequest(
            f"Unsupported entry request {method} {request.get('url')}", f"Bundle.entry[{index}].request"
        )
    return EntryRequest(method, target, resource, if_match, if_none_exist)


def _optional_text(request: Document, name: str, index: int) -> str | None:
    value = request.get(name)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"Entry request.{name} must be a string", f"Bundle.entry[{index}].request.{name}")
    return value


def _existing(doc: Document) -> Written:
    return Written(doc, created=False, changed=False)


def _point_at_entry(error: OutcomeError, index: int) -> None:
    error.diagnostics = f"Bundle.entry[{index}]: {error.diagnostics}"
    error.issues = [
        type(issue)(
            f"Bundle.entry[{index}]: {issue.diagnostics}", issue.code, issue.expression, issue.severity
        )
        for issue in error.issues
    ]
