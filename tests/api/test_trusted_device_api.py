"""The trusted-device JSON operations (/app/auth/two-factor/trusted-devices) on both backends: a
signed-in user's first-party token lists her devices and forgets one or all; every other caller is
refused, and nobody forgets another user's device."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from starlette.testclient import TestClient

from fhirauth.clock import ManualClock
from tests.api.conftest import NO_AUTH
from tests.api.pages_support import audit_detail, audit_events, call, services
from tests.api.test_passkey_api import error, setup, token  # noqa: F401 (setup: a fixture)

BASE = "/app/auth/two-factor/trusted-devices"
FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
DAY = 86400

# The first-party Client "app", the third-party "other", and Users ann and bob.
pytestmark = pytest.mark.usefixtures("setup")


def trust(api: TestClient, user: str, user_agent: str) -> str:
    """A device trusted for `user` (as the sign-in step grants one); its id."""
    stored = api.get(f"/User/{user}").json()
    grant = functools.partial(
        services(api).trusted_devices.grant, stored, days=30, methods=("otp",), user_agent=user_agent, ip=None
    )
    granted: Any = call(api, grant)
    device_id: str = granted.device.id
    return device_id


def test_refused_callers(api: TestClient) -> None:
    third_party = token(api, client="other")
    for method, path in (("get", BASE), ("delete", BASE), ("delete", f"{BASE}/abc")):
        anonymous = api.request(method, path, headers=NO_AUTH)
        assert anonymous.status_code == 401, path
        assert anonymous.headers["www-authenticate"] == 'Bearer realm="fhirauth"'
        assert error(api.request(method, path, headers=third_party)) == (403, "first_party_client_required")


def test_list_and_forget_one_or_all(api: TestClient, clock: ManualClock) -> None:
    ann, bob = token(api), token(api, "bob")
    # 1. nothing yet
    assert api.get(BASE, headers=ann).json() == {"devices": []}
    # 2. two browsers of ann's, a day apart, and one of bob's
    firefox = trust(api, "ann", FIREFOX_WINDOWS)
    clock.advance(DAY)
    chrome = trust(api, "ann", CHROME_LINUX)
    bobs = trust(api, "bob", CHROME_LINUX)
    # (the tokens of a day ago have expired)
    ann, bob = token(api), token(api, "bob")
    listed = api.get(BASE, headers=ann)
    assert (listed.status_code, listed.json()) == (
        200,
        {
            "devices": [
                {
                    "id": chrome,
                    "browser": "Chrome on Linux",
                    "created": "2026-01-02T00:00:00.000Z",
                    "lastUsed": None,
                    "expires": "2026-02-01T00:00:00.000Z",
                },
                {
                    "id": firefox,
                    "browser": "Firefox on Windows",
                    "created": "2026-01-01T00:00:00.000Z",
                    "lastUsed": None,
                    "expires": "2026-01-31T00:00:00.000Z",
                },
            ]
        },
    )
    # 3. bob's device, an unknown one, a malformed id: refused, nothing forgotten
    for other in (bobs, "x" * 16, "x" * 300):
        assert error(api.delete(f"{BASE}/{other}", headers=ann)) == (422, "unknown_device")
    assert [d["id"] for d in api.get(BASE, headers=bob).json()["devices"]] == [bobs]
    assert len(api.get(BASE, headers=ann).json()["devices"]) == 2
    assert audit_events(api, "trusted-device-revoked") == []
    # 4. forget one
    forgotten = api.delete(f"{BASE}/{firefox}", headers=ann)
    assert (forgotten.status_code, forgotten.json()) == (200, {})
    assert [d["id"] for d in api.get(BASE, headers=ann).json()["devices"]] == [chrome]
    assert error(api.delete(f"{BASE}/{firefox}", headers=ann)) == (422, "unknown_device")
    # 5. forget all: how many went; then none
    everything = api.delete(BASE, headers=ann)
    assert (everything.status_code, everything.json()) == (200, {"revoked": 1})
    assert api.get(BASE, headers=ann).json() == {"devices": []}
    assert api.delete(BASE, headers=ann).json() == {"revoked": 0}
    revoked = [audit_detail(e) for e in audit_events(api, "trusted-device-revoked")]
    assert [(r["device"], r["reason"]) for r in revoked] == [(firefox, "user"), (chrome, "user")]
    # bob's stays
    assert [d["id"] for d in api.get(BASE, headers=bob).json()["devices"]] == [bobs]
