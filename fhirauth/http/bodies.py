"""Request bodies as documents: JSON or YAML by content type, then the structural guard. The bytes
come from serving/body.py, under the size limit."""

from __future__ import annotations

from typing import Any

import orjson
import yaml
from starlette.requests import Request

from fhirauth.errors import BadRequest, UnsupportedMediaType
from fhirauth.http.serving.body import read_bytes
from fhirauth.resources.structure import (
    MAX_DEPTH,
    MAX_KEYS,
    DollarKeys,
    check_structure,
    nowhere,
    when_planned,
)

JSON_TYPES = {
    "application/json",
    "application/fhir+json",
    "application/json+fhir",
    "application/merge-patch+json",
    "application/json-patch+json",
}
YAML_TYPES = {"text/yaml", "application/yaml", "application/x-yaml", "text/x-yaml"}


class _Loader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):  # type: ignore[misc]  # the base is chosen at import: the C loader when PyYAML was built with it
    """Safe YAML that keeps timestamps as text: resources are JSON, and JSON has no dates."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def parse_document(
    raw: bytes, content_type: str, *, max_keys: int = MAX_KEYS, dollar_keys: DollarKeys = nowhere
) -> Any:
    """The parsed body, checked by the structural guard; `dollar_keys` says where `$` property
    names may stand (nowhere unless the caller says so)."""
    if not raw.strip():
        raise BadRequest("Request body is empty")
    if content_type in YAML_TYPES:
        try:
            value = yaml.load(raw, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as error:
            raise BadRequest(f"Malformed YAML: {str(error).splitlines()[0]}") from None
        except RecursionError:
            raise BadRequest(f"Document nests deeper than {MAX_DEPTH} levels") from None
    elif content_type in JSON_TYPES or content_type == "":
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise BadRequest(f"Malformed JSON: {error}") from None
    else:
        raise UnsupportedMediaType(f"Unsupported Content-Type '{content_type}'; use JSON or YAML")
    check_structure(value, max_depth=MAX_DEPTH, max_keys=max_keys, dollar_keys=dollar_keys)
    return value


async def read_document(request: Request, limit: int, *, dollar_keys: DollarKeys = nowhere) -> Any:
    return parse_document(await read_bytes(request, limit), media_type(request), dollar_keys=dollar_keys)


async def read_resource(request: Request, limit: int) -> dict[str, Any]:
    """A resource body: its `$` property names are judged when the resource is planned, by its type."""
    value = await read_document(request, limit, dollar_keys=when_planned)
    if not isinstance(value, dict):
        raise BadRequest("Expected a JSON object")
    return value
