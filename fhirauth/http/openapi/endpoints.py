"""GET /openapi.json and the /docs page rendered from it (server-side, no script)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fhirauth.http.context import services_of
from fhirauth.http.html import templates
from fhirauth.http.openapi.components import SCHEMA_PREFIX, Document
from fhirauth.http.openapi.document import build_document
from fhirauth.http.render import json_response


def document_of(request: Request) -> Document:
    state = request.app.state
    document: Document | None = getattr(state, "openapi", None)
    if document is None:
        services = services_of(request)
        document = build_document(
            request.app.routes, services.resources.schemas, services.settings.base_url.rstrip("/")
        )
        state.openapi = document
    return document


async def openapi_json(request: Request) -> Response:
    return json_response(document_of(request))


def _schema_label(schema: Document) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).removeprefix(SCHEMA_PREFIX)
    if "oneOf" in schema:
        return " | ".join(_schema_label(option) for option in schema["oneOf"])
    if "enum" in schema:
        return " | ".join(str(value) for value in schema["enum"])
    kind = schema.get("type", "any")
    label = " or ".join(kind) if isinstance(kind, list) else str(kind)
    if "minimum" in schema or "maximum" in schema:
        label += f" {schema.get('minimum', '')}…{schema.get('maximum', '')}"
    if "pattern" in schema:
        label += f" matching {schema['pattern']}"
    return label


def _inline(text: str) -> list[tuple[str, bool]]:
    """Text with `code` spans as (text, is_code) pieces, for the template to mark up."""
    return [(piece, index % 2 == 1) for index, piece in enumerate(text.split("`")) if piece]


def _resolved(document: Document, node: Document) -> Document:
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return node
    target: Document = document
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return target


def docs_sections(document: Document) -> list[tuple[str, list[Document]]]:
    """The operations grouped by tag, flattened for the docs page."""
    sections: dict[str, list[Document]] = {tag["name"]: [] for tag in document["tags"]}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody", {}).get("content", {})
            sections[operation["tags"][0]].append(
                {
                    "id": operation["operationId"],
                    "method": method.upper(),
                    "path": path,
                    "summary": _inline(operation["summary"]),
                    "parameters": [
                        {
                            "name": parameter["name"],
                            "in": parameter["in"],
                            "required": parameter["required"],
                            "schema": _schema_label(parameter["schema"]),
                            "description": _inline(parameter["description"]),
                        }
                        for parameter in operation.get("parameters", [])
                    ],
                    "body": [
                        {"media_type": media_type, "schema": _schema_label(content["schema"])}
                        for media_type, content in body.items()
                    ],
                    "responses": [
                        {
                            "status": status,
                            "description": _inline(_resolved(document, response)["description"]),
                        }
                        for status, response in operation["responses"].items()
                    ],
                }
            )
    return list(sections.items())


async def docs(request: Request) -> Response:
    document = document_of(request)
    context = {"info": document["info"], "sections": docs_sections(document)}
    return templates.TemplateResponse(request, "api_docs.html", context, headers=_DOCS_HEADERS)


# A page of its own: no script at all, only the local stylesheets (SecurityHeadersMiddleware adds the rest).
_DOCS_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; base-uri 'none'; frame-ancestors 'none'"
}


routes = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
]
