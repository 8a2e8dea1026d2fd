"""The OpenAPI 3.1 document, built from the routes and the resource schemas."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence

from starlette.routing import BaseRoute, Route

from fhirauth import __version__
from fhirauth.http.openapi.components import COMMON_SCHEMAS, SECURITY_SCHEMES, Document, resource_components
from fhirauth.http.openapi.operations import FIXED, PER_TYPE, RESPONSES
from fhirauth.resources.schemas import SchemaRegistry

OPENAPI_VERSION = "3.1.0"
_CONVERTOR = re.compile(r"{(\w+):\w+}")


def _openapi_path(path: str) -> str:
    return _CONVERTOR.sub(r"{\1}", path)


def build_document(routes: Sequence[BaseRoute], schemas: SchemaRegistry, base_url: str) -> Document:
    """The OpenAPI document of the routes that have a description; raises on a schema it cannot carry."""
    paths: dict[str, Document] = {}
    resource_types = sorted(schemas.types)
    for route in routes:
        if not isinstance(route, Route) or route.methods is None:
            continue
        methods = sorted(method.lower() for method in route.methods if method != "HEAD")
        if route.endpoint in PER_TYPE:
            for resource_type in resource_types:
                path = _openapi_path(route.path.replace("{type:rtype}", resource_type))
                for method in methods:
                    paths.setdefault(path, {})[method] = PER_TYPE[route.endpoint](resource_type)
        elif route.endpoint in FIXED:
            for method in methods:
                operation = FIXED[route.endpoint](route.path)
                if len(methods) > 1:
                    operation["operationId"] += method.capitalize()
                paths.setdefault(_openapi_path(route.path), {})[method] = operation
    components: dict[str, Document] = copy.deepcopy(COMMON_SCHEMAS)
    for resource_type in resource_types:
        components.update(resource_components(resource_type, schemas.schema(resource_type)))
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "fhirauth",
            "version": __version__,
            "description": "Resources in Aidbox's format, OAuth 2.0 and two-factor authentication.",
        },
        "servers": [{"url": base_url}],
        "security": [{"basicAuth": []}, {"bearerAuth": []}],
        "tags": [{"name": tag} for tag in _tags(paths)],
        "paths": {path: paths[path] for path in sorted(paths)},
        "components": {
            "schemas": components,
            "responses": copy.deepcopy(RESPONSES),
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def _tags(paths: Document) -> list[str]:
    seen: dict[str, None] = {}
    for item in paths.values():
        for operation in item.values():
            seen.update(dict.fromkeys(operation["tags"]))
    return list(seen)
