"""Search parameters → a storage Query, and the searchset Bundle around the results."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fhirauth.errors import BadRequest, Issue
from fhirauth.resources.secrets import refuse_secret_path
from fhirauth.storage.base import Filter, Query

DEFAULT_COUNT = 100
MAX_COUNT = 1000
MAX_PAGE = 100_000
# Bounds far above any real client's search, and far below what a backend refuses with an error of
# its own: SQLite nests one AND per filter (its expression depth stops at 1000) and takes at most 2000
# ORDER BY terms, MongoDB at most 32 sort keys. Values bind one or two SQL parameters each.
MAX_PARAMETERS = 100
MAX_SORT_KEYS = 10
MAX_VALUES = 1000
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*$")
_INTEGER = re.compile(r"^-?\d{1,15}$")
_IGNORED = {"_format", "_total"}


@dataclass(frozen=True)
class SearchRequest:
    query: Query
    count: int
    page: int
    elements: tuple[str, ...]


# Searches repeat the same few parameter names; checking one against the secret fields costs µs.
@functools.lru_cache(maxsize=1024)
def _path(resource_type: str, name: str) -> str:
    if not _PATH.match(name) or len(name) > 200:
        raise BadRequest(f"Unknown search parameter '{name}'", name)
    refuse_secret_path(resource_type, name)
    return name


def _int_param(name: str, raw: str, low: int, high: int) -> int:
    if not _INTEGER.match(raw) or not low <= int(raw) <= high:
        raise BadRequest(f"'{name}' must be an integer from {low} to {high}", name)
    return int(raw)


def _too_costly(diagnostics: str, name: str) -> BadRequest:
    return BadRequest(diagnostics, issues=[Issue(diagnostics, "too-costly", (name,))])


def _candidates(raw: str) -> tuple[Any, ...]:
    """Query strings carry text; stored values may be booleans or numbers, so try each reading."""
    values: list[Any] = []
    for part in raw.split(","):
        values.append(part)
        if part in ("true", "false"):
            values.append(part == "true")
        elif _INTEGER.match(part):
            values.append(int(part))
    return tuple(values)


def parse(resource_type: str, params: Sequence[tuple[str, str]]) -> SearchRequest:
    filters: list[Filter] = []
    sort: dict[str, bool] = {}
    values = 0
    count, page = DEFAULT_COUNT, 1
    elements: tuple[str, ...] = ()
    for name, raw in params:
        if name == "_count":
            count = _int_param(name, raw, 0, MAX_COUNT)
        elif name in ("_page", "page"):
            page = _int_param(name, raw, 1, MAX_PAGE)
        elif name == "_sort":
            for key in filter(None, raw.split(",")):
                # A key after its first mention cannot change the order.
                sort.setdefault(_path(resource_type, key.lstrip("-")), key.startswith("-"))
                if len(sort) > MAX_SORT_KEYS:
                    raise _too_costly(f"At most {MAX_SORT_KEYS} sort keys are allowed", name)
        elif name == "_elements":
            elements = tuple(_path(resource_type, e) for e in filter(None, raw.split(",")))
        elif name in _IGNORED:
            continue
        elif name.startswith("_") and name != "_id":
            raise BadRequest(f"Unsupported search parameter '{name}'", name)
        else:
            if len(filters) == MAX_PARAMETERS:
                raise _too_costly(f"At most {MAX_PARAMETERS} search parameters are allowed", name)
            values += raw.count(",") + 1
            if values > MAX_VALUES:
                raise _too_costly(f"At most {MAX_VALUES} search values are allowed in all", name)
            if name == "_id":
                filters.append(Filter("id", tuple(filter(None, raw.split(",")))))
            else:
                filters.append(Filter(_path(resource_type, name), _candidates(raw)))
    query = Query(filters=tuple(filters), sort=tuple(sort.items()), offset=(page - 1) * count, limit=count)
    return SearchRequest(query=query, count=count, page=page, elements=elements)


def select_elements(doc: dict[str, Any], elements: tuple[str, ...]) -> dict[str, Any]:
    if not elements:
        return doc
    keep = {"resourceType", "id", "meta"} | {e.split(".")[0] for e in elements}
    return {key: value for key, value in doc.items() if key in keep}


def searchset(
    resource_type: str,
    request: SearchRequest,
    params: Sequence[tuple[str, str]],
    resources: list[dict[str, Any]],
    total: int | None,
    base_url: str,
) -> dict[str, Any]:
    kept = urlencode([(k, v) for k, v in params if k not in ("_page", "page")])
    prefix = f"/{resource_type}?{kept}&_page=" if kept else f"/{resource_type}?_page="

    def link(relation: str, page: int) -> dict[str, str]:
        return {"relation": relation, "url": f"{prefix}{page}"}

    links = [link("first", 1), link("self", request.page)]
    if request.page > 1:
        links.append(link("previous", request.page - 1))
    if total is not None and request.count:
        last = max(1, -(-total // request.count))
        if request.page < last:
            links.append(link("next", request.page + 1))
        links.append(link("last", last))
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": [
            {
                "resource": resource,
                "fullUrl": f"{base_url}/{resource_type}/{resource['id']}",
                "search": {"mode": "match"},
            }
            for resource in resources
        ],
    }
