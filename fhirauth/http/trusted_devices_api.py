"""Trusted devices for single-page apps: the JSON operations beside /app/auth/two-factor/passkeys, for
a signed-in user's first-party bearer token (twofactor_api.first_party_caller). List the devices;
forget one or all. Forgetting only takes a trust away, so it asks for no fresh second factor.
Refusals: 422 `{error, error_description}`."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from fhirauth.clock import isoformat
from fhirauth.http.context import services_of
from fhirauth.http.limits import client_ip
from fhirauth.http.render import json_response
from fhirauth.http.serving.route import EdgeRoute
from fhirauth.http.twofactor_api import first_party_caller, refusal
from fhirauth.twofactor.service import TwoFactorError
from fhirauth.twofactor.trusted_devices import TrustedDevice

BASE = "/app/auth/two-factor/trusted-devices"


def unknown_device() -> TwoFactorError:
    return TwoFactorError("unknown_device", "This account has no such trusted device")


def _when(epoch: int | None) -> str | None:
    return isoformat(datetime.fromtimestamp(epoch, UTC)) if epoch is not None else None


def visible(device: TrustedDevice) -> dict[str, str | None]:
    return {
        "id": device.id,
        "browser": device.browser,
        "created": _when(device.created),
        "lastUsed": _when(device.last_used),
        "expires": _when(device.expires),
    }


async def list_devices(request: Request) -> Response:
    try:
        caller = await first_party_caller(request)
    except TwoFactorError as error:
        return refusal(request, error)
    devices = await services_of(request).trusted_devices.devices(caller.user["id"])
    return json_response({"devices": [visible(device) for device in devices]})


async def forget(request: Request) -> Response:
    try:
        caller = await first_party_caller(request)
        revoked = await services_of(request).trusted_devices.revoke(
            caller.user["id"], request.path_params["id"], ip=client_ip(request)
        )
        if not revoked:
            raise unknown_device()
    except TwoFactorError as error:
        return refusal(request, error)
    return json_response({})


async def forget_all(request: Request) -> Response:
    try:
        caller = await first_party_caller(request)
    except TwoFactorError as error:
        return refusal(request, error)
    revoked = await services_of(request).trusted_devices.revoke_all(caller.user["id"], ip=client_ip(request))
    return json_response({"revoked": revoked})


routes = [
    EdgeRoute(BASE, list_devices, methods=["GET"]),
    EdgeRoute(BASE, forget_all, methods=["DELETE"]),
    EdgeRoute(f"{BASE}/{{id}}", forget, methods=["DELETE"]),
]
