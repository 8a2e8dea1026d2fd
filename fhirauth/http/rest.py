"""The resource REST API in Aidbox format: /{Type}, /{Type}/{id}, history, search, and bundles at /."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

from fhirauth.auth.principal import Principal
from fhirauth.errors import BadRequest
from fhirauth.http.bodies import media_type, read_document, read_resource
from fhirauth.http.context import services_of
from fhirauth.http.render import body_response, location_header, version_headers
from fhirauth.http.serving.route import EdgeRoute
from fhirauth.resources.bundles import EntryAuthorizer, RequestAlone
from fhirauth.resources.search import searchset, select_elements
from fhirauth.resources.secrets import redact
from fhirauth.resources.service import PatchKind
from fhirauth.resources.structure import in_bundle_resources, when_planned

Document = dict[str, Any]


# Headers that carry credentials stay out of what policies (and their logs) see.
_HIDDEN_HEADERS = frozenset({"authorization", "cookie"})
# A Bundle's own conditions are not its entries': each entry shows only those it carries.
_CONDITION_HEADERS = frozenset({"if-match", "if-none-exist", "if-none-match", "if-modified-since"})


def policy_request(request: Request, principal: Principal | None, body: Any = None) -> Document:
    """The request as AccessPolicy engines see it (Aidbox's request object)."""
    return _request_object(
        request,
        principal,
        method=request.method,
        path=request.url.path,
        query_string=request.url.query,
        params={**dict(request.query_params), **request.path_params},
        headers={k: v for k, v in request.headers.items() if k not in _HIDDEN_HEADERS},
        body=body,
    )


def _request_object(
    request: Request,
    principal: Principal | None,
    *,
    method: str,
    path: str,
    query_string: str,
    params: dict[str, Any],
    headers: dict[str, str],
    body: Any,
) -> Document:
    """`user`, `client`, `body` and `remote-addr` are absent, not null, when there is none: a
    json-schema policy's `required: ["user"]` must not be met by an anonymous request."""
    seen: Document = {
        "request-method": method.lower(),
        "uri": path,
        "scheme": request.url.scheme,
        "query-string": query_string,
        "params": params,
        "headers": headers,
    }
    if principal is not None and principal.user:
        seen["user"] = redact(principal.user)
    if principal is not None and principal.client:
        seen["client"] = redact(principal.client)
    if body is not None:
        seen["body"] = body
    if request.client is not None:
        seen["remote-addr"] = request.client.host
    return seen


def _route_params(path: str) -> dict[str, Any]:
    """The path parameters the resource routes would give `path`."""
    scope = {"type": "http", "path": path, "root_path": "", "method": "GET"}
    for route in routes:
        match, child = route.matches(scope)
        if match is not Match.NONE:
            params: dict[str, Any] = child["path_params"]
            return params
    return {}


def _authorizer(request: Request, principal: Principal | None) -> EntryAuthorizer:
    """Whether the caller may send a request (a Bundle entry, the read of a conditional create's
    match) on its own, judged as when it does."""
    access = services_of(request).access
    scopes = services_of(request).scope_enforcement
    hidden = _HIDDEN_HEADERS | _CONDITION_HEADERS
    headers = {k: v for k, v in request.headers.items() if k not in hidden}

    async def allowed(alone: RequestAlone) -> bool:
        # What `policy_request` gives for the request sent alone: the same shape, from the same place.
        seen = _request_object(
            request,
            principal,
            method=alone.method,
            path=alone.path,
            query_string=urlencode(alone.query),
            params={**dict(alone.query), **_route_params(alone.path)},
            headers={**headers, **alone.headers},
            body=alone.body,
        )
        return await access.allows(principal, seen) and await scopes.allows(principal, seen)

    return allowed


async def guard(request: Request, body: Any = None) -> Principal | None:
    services = services_of(request)
    principal = await services.authenticator.authenticate(request.headers.get("authorization"))
    # Building the request object costs more than the rest of a read; skip it when no policy is asked.
    seen = None
    if not services.access.unrestricted(principal):
        seen = policy_request(request, principal, body)
        await services.access.authorize(principal, seen)
    # A token's SMART resource scopes bound what the policies allow, the root client's tokens included.
    if services.scope_enforcement.restricts(principal):
        await services.scope_enforcement.authorize(
            principal, seen or policy_request(request, principal, body)
        )
    return principal


def _resource_response(request: Request, doc: Document, status: int = 200) -> Response:
    headers = version_headers(doc)
    if status == 201:
        headers.update(location_header(doc))
    return body_response(request, redact(doc), status, headers)


def _search_params(request: Request) -> list[tuple[str, str]]:
    # As Starlette's query_params reads the query string, without building the multidict.
    pairs = parse_qsl(request.scope["query_string"].decode("latin-1"), keep_blank_values=True)
    return [(k, v) for k, v in pairs if k != "_format"]


async def search(request: Request) -> Response:
    await guard(request)
    services = services_of(request)
    resource_type = request.path_params["type"]
    params = _search_params(request)
    search_request, page = await services.resources.search(resource_type, params)
    items = [select_elements(redact(doc), search_request.elements) for doc in page.items]
    bundle = searchset(resource_type, search_request, params, items, page.total, services.settings.base_url)
    return body_response(request, bundle)


async def create(request: Request) -> Response:
    services = services_of(request)
    body = await read_resource(request, services.settings.max_body_bytes)
    principal = await guard(request, body)
    administrator = services.access.administrator(principal)
    resource_type = request.path_params["type"]
    condition = _search_params(request)
    if_none_exist = request.headers.get("if-none-exist")
    if if_none_exist:
        condition += parse_qsl(if_none_exist)
    if condition:
        wanted_id = dict(condition).get("_id")
        if wanted_id:
            body = {**body, "id": wanted_id}
        written = await services.resources.conditional_create(
            resource_type, body, condition, administrator=administrator
        )
        read = RequestAlone("GET", f"/{resource_type}/{written.resource['id']}")
        if not written.created and not await _authorizer(request, principal)(read):
            # The create is satisfied, the record not shown: FHIR's minimal 200.
            return Response(status_code=200)
    else:
        written = await services.resources.create(resource_type, body, administrator=administrator)
    return _resource_response(request, written.resource, 201 if written.created else 200)


async def read(request: Request) -> Response:
    await guard(request)
    doc = await services_of(request).resources.read(request.path_params["type"], request.path_params["id"])
    return _resource_response(request, doc)


async def update(request: Request) -> Response:
    services = services_of(request)
    body = await read_resource(request, services.settings.max_body_bytes)
    principal = await guard(request, body)
    written = await services.resources.update(
        request.path_params["type"],
        request.path_params["id"],
        body,
        request.headers.get("if-match"),
        administrator=services.access.administrator(principal),
    )
    return _resource_response(request, written.resource, 201 if written.created else 200)


async def patch(request: Request) -> Response:
    services = services_of(request)
    # A patch is judged by its result: `$` names where the patched document's type allows them.
    body = await read_document(request, services.settings.max_body_bytes, dollar_keys=when_planned)
    principal = await guard(request, body)
    method = request.query_params.get("_method")
    kind: PatchKind
    if method in ("json-patch", "merge-patch"):
        kind = "json" if method == "json-patch" else "merge"
    elif media_type(request) == "application/json-patch+json":
        kind = "json"
        if not isinstance(body, list):
            raise BadRequest("A JSON Patch must be an array of operations")
    else:
        kind = "json" if isinstance(body, list) else "merge"
    written = await services.resources.patch(
        request.path_params["type"],
        request.path_params["id"],
        body,
        kind,
        request.headers.get("if-match"),
        administrator=services.access.administrator(principal),
    )
    return _resource_response(request, written.resource)


async def delete(request: Request) -> Response:
    principal = await guard(request)
    services = services_of(request)
    deleted = await services.resources.delete(
        request.path_params["type"],
        request.path_params["id"],
        request.headers.get("if-match"),
        administrator=services.access.administrator(principal),
    )
    if deleted is None:
        return Response(status_code=204)
    return body_response(request, redact(deleted))


async def history(request: Request) -> Response:
    await guard(request)
    services = services_of(request)
    resource_type, id = request.path_params["type"], request.path_params["id"]
    versions = await services.resources.history(resource_type, id)
    entries = []
    for index, stored in enumerate(versions):
        doc = stored.document
        is_first = index == len(versions) - 1 or versions[index + 1].deleted
        method = "DELETE" if stored.deleted else ("POST" if is_first else "PUT")
        entry: Document = {
            "fullUrl": f"{services.settings.base_url}/{resource_type}/{id}",
            "request": {"method": method, "url": f"/{resource_type}/{id}"},
            "response": {
                "etag": f'W/"{doc["meta"]["versionId"]}"',
                "lastModified": doc["meta"]["lastUpdated"],
            },
        }
        if not stored.deleted:
            entry["resource"] = redact(doc)
        entries.append(entry)
    bundle = {"resourceType": "Bundle", "type": "history", "total": len(entries), "entry": entries}
    return body_response(request, bundle)


async def vread(request: Request) -> Response:
    await guard(request)
    doc = await services_of(request).resources.vread(
        request.path_params["type"], request.path_params["id"], request.path_params["vid"]
    )
    return _resource_response(request, doc)


async def bundle(request: Request) -> Response:
    services = services_of(request)
    body = await read_document(request, services.settings.max_body_bytes, dollar_keys=in_bundle_resources)
    principal = await guard(request, body)
    result = await services.bundles.process(
        body,
        authorize=_authorizer(request, principal),
        administrator=services.access.administrator(principal),
    )
    return body_response(request, result)


class ResourceTypeConvertor(Convertor[str]):
    """Resource types start with a capital; every fixed route (/auth, /demo, /health…) does not.

    That lets the resource routes come first in the table, where most requests go, without ever
    shadowing a fixed route.
    """

    regex = "[A-Z][A-Za-z0-9]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("rtype", ResourceTypeConvertor())

routes = [
    EdgeRoute("/", bundle, methods=["POST"]),
    EdgeRoute("/{type:rtype}", search, methods=["GET"]),
    EdgeRoute("/{type:rtype}", create, methods=["POST"]),
    EdgeRoute("/{type:rtype}/{id:str}", read, methods=["GET"]),
    EdgeRoute("/{type:rtype}/{id:str}", update, methods=["PUT"]),
    EdgeRoute("/{type:rtype}/{id:str}", patch, methods=["PATCH"]),
    EdgeRoute("/{type:rtype}/{id:str}", delete, methods=["DELETE"]),
    EdgeRoute("/{type:rtype}/{id:str}/_history", history, methods=["GET"]),
    EdgeRoute("/{type:rtype}/{id:str}/_history/{vid:str}", vread, methods=["GET"]),
]
