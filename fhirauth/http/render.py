"""Rendering resources and OperationOutcomes as JSON or YAML, whichever the caller asked for."""

from __future__ import annotations

import functools
from datetime import datetime
from email.utils import format_datetime
from typing import Any

import orjson
import yaml
from starlette.requests import Request
from starlette.responses import Response

from fhirauth.errors import OutcomeError

_YAML_DUMPER = yaml.CSafeDumper if hasattr(yaml, "CSafeDumper") else yaml.SafeDumper

# RFC 6749 §5.1: responses carrying tokens or credentials are never cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def retry_after_header(seconds: int) -> dict[str, str]:
    """The Retry-After header of an answer that asks the client to wait (`ratelimit.retry_after`)."""
    return {"Retry-After": str(seconds)}


def _negotiation(request: Request) -> tuple[str, str]:
    """The Accept and Content-Type headers (first of each, "" when absent) in one pass over the raw
    headers: every answer reads both, and a Headers lookup per name costs more than the scan."""
    accept = content_type = None
    for name, value in request.scope["headers"]:
        if name == b"accept" and accept is None:
            accept = value.decode("latin-1")
        elif name == b"content-type" and content_type is None:
            content_type = value.decode("latin-1")
    return accept or "", content_type or ""


def _wants_yaml(request: Request, accept: str) -> bool:
    # Parsing the query string costs more than the rest of this; most requests have no _format.
    if b"_format" in request.scope["query_string"]:
        fmt = request.query_params.get("_format", "")
        if fmt:
            return fmt in ("yaml", "yml")
    return "yaml" in accept and "json" not in accept


def _json_type(accept: str, content_type: str) -> str:
    named = accept + " " + content_type
    if "+" not in named:
        return "application/json"
    for candidate in ("application/fhir+json", "application/json+fhir"):
        if candidate in named:
            return candidate
    return "application/json"


def body_response(
    request: Request, body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    accept, content_type = _negotiation(request)
    if _wants_yaml(request, accept):
        text = yaml.dump(body, Dumper=_YAML_DUMPER, sort_keys=False, allow_unicode=True)
        return Response(text, status, headers, media_type="text/yaml")
    return Response(orjson.dumps(body), status, headers, media_type=_json_type(accept, content_type))


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


_NO_STORE_JSON = [
    (b"content-type", b"application/json"),
    *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in NO_STORE.items()),
]


class NoStoreJSON(Response):
    """A JSON answer that must not be cached, its header list built once: every token response is
    one, and Starlette's `init_headers` re-encodes and rescans the same three headers each time."""

    def __init__(self, body: Any, status: int = 200) -> None:
        self.status_code = status
        self.background = None
        self.body = orjson.dumps(body)
        self.raw_headers = [(b"content-length", str(len(self.body)).encode("latin-1")), *_NO_STORE_JSON]


def outcome_response(request: Request, error: OutcomeError) -> Response:
    return body_response(request, error.outcome(), error.status, error.headers)


def version_headers(doc: dict[str, Any]) -> dict[str, str]:
    meta = doc["meta"]
    return {"ETag": f'W/"{meta["versionId"]}"', "Last-Modified": _http_date(meta["lastUpdated"])}


def location_header(doc: dict[str, Any]) -> dict[str, str]:
    return {"Location": f"/{doc['resourceType']}/{doc['id']}/_history/{doc['meta']['versionId']}"}


@functools.lru_cache(maxsize=4096)
def _http_date(last_updated: str) -> str:
    # Reads of the same resources repeat the same few timestamps; formatting one costs a few µs.
    modified = datetime.fromisoformat(last_updated.replace("Z", "+00:00"))
    return format_datetime(modified, usegmt=True)
