"""SMART App Launch endpoints: /.well-known/smart-configuration, /metadata, and the registration of
EHR launch contexts at /auth/smart/launch."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhirauth.auth.authenticate import unauthenticated
from fhirauth.auth.smart.configuration import capability_statement, smart_configuration
from fhirauth.auth.smart.launch import LAUNCH_SECONDS, may_register
from fhirauth.clock import isoformat
from fhirauth.errors import Forbidden
from fhirauth.http.bodies import read_document
from fhirauth.http.context import services_of
from fhirauth.http.oauth import metadata
from fhirauth.http.render import NoStoreJSON, body_response, json_response
from fhirauth.http.serving.route import EdgeRoute
from fhirauth.services import Services


def _metadata(services: Services) -> dict[str, object]:
    return metadata(services.settings.base_url.rstrip("/"), services.grants.grant_types)


async def configuration(request: Request) -> Response:
    # conformance.md: JSON whatever the Accept header asks for.
    return json_response(smart_configuration(_metadata(services_of(request))))


async def capabilities(request: Request) -> Response:
    services = services_of(request)
    statement = capability_statement(
        _metadata(services), services.resources.schemas.types, isoformat(services.clock())[:10]
    )
    return body_response(request, statement)


async def register_launch(request: Request) -> Response:
    services = services_of(request)
    principal = await services.authenticator.authenticate(request.headers.get("authorization"))
    if principal is None:
        raise unauthenticated("Authentication required")
    if not may_register(principal):
        raise Forbidden("Only the root client and clients with smart.launch_registration register launches")
    if services.scope_enforcement.restricts(principal):
        # Resource scopes (system/User.rs, say) were granted for reading records; giving another app a
        # user's context lies outside them, whoever's token it is.
        raise Forbidden("A token bound by SMART scopes does not register launches")
    body = await read_document(request, services.settings.max_body_bytes)
    launch = await services.launches.register(body)
    return NoStoreJSON({"launch": launch, "expires_in": LAUNCH_SECONDS}, 201)


routes = [
    EdgeRoute("/.well-known/smart-configuration", configuration, methods=["GET"]),
    EdgeRoute("/metadata", capabilities, methods=["GET"]),
    EdgeRoute("/auth/smart/launch", register_launch, methods=["POST"]),
]
