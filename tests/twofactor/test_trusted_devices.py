"""Trusted devices ("don't ask again on this device"), the domain rules on both backends.

A trusted device is a signed cookie (device id, 256 random bits, an HMAC binding both to the user)
and a server-side entry holding the random part's hash. The clock is a ManualClock: expiry moves
with `clock.advance`, never with a sleep.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.mongo import drop_database, with_database

from fhirauth.app import INDEXES, build_services
from fhirauth.clock import ManualClock
from fhirauth.secretbox import SecretBox
from fhirauth.services import Services
from fhirauth.settings import Settings
from fhirauth.storage.backends import open_storage
from fhirauth.twofactor.trusted_devices import (
    KIND,
    MAX_DEVICES,
    NotTrusted,
    TrustedDevices,
    browser_of,
)

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
PASSWORD = "correct horse battery staple"
CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
DAY = 86400
START = 1767225600  # the ManualClock's start, 2026-01-01T00:00:00Z
MASTER_SECRET = "trusted-device-test-master-secret"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["sqlite", "mongo"])
async def services(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[Services]:
    if request.param == "sqlite":
        url = "sqlite://:memory:"
    else:
        url = with_database(request.getfixturevalue("mongo_uri"), f"trusted{uuid.uuid4().hex[:12]}")
    storage = open_storage(url, clock)
    await storage.start(INDEXES)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, storage=url, secret_key=MASTER_SECRET, root_client_secret="secret"
    )
    services = build_services(settings, storage, clock)
    yield services
    await services.keys.close()
    await storage.close()
    if request.param == "mongo":
        drop_database(url)


async def make_user(services: Services, user_id: str = "ann") -> dict[str, Any]:
    body = {
        "resourceType": "User",
        "email": f"{user_id}@example.org",
        "password": PASSWORD,
        "twoFactor": {"enabled": True, "secretKey": SECRET},
    }
    written = await services.resources.create("User", body, id=user_id, administrator=True)
    return written.resource


async def current(services: Services, user_id: str = "ann") -> dict[str, Any]:
    stored = await services.resources.find("User", user_id)
    assert stored is not None
    return stored.document


async def audit(services: Services, action: str) -> list[dict[str, str]]:
    """The details of the AuditEvents of `action`, oldest first."""
    _, page = await services.resources.search("AuditEvent", [("action", action), ("_sort", "recorded")])
    return [
        {item["type"]: item["valueString"] for item in event.get("entity", [{}])[0].get("detail", [])}
        | {"user": event["agent"][0]["who"]["id"]}
        for event in page.items
    ]


def sign(user_id: str, device_id: str, secret: str) -> str:
    """A cookie signed the way the server signs one: for the tests that forge the other parts."""
    key = SecretBox([MASTER_SECRET]).derive_key("trusted-device cookie")
    mac = hmac.new(key, f"{user_id}.{device_id}.{secret}".encode(), hashlib.sha256).digest()[:16]
    return f"{device_id}.{secret}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


async def grant(services: Services, user: dict[str, Any], *, days: int = 30, **fields: Any) -> str:
    granted = await services.trusted_devices.grant(
        user, days=days, methods=("otp",), user_agent=fields.get("user_agent", CHROME_LINUX), ip="192.0.2.7"
    )
    return granted.cookie


async def refusal(services: Services, user: dict[str, Any], cookie: str, days: int = 30) -> str:
    with pytest.raises(NotTrusted) as refused:
        await services.trusted_devices.recognize(user, cookie, days=days, ip="192.0.2.7")
    return refused.value.reason


# Granting and recognising


async def test_a_granted_device_is_recognised_for_its_user_and_listed(
    services: Services, clock: ManualClock
) -> None:
    ann = await make_user(services)
    granted = await services.trusted_devices.grant(
        ann, days=30, methods=("otp",), user_agent=CHROME_LINUX, ip="192.0.2.7"
    )
    assert granted.max_age == 30 * DAY
    device_id, secret, mac = granted.cookie.split(".")
    assert (len(secret), len(mac)) == (43, 22)
    # The random part is stored as its hash only; the record holds no cookie.
    record = await services.storage.record_get(KIND, "ann")
    assert record is not None
    assert secret not in str(record.document) and granted.cookie not in str(record.document)
    (listed,) = await services.trusted_devices.devices("ann")
    assert (listed.id, listed.browser, listed.created, listed.last_used, listed.expires) == (
        device_id,
        "Chrome on Linux",
        START,
        None,
        START + 30 * DAY,
    )
    assert listed.methods == ("otp",)

    clock.advance(3600)
    device = await services.trusted_devices.recognize(ann, granted.cookie, days=30, ip="192.0.2.8")
    assert device.id == device_id
    (listed,) = await services.trusted_devices.devices("ann")
    assert listed.last_used == START + 3600
    assert await audit(services, "trusted-device-granted") == [
        {"user": "ann", "device": device_id, "browser": "Chrome on Linux", "days": "30"}
    ]
    assert await audit(services, "trusted-device-used") == [
        {"user": "ann", "device": device_id, "browser": "Chrome on Linux"}
    ]


async def test_each_grant_is_a_device_of_its_own_and_a_new_grant_replaces_the_browsers_old_one(
    services: Services,
) -> None:
    ann = await make_user(services)
    first = await grant(services, ann)
    second = await grant(services, ann, user_agent=FIREFOX_WINDOWS)
    assert [d.browser for d in await services.trusted_devices.devices("ann")] == [
        "Firefox on Windows",
        "Chrome on Linux",
    ]
    replaced = await services.trusted_devices.grant(
        ann, days=30, methods=("otp",), user_agent=CHROME_LINUX, ip=None, replaces=first
    )
    ids = [d.id for d in await services.trusted_devices.devices("ann")]
    assert ids == [replaced.cookie.split(".")[0], second.split(".")[0]]
    assert await refusal(services, ann, first) == "unknown"


async def test_at_most_max_devices_are_kept_and_the_oldest_goes(
    services: Services, clock: ManualClock
) -> None:
    ann = await make_user(services)
    cookies = []
    for _ in range(MAX_DEVICES + 1):
        cookies.append(await grant(services, ann))
        clock.advance(1)
    devices = await services.trusted_devices.devices("ann")
    assert len(devices) == MAX_DEVICES
    assert cookies[0].split(".")[0] not in {d.id for d in devices}
    assert await refusal(services, ann, cookies[0]) == "unknown"
    assert [e["reason"] for e in await audit(services, "trusted-device-revoked")] == ["limit"]


# Refusals


async def test_another_users_cookie_is_refused_by_its_signature(services: Services) -> None:
    ann = await make_user(services)
    bob = await make_user(services, "bob")
    bobs = await grant(services, bob)
    assert await refusal(services, ann, bobs) == "signature"
    # and it still works for bob
    assert (await services.trusted_devices.recognize(bob, bobs, days=30, ip=None)).id == bobs.split(".")[0]
    assert [e["reason"] for e in await audit(services, "trusted-device-refused")] == ["signature"]


@pytest.mark.parametrize(
    "forge",
    [
        lambda cookie: "",
        lambda cookie: "junk",
        lambda cookie: "a.b.c.d",
        lambda cookie: cookie + "x",
        lambda cookie: cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB"),
        lambda cookie: cookie.replace(".", ".x", 1),
        lambda cookie: "é" * 40,
        lambda cookie: "." * 2 + "a" * 200,
    ],
)
async def test_a_forged_or_tampered_cookie_is_refused(services: Services, forge: Any) -> None:
    ann = await make_user(services)
    cookie = await grant(services, ann)
    assert await refusal(services, ann, forge(cookie)) in ("malformed", "signature")


async def test_a_correctly_signed_cookie_without_its_device_or_secret_is_refused(
    services: Services,
) -> None:
    ann = await make_user(services)
    cookie = await grant(services, ann)
    device_id, secret, _ = cookie.split(".")
    # Someone with the signing key but not the stored hash gets nowhere: both parts are checked.
    assert await refusal(services, ann, sign("ann", device_id, "A" * 43)) == "unknown"
    assert await refusal(services, ann, sign("ann", "nosuchdevice0001", secret)) == "unknown"
    # The signing helper matches the server's: the real parts pass.
    assert (
        await services.trusted_devices.recognize(ann, sign("ann", device_id, secret), days=30, ip=None)
    ).id


async def test_an_expired_device_is_refused(services: Services, clock: ManualClock) -> None:
    ann = await make_user(services)
    cookie = await grant(services, ann, days=2)
    clock.advance(2 * DAY - 1)
    assert await services.trusted_devices.recognize(ann, cookie, days=2, ip=None)
    clock.advance(1)
    assert await refusal(services, ann, cookie, days=2) in ("expired", "unknown")
    assert await services.trusted_devices.devices("ann") == []


async def test_a_shorter_setting_shortens_the_devices_already_trusted(
    services: Services, clock: ManualClock
) -> None:
    ann = await make_user(services)
    cookie = await grant(services, ann, days=30)
    clock.advance(7 * DAY)
    assert await refusal(services, ann, cookie, days=7) == "expired"
    assert await services.trusted_devices.recognize(ann, cookie, days=8, ip=None)


async def test_a_cookie_from_before_a_password_change_is_refused_even_if_its_entry_survived(
    services: Services,
) -> None:
    ann = await make_user(services)
    cookie = await grant(services, ann)
    record = await services.storage.record_get(KIND, "ann")
    assert record is not None
    # A new password written behind the server's back (a restore, another tool): no hook ran.
    changed = {**ann, "password": "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$notthesamehash"}
    assert await refusal(services, changed, cookie) == "password-changed"


# Revocation


async def test_the_user_revokes_one_device_or_all(services: Services) -> None:
    ann = await make_user(services)
    first, second, third = [await grant(services, ann) for _ in range(3)]
    assert await services.trusted_devices.revoke("ann", first.split(".")[0], ip="192.0.2.7") is True
    assert await services.trusted_devices.revoke("ann", first.split(".")[0], ip="192.0.2.7") is False
    assert await services.trusted_devices.revoke("bob", second.split(".")[0], ip=None) is False
    assert await refusal(services, ann, first) == "unknown"
    assert await services.trusted_devices.recognize(ann, second, days=30, ip=None)
    assert await services.trusted_devices.revoke_all("ann", ip="192.0.2.7") == 2
    assert await services.trusted_devices.devices("ann") == []
    for cookie in (second, third):
        assert await refusal(services, ann, cookie) == "unknown"
    assert [e["reason"] for e in await audit(services, "trusted-device-revoked")] == ["user", "user", "user"]


async def test_a_password_change_revokes_every_device(services: Services) -> None:
    ann = await make_user(services)
    cookie = await grant(services, ann)
    await services.resources.update(
        "User", "ann", {**ann, "password": "a brand new passphrase"}, administrator=True
    )
    assert await services.trusted_devices.devices("ann") == []
    assert await refusal(services, await current(services), cookie) == "unknown"
    assert [e["reason"] for e in await audit(services, "trusted-device-revoked")] == ["password-changed"]


async def test_a_write_that_keeps_the_password_keeps_the_devices(services: Services) -> None:
    ann = await make_user(services)
    cookie = await grant(services, ann)
    await services.resources.patch("User", "ann", {"name": {"givenName": "Ann"}}, "merge")
    assert len(await services.trusted_devices.devices("ann")) == 1
    assert await services.trusted_devices.recognize(await current(services), cookie, days=30, ip=None)


async def test_the_administrators_two_factor_reset_revokes_every_device(services: Services) -> None:
    # The path of `fhirauth two-factor reset USER` and of the root client's reset.
    ann = await make_user(services)
    await grant(services, ann)
    await services.twofactor.reset("ann", actor="cli")
    assert await services.trusted_devices.devices("ann") == []
    assert [e["reason"] for e in await audit(services, "trusted-device-revoked")] == ["two-factor-off"]


async def test_turning_two_factor_off_by_a_write_revokes_every_device(services: Services) -> None:
    ann = await make_user(services)
    await grant(services, ann)
    await services.resources.patch(
        "User", "ann", {"twoFactor": {"enabled": False}}, "merge", administrator=True
    )
    assert await services.trusted_devices.devices("ann") == []


async def test_a_deactivated_or_deleted_user_loses_every_device(services: Services) -> None:
    ann = await make_user(services)
    bob = await make_user(services, "bob")
    await grant(services, ann)
    await grant(services, bob)
    await services.resources.patch("User", "ann", {"inactive": True}, "merge")
    await services.resources.delete("User", "bob")
    assert await services.trusted_devices.devices("ann") == []
    assert await services.trusted_devices.devices("bob") == []
    reasons = sorted(e["reason"] for e in await audit(services, "trusted-device-revoked"))
    assert reasons == ["user-deleted", "user-inactive"]


async def test_cookies_signed_before_a_master_secret_rotation_still_work(
    services: Services, clock: ManualClock
) -> None:
    ann = await make_user(services)
    cookie = await grant(services, ann)
    rotated = SecretBox(["a-new-master-secret-for-rotation", MASTER_SECRET])
    devices = TrustedDevices(
        services.storage,
        services.resources,
        rotated.derived_keys("trusted-device cookie"),
        services.audit,
        clock,
    )
    assert (await devices.recognize(ann, cookie, days=30, ip=None)).id == cookie.split(".")[0]
    fresh = await devices.grant(ann, days=30, methods=("otp",), user_agent=None, ip=None)
    # New cookies are signed with the first secret only: the old process no longer takes them.
    assert await refusal(services, ann, fresh.cookie) == "signature"


@pytest.mark.parametrize(
    ("user_agent", "summary"),
    [
        (CHROME_LINUX, "Chrome on Linux"),
        (FIREFOX_WINDOWS, "Firefox on Windows"),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/17.5 Safari/605.1.15",
            "Safari on macOS",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/17.5 Mobile/15E148 Safari/604.1",
            "Safari on iOS",
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Mobile Safari/537.36",
            "Chrome on Android",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.86",
            "Edge on Windows",
        ),
        ("curl/8.5.0", "Unknown browser"),
        ("", "Unknown browser"),
        (None, "Unknown browser"),
    ],
)
def test_the_browser_is_summarised_from_the_user_agent(user_agent: str | None, summary: str) -> None:
    assert browser_of(user_agent) == summary


async def test_a_reset_revokes_the_devices_of_a_user_whose_second_factor_is_not_totp(
    services: Services,
) -> None:
    # A passkey-only user: twoFactor.enabled stays false through the reset, so no User change says
    # that 2FA went off; the reset itself must.
    written = await services.resources.create(
        "User", {"resourceType": "User", "email": "pia@example.org", "password": PASSWORD}, id="pia"
    )
    await grant(services, written.resource)
    await services.twofactor.reset("pia", actor="cli")
    assert await services.trusted_devices.devices("pia") == []
    assert [e["reason"] for e in await audit(services, "trusted-device-revoked")] == ["two-factor-reset"]


async def test_a_forged_or_foreign_cookie_costs_no_storage_read(services: Services) -> None:
    ann = await make_user(services)
    bob = await make_user(services, "bob")
    cookie = await grant(services, ann)
    bobs = await grant(services, bob)
    reads: list[tuple[str, str]] = []
    storage = services.storage
    record_get = storage.record_get

    async def counted(kind: str, key: str) -> Any:
        reads.append((kind, key))
        return await record_get(kind, key)

    storage.record_get = counted  # type: ignore[method-assign]
    try:
        for forged in ("junk", bobs, cookie[:-1] + ("A" if cookie[-1] != "A" else "B")):
            await refusal(services, ann, forged)
        assert [r for r in reads if r[0] == KIND] == []
        await services.trusted_devices.recognize(ann, cookie, days=30, ip=None)
        assert [r for r in reads if r[0] == KIND] == [(KIND, "ann")]
    finally:
        del storage.record_get  # type: ignore[method-assign]
