"""The browser's side of trusted devices: the cookie at sign-in, the offer after a second factor, and
the list the two-factor settings page shows (where twofactor_pages forgets them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from fhirauth.auth.oidc.prompt import asks_for_sign_in
from fhirauth.http.context import services_of
from fhirauth.http.cookies import TRUSTED_COOKIE, TRUSTED_COOKIE_PATH, clear_cookie, read_cookie, set_cookie
from fhirauth.http.html import secure_cookies
from fhirauth.http.limits import client_ip
from fhirauth.twofactor.trusted_devices import NotTrusted, TrustedDevice

Document = dict[str, Any]

TRUST_FIELD = "trust_device"
# The form value that forgets every device.
ALL = "all"


@dataclass(frozen=True)
class Recognition:
    """What this browser's cookie does for this sign-in: the device standing in for the second
    factor, or none; `forget` when the cookie was this user's and is dead (expired, revoked)."""

    device: TrustedDevice | None
    forget: bool = False

    def clear_dead_cookie(self, request: Request, response: Response) -> None:
        if self.forget:
            clear_trusted_cookie(request, response)


async def recognize(request: Request, user: Document) -> Recognition:
    """Whether this browser skips `user`'s second factor. A request for a new sign-in (prompt=login,
    max_age) ignores the cookie; no cookie, no storage read."""
    cookie = read_cookie(request, TRUSTED_COOKIE)
    if cookie is None or asks_for_sign_in(request.url.query):
        return Recognition(None)
    services = services_of(request)
    days = (await services.twofactor.config()).trusted_device_days
    if days == 0:
        return Recognition(None)
    try:
        device = await services.trusted_devices.recognize(user, cookie, days=days, ip=client_ip(request))
    except NotTrusted as refused:
        return Recognition(None, forget=refused.ours)
    return Recognition(device)


def session_field(device: TrustedDevice) -> Document:
    """What a browser Session records of the device that stood in for its second factor."""
    return {"id": device.id, "amr": list(device.methods), "trusted": device.created}


async def remember_device(
    request: Request, response: Response, user: Document, methods: Sequence[str]
) -> None:
    """Trust this browser for `user` (the second factor `methods` just given), if offered: the
    cookie goes on `response`. A cookie of this user the browser holds is replaced."""
    services = services_of(request)
    days = (await services.twofactor.config()).trusted_device_days
    if days == 0:
        return
    granted = await services.trusted_devices.grant(
        user,
        days=days,
        methods=methods,
        user_agent=request.headers.get("user-agent"),
        ip=client_ip(request),
        replaces=read_cookie(request, TRUSTED_COOKIE),
    )
    set_cookie(
        response,
        TRUSTED_COOKIE,
        granted.cookie,
        max_age=granted.max_age,
        secure=secure_cookies(request),
        path=TRUSTED_COOKIE_PATH,
    )


def _when(epoch: int | None) -> str:
    if epoch is None:
        return "never"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


async def listed_devices(request: Request, user_id: str) -> list[dict[str, Any]]:
    """The user's trusted devices as the settings page shows them, this browser's marked."""
    services = services_of(request)
    current = services.trusted_devices.device_of(user_id, read_cookie(request, TRUSTED_COOKIE))
    return [
        {
            "id": device.id,
            "browser": device.browser,
            "current": device.id == current,
            "created": _when(device.created),
            "last_used": _when(device.last_used),
            "expires": _when(device.expires),
        }
        for device in await services.trusted_devices.devices(user_id)
    ]


async def forget_devices(request: Request, user_id: str, device_id: str) -> bool:
    """Forget one of the user's devices, or all of them (ALL); True when this browser's is among them."""
    services = services_of(request)
    ip = client_ip(request)
    if device_id == ALL:
        await services.trusted_devices.revoke_all(user_id, ip=ip)
    else:
        await services.trusted_devices.revoke(user_id, device_id, ip=ip)
    current = services.trusted_devices.device_of(user_id, read_cookie(request, TRUSTED_COOKIE))
    return current is not None and device_id in (ALL, current)


def clear_trusted_cookie(request: Request, response: Response) -> None:
    clear_cookie(response, TRUSTED_COOKIE, secure=secure_cookies(request), path=TRUSTED_COOKIE_PATH)
