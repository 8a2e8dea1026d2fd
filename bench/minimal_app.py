"""The floor fhirauth is measured against: Starlette + orjson returning a small User by id, no storage."""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def read_user(request: Request) -> Response:
    id = request.path_params["id"]
    user = {
        "resourceType": "User",
        "id": id,
        "email": f"{id}@bench.example",
        "name": {"givenName": "Bench", "familyName": id},
        "meta": {"versionId": "1", "lastUpdated": "2026-01-01T00:00:00.000Z"},
    }
    return Response(orjson.dumps(user), media_type="application/json")


app = Starlette(routes=[Route("/User/{id}", read_user, methods=["GET"])])
