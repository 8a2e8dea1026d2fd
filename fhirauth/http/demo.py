"""The demo app at /demo, and the webhook receiver that stands in for an SMS gateway (as Aidbox's demo does)."""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from fhirauth.errors import BadRequest, Forbidden
from fhirauth.http.bodies import read_document
from fhirauth.http.context import services_of
from fhirauth.http.render import json_response
from fhirauth.http.security_headers import page_policy
from fhirauth.http.serving.body import read_bytes
from fhirauth.twofactor.qr import qr_svg

log = logging.getLogger("fhirauth.demo")

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
_FILES = {"demo.js": "text/javascript", "demo.css": "text/css"}


# The demo page runs only its own script; the token it keeps travels in a URL fragment, never a Referer.
_PAGE_HEADERS = {
    "Content-Security-Policy": page_policy(None),
    "Cache-Control": "no-store",
}


async def page(request: Request) -> Response:
    return FileResponse(DEMO_DIR / "index.html", media_type="text/html", headers=_PAGE_HEADERS)


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in _FILES:
        return Response(status_code=404)
    return FileResponse(DEMO_DIR / name, media_type=_FILES[name])


async def qr(request: Request) -> Response:
    """The QR of an otpauth URI. POSTed, so the secret never lands in a URL or an access log."""
    uri = (await read_bytes(request, 2048)).decode("utf-8", "replace").strip()
    if not uri.startswith("otpauth://totp/"):
        raise BadRequest("Expected an otpauth://totp/ URI")
    return Response(qr_svg(uri), media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


async def webhook_receiver(request: Request) -> Response:
    """Receives `{user, token}` from the 2FA webhook and logs it, as an SMS gateway would send it."""
    services = services_of(request)
    principal = await services.authenticator.authenticate(request.headers.get("authorization"))
    if principal is None or principal.kind == "user":
        raise Forbidden("The webhook receiver takes a client's Basic credentials")
    body = await read_document(request, services.settings.max_body_bytes)
    user = body.get("user") if isinstance(body, dict) else None
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(user, dict) or not isinstance(token, str):
        raise BadRequest("Expected {user, token}")
    log.info("[demo SMS gateway] code for %s: %s", user.get("email") or user.get("id"), token)
    return json_response({})


routes = [
    Route("/demo", page, methods=["GET"]),
    Route("/demo/auth", page, methods=["GET"]),
    Route("/demo/qr", qr, methods=["POST"]),
    Route("/demo/webhook/two-factor-confirmation", webhook_receiver, methods=["POST"]),
    Route("/demo/{name:str}", asset, methods=["GET"]),
]
