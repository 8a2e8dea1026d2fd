"""Rendering resources and OperationOutcomes as JSON or YAML, whichever the caller asked for."""

from __future__ import annotations

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


def wants_yaml(request: Request) -> bool:
    # Parsing the query string costs more than the rest of this; most requests have no _format.
    if b"_format" in request.scope["query_string"]:
        fmt = request.query_params.get("_format", "")
        if fmt:
            return fmt in ("yaml", "yml")
    accept = request.headers.get("accept", "")
    return "yaml" in accept and "json" not in accept


def _json_type(request: Request) -> str:
    headers = request.headers
    named = headers.get("accept", "") + " " + headers.get("content-type", "")
    if "+" not in named:
        return "application/json"
    for candidate in ("application/fhir+json", "application/json+fhir"):
        if candidate in named:
            return candidate
    return "application/json"


def body_response(
    request: Request, body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    if wants_yaml(request):
        text = yaml.dump(body, Dumper=_YAML_DUMPER, sort_keys=False, allow_unicode=True)
        return Response(text, status, headers, media_type="text/yaml")
    return Response(orjson.dumps(body), status, headers, media_type=_json_type(request))


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def outcome_response(request: Request, error: OutcomeError) -> Response:
    return body_response(request, error.outcome(), error.status, error.headers)


def version_headers(doc: dict[str, Any]) -> dict[str, str]:
    meta = doc["meta"]
    modified = datetime.fromisoformat(meta["lastUpdated"].replace("Z", "+00:00"))
    return {
        "ETag": f'W/"{meta["versionId"]}"',
        "Last-Modified": format_datetime(modified, usegmt=True),
        "Location": f"/{doc['resourceType']}/{doc['id']}/_history/{meta['versionId']}",
    }
