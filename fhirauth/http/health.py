from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fhirauth.http.context import services_of
from fhirauth.http.render import json_response
from fhirauth.storage.base import StorageUnavailable


async def health(request: Request) -> Response:
    try:
        await services_of(request).storage.ping()
    except StorageUnavailable:
        return json_response({"status": "unavailable", "storage": "unreachable"}, 503)
    return json_response({"status": "ok"})


routes = [Route("/health", health, methods=["GET"])]
