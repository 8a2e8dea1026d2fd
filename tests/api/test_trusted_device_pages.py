""" "Don't ask again on this device" over HTTP, on both backends: the offer on the code step, the
cookie, the sign-in it shortens, each refusal (forged, another user's, expired, revoked, after a
password change, a fresh sign-in or MFA asked for), and the list on the settings page.

The app's clock is a ManualClock: TOTP steps and expiry move with `clock.advance`, never a sleep.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest
from starlette.testclient import TestClient

from fhirauth.app import create_app
from fhirauth.clock import ManualClock
from fhirauth.twofactor import totp
from tests.api.conftest import ROOT, settings_for
from tests.api.oidc_support import CB, authorize, rp_request, setup_clients
from tests.api.pages_support import (
    alert,
    audit_detail,
    audit_events,
    cookie_attributes,
    create_user,
    csrf_from,
    login,
    set_cookies,
)

SETTINGS = "/auth/two-factor"
VERIFY = "/auth/two-factor/verify"
FORGET = "/auth/two-factor/trusted-devices"
COOKIE = "fhirauth_trusted"
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
SIGNED_IN_AT = 1767225600  # the ManualClock's start, 2026-01-01T00:00:00Z
DAY = 86400
ACR_MFA = "urn:fhirauth:acr:mfa"
CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
_OFFER = re.compile(
    r'<input type="checkbox" id="trust_device" name="trust_device" value="on">\s*'
    r'<label for="trust_device">(.*?)</label>',
    re.S,
)
_DEVICE = re.compile(r'<li class="trusted-device" id="device-([A-Za-z0-9_-]+)">(.*?)</li>', re.S)


def with_two_factor(api: TestClient, user: str = "ann") -> None:
    create_user(api, user)
    patched = api.patch(f"/User/{user}", json={"twoFactor": {"enabled": True, "secretKey": SECRET}})
    assert patched.status_code == 200, patched.text


@pytest.fixture
def ann(api: TestClient) -> None:
    with_two_factor(api)


def code_now(clock: ManualClock) -> str:
    return totp.code_at(SECRET, totp.step_at(clock().timestamp()))


def set_days(api: TestClient, days: int) -> None:
    response = api.put(
        "/AuthConfig/app", json={"resourceType": "AuthConfig", "twoFactor": {"trustedDeviceDays": days}}
    )
    assert response.status_code in (200, 201), response.text


def offer(page: httpx2.Response) -> str | None:
    match = _OFFER.search(page.text)
    return " ".join(html.unescape(match.group(1)).split()) if match else None


def to_code_step(api: TestClient, user: str = "ann", *, query: str = "") -> None:
    response = login(api, f"{user}@example.org", query=query)
    assert (response.status_code, response.headers["location"]) == (302, VERIFY), response.text


def give_code(
    api: TestClient, clock: ManualClock, *, trust: bool, user_agent: str = CHROME_LINUX
) -> httpx2.Response:
    page = api.get(VERIFY)
    assert page.status_code == 200, page.text
    data = {"csrf": csrf_from(page), "code": code_now(clock), **({"trust_device": "on"} if trust else {})}
    response = api.post(VERIFY, data=data, headers={"User-Agent": user_agent}, follow_redirects=False)
    assert response.status_code == 302, response.text
    # The next code must come from a later step (the replay guard).
    clock.advance(30)
    return response


def sign_out(api: TestClient) -> None:
    page = api.get(SETTINGS)
    assert page.status_code == 200, page.text
    response = api.post("/auth/logout", data={"csrf": csrf_from(page)}, follow_redirects=False)
    assert response.status_code == 200
    assert "asid" not in api.cookies


def trust_this_device(api: TestClient, clock: ManualClock, user: str = "ann") -> str:
    """Sign in with the code and the box ticked; sign out. The trusted-device cookie."""
    to_code_step(api, user)
    give_code(api, clock, trust=True)
    cookie = api.cookies[COOKIE]
    sign_out(api)
    return cookie


def asked_for_the_code(api: TestClient, user: str = "ann", *, query: str = "") -> None:
    response = login(api, f"{user}@example.org", query=query)
    assert response.status_code == 302, response.text
    assert response.headers["location"] == VERIFY
    assert "asid" not in set_cookies(response)


def skipped_the_code(api: TestClient, user: str = "ann") -> httpx2.Response:
    response = login(api, f"{user}@example.org")
    assert (response.status_code, response.headers["location"]) == (302, SETTINGS), response.text
    assert "asid" in set_cookies(response)
    return response


def browser_session(api: TestClient) -> dict[str, Any]:
    bundle = api.get("/Session", params={"type": "browser", "active": "true"}).json()
    (entry,) = bundle["entry"]
    session: dict[str, Any] = entry["resource"]
    return session


def use_cookie(api: TestClient, value: str) -> None:
    """Make `value` the browser's trusted-device cookie (as a forger or a copier would)."""
    for cookie in list(api.cookies.jar):
        if cookie.name == COOKIE:
            api.cookies.delete(COOKIE, domain=cookie.domain, path=cookie.path)
    api.cookies.set(COOKIE, value, domain="testserver.local", path="/auth")


def refusals(api: TestClient) -> list[str]:
    return [audit_detail(event)["reason"] for event in audit_events(api, "trusted-device-refused")]


def devices_listed(page: httpx2.Response) -> list[tuple[str, str]]:
    return [
        (device_id, " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split()))
        for device_id, text in _DEVICE.findall(page.text)
    ]


# The offer


def test_the_code_step_offers_to_trust_the_device_for_the_configured_days(api: TestClient, ann: None) -> None:
    to_code_step(api)
    assert offer(api.get(VERIFY)) == "Don't ask again on this device for 30 days"
    set_days(api, 7)
    assert offer(api.get(VERIFY)) == "Don't ask again on this device for 7 days"
    set_days(api, 1)
    assert offer(api.get(VERIFY)) == "Don't ask again on this device for 1 day"
    set_days(api, 0)
    page = api.get(VERIFY)
    assert page.status_code == 200 and offer(page) is None and "trust_device" not in page.text


@pytest.mark.parametrize("days", [-1, 366, "30"])
def test_the_setting_is_a_whole_number_of_days_up_to_a_year(api: TestClient, days: Any) -> None:
    response = api.put(
        "/AuthConfig/app", json={"resourceType": "AuthConfig", "twoFactor": {"trustedDeviceDays": days}}
    )
    assert response.status_code == 422, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert api.get("/AuthConfig/app").status_code == 404


def test_ticked_the_browser_gets_the_cookie_and_the_next_sign_in_skips_the_code(
    api: TestClient, ann: None, clock: ManualClock
) -> None:
    to_code_step(api)
    done = give_code(api, clock, trust=True)
    assert done.headers["location"] == SETTINGS
    value, attributes = cookie_attributes(set_cookies(done)[COOKIE])
    assert (attributes["path"], attributes["max-age"], attributes["samesite"]) == (
        "/auth",
        str(30 * DAY),
        "Lax",
    )
    assert "httponly" in attributes and "secure" not in attributes
    assert re.fullmatch(r"[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{22}", value)
    (granted,) = audit_events(api, "trusted-device-granted")
    assert audit_detail(granted) == {
        "device": value.split(".")[0],
        "browser": "Chrome on Linux",
        "days": "30",
    }
    sign_out(api)

    clock.advance(3600)
    skipped_the_code(api)
    session = browser_session(api)
    now = SIGNED_IN_AT + 30 + 3600
    # Only the password was given now: amr pwd, acr pwd; the Session names the device that stood in.
    assert (session["amr"], session["amr_times"], session["auth_time"]) == (["pwd"], {"pwd": now}, now)
    assert session["trustedDevice"] == {"id": value.split(".")[0], "amr": ["otp"], "trusted": SIGNED_IN_AT}
    assert len(audit_events(api, "trusted-device-used")) == 1
    assert [audit_detail(e)["session"] for e in audit_events(api, "login")][-1] == session["id"]


def test_unticked_the_browser_gets_no_cookie_and_is_asked_again(
    api: TestClient, ann: None, clock: ManualClock
) -> None:
    to_code_step(api)
    done = give_code(api, clock, trust=False)
    assert COOKIE not in set_cookies(done)
    sign_out(api)
    asked_for_the_code(api)
    assert audit_events(api, "trusted-device-granted") == []


def test_with_the_offer_off_a_ticked_box_grants_nothing_and_old_cookies_do_not_count(
    api: TestClient, ann: None, clock: ManualClock
) -> None:
    trust_this_device(api, clock)
    set_days(api, 0)
    asked_for_the_code(api)
    done = give_code(api, clock, trust=True)
    assert COOKIE not in set_cookies(done)
    assert audit_events(api, "trusted-device-used") == []


def test_on_https_the_cookie_is_secure(storage_url: str, clock: ManualClock) -> None:
    app = create_app(settings_for(storage_url, base_url="https://testserver"), clock=clock)
    with TestClient(
        app, base_url="https://testserver", raise_server_exceptions=False, headers={"Authorization": ROOT}
    ) as api:
        with_two_factor(api)
        to_code_step(api)
        done = give_code(api, clock, trust=True)
        _, attributes = cookie_attributes(set_cookies(done)[COOKIE])
        assert "secure" in attributes and "httponly" in attributes


# Refusals: each one asks for the code, never a 500


def test_a_forged_cookie_is_refused(api: TestClient, ann: None, clock: ManualClock) -> None:
    cookie = trust_this_device(api, clock)
    device_id, secret, mac = cookie.split(".")
    for forged in (
        "junk",
        f"{device_id}.{secret}.{'A' * 22}",
        f"{device_id}.{'B' * 43}.{mac}",
        f"{'C' * 16}.{secret}.{mac}",
        cookie + "x" * 60,
    ):
        use_cookie(api, forged)
        asked_for_the_code(api)
    assert refusals(api) == ["malformed", "signature", "signature", "signature"]
    # A refused cookie that may be someone else's is left alone.
    use_cookie(api, cookie)
    skipped_the_code(api)


def test_another_users_cookie_is_refused(api: TestClient, ann: None, clock: ManualClock) -> None:
    with_two_factor(api, "bob")
    trust_this_device(api, clock, "bob")
    asked_for_the_code(api, "ann")
    assert refusals(api) == ["signature"]
    # bob's own sign-in in this browser still skips the code
    skipped_the_code(api, "bob")


def test_an_expired_cookie_is_refused(api: TestClient, ann: None, clock: ManualClock) -> None:
    trust_this_device(api, clock)
    clock.advance(30 * DAY - 31)
    skipped_the_code(api)
    sign_out(api)
    clock.advance(1)
    response = login(api, "ann@example.org")
    assert (response.status_code, response.headers["location"]) == (302, VERIFY)
    # It was this user's: the dead cookie is cleared.
    assert cookie_attributes(set_cookies(response)[COOKIE])[1]["max-age"] == "0"
    assert refusals(api) == ["unknown"]


def test_a_revoked_cookie_is_refused(api: TestClient, ann: None, clock: ManualClock) -> None:
    cookie = trust_this_device(api, clock)
    skipped_the_code(api)
    page = api.get(SETTINGS)
    ((device_id, _),) = devices_listed(page)
    assert device_id == cookie.split(".")[0]
    forgot = api.post(FORGET, data={"csrf": csrf_from(page), "device": device_id}, follow_redirects=False)
    assert (forgot.status_code, forgot.headers["location"]) == (303, SETTINGS)
    assert cookie_attributes(set_cookies(forgot)[COOKIE])[1]["max-age"] == "0"
    assert devices_listed(api.get(SETTINGS)) == []
    sign_out(api)
    use_cookie(api, cookie)
    asked_for_the_code(api)
    assert refusals(api) == ["unknown"]
    assert [audit_detail(e)["reason"] for e in audit_events(api, "trusted-device-revoked")] == ["user"]


def test_a_cookie_from_before_a_password_change_is_refused(
    api: TestClient, ann: None, clock: ManualClock
) -> None:
    trust_this_device(api, clock)
    changed = api.patch("/User/ann", json={"password": "a new and different passphrase"})
    assert changed.status_code == 200, changed.text
    response = login(api, "ann@example.org", "a new and different passphrase")
    assert (response.status_code, response.headers["location"]) == (302, VERIFY)
    assert [audit_detail(e)["reason"] for e in audit_events(api, "trusted-device-revoked")] == [
        "password-changed"
    ]


def test_a_cookie_from_before_two_factor_was_turned_off_and_on_again_is_refused(
    api: TestClient, ann: None, clock: ManualClock
) -> None:
    trust_this_device(api, clock)
    off = api.patch("/User/ann", json={"twoFactor": {"enabled": False}})
    assert off.status_code == 200, off.text
    on = api.patch("/User/ann", json={"twoFactor": {"enabled": True, "secretKey": SECRET}})
    assert on.status_code == 200, on.text
    asked_for_the_code(api)


def test_a_fresh_sign_in_asked_for_by_prompt_login_or_max_age_ignores_the_cookie(
    api: TestClient, clock: ManualClock
) -> None:
    setup_clients(api)
    patched = api.patch("/User/ann", json={"twoFactor": {"enabled": True, "secretKey": SECRET}})
    assert patched.status_code == 200
    trust_this_device(api, clock)
    for extra in ({"prompt": "login"}, {"max_age": "0"}, {"max_age": "3600"}):
        query = urlencode(rp_request("id_token", **extra))
        asked_for_the_code(api, query=query)
    assert audit_events(api, "trusted-device-used") == []
    # The same request without them is a trusted device's ordinary sign-in
    response = login(api, "ann@example.org", query=urlencode(rp_request("id_token")))
    assert response.headers["location"].startswith("/auth/authorize?")


def test_a_request_for_mfa_asks_for_the_code_even_on_a_trusted_device(
    api: TestClient, clock: ManualClock
) -> None:
    setup_clients(api)
    patched = api.patch("/User/ann", json={"twoFactor": {"enabled": True, "secretKey": SECRET}})
    assert patched.status_code == 200
    trust_this_device(api, clock)
    params = rp_request("id_token", acr_values=ACR_MFA)
    response = login(api, "ann@example.org", query=urlencode(params))
    assert response.status_code == 302
    # The trusted device gave a password sign-in; the request for MFA then steps it up.
    step_up = api.get(response.headers["location"], follow_redirects=False)
    assert (step_up.status_code, step_up.headers["location"]) == (302, VERIFY)
    done = give_code(api, clock, trust=False)
    answered = api.get(done.headers["location"], follow_redirects=False)
    assert answered.headers["location"].startswith(CB + "#")
    assert browser_session(api)["amr"] == ["pwd", "otp", "mfa"]
    assert authorize(api, **params).headers["location"].startswith(CB + "#")


# The settings page


def test_the_settings_page_lists_the_devices_and_forgets_one_or_all(
    api: TestClient, ann: None, clock: ManualClock
) -> None:
    to_code_step(api)
    give_code(api, clock, trust=True, user_agent=FIREFOX_WINDOWS)
    firefox = api.cookies[COOKIE]
    sign_out(api)
    api.cookies.delete(COOKIE, path="/auth")
    clock.advance(DAY)
    to_code_step(api)
    give_code(api, clock, trust=True)
    chrome = api.cookies[COOKIE]
    page = api.get(SETTINGS)
    assert devices_listed(page) == [
        (
            chrome.split(".")[0],
            "Chrome on Linux (this browser) Trusted 2026-01-02 00:00 UTC · Last used never "
            "· Until 2026-02-01 00:00 UTC Forget",
        ),
        (
            firefox.split(".")[0],
            "Firefox on Windows Trusted 2026-01-01 00:00 UTC · Last used never "
            "· Until 2026-01-31 00:00 UTC Forget",
        ),
    ]
    # a use shows up as last use
    sign_out(api)
    clock.advance(3600)
    skipped_the_code(api)
    page = api.get(SETTINGS)
    assert "Last used 2026-01-02 01:01 UTC" in devices_listed(page)[0][1]

    # forgetting another browser's device keeps this browser's cookie
    kept = api.post(
        FORGET, data={"csrf": csrf_from(page), "device": firefox.split(".")[0]}, follow_redirects=False
    )
    assert kept.status_code == 303 and COOKIE not in set_cookies(kept)
    assert [d for d, _ in devices_listed(api.get(SETTINGS))] == [chrome.split(".")[0]]
    # an unknown or malformed device: nothing changes, no 500
    for device in ("C" * 16, "", "x" * 5000):
        response = api.post(FORGET, data={"csrf": csrf_from(page), "device": device}, follow_redirects=False)
        assert response.status_code in (303, 400), response.text
    assert [d for d, _ in devices_listed(api.get(SETTINGS))] == [chrome.split(".")[0]]
    # forget all
    everything = api.post(FORGET, data={"csrf": csrf_from(page), "device": "all"}, follow_redirects=False)
    assert everything.status_code == 303
    assert cookie_attributes(set_cookies(everything)[COOKIE])[1]["max-age"] == "0"
    assert devices_listed(api.get(SETTINGS)) == []


def test_forgetting_needs_the_form_and_a_sign_in(api: TestClient, ann: None, clock: ManualClock) -> None:
    cookie = trust_this_device(api, clock)
    device_id = cookie.split(".")[0]
    page = api.get("/auth/login")
    # signed out: back to the login page, nothing forgotten
    response = api.post(FORGET, data={"csrf": csrf_from(page), "device": device_id}, follow_redirects=False)
    assert response.status_code == 302 and response.headers["location"].startswith("/auth/login")
    skipped_the_code(api)
    # no CSRF field: refused
    refused = api.post(FORGET, data={"device": device_id}, follow_redirects=False)
    assert refused.status_code == 403
    assert alert(refused) is not None
    assert [d for d, _ in devices_listed(api.get(SETTINGS))] == [device_id]


def test_the_code_of_a_step_up_may_trust_the_browser_too(api: TestClient, clock: ManualClock) -> None:
    setup_clients(api)
    # Signed in with the password while 2FA was off; then it is turned on and a client asks for MFA
    response = login(api, "ann@example.org")
    assert response.status_code == 302
    patched = api.patch("/User/ann", json={"twoFactor": {"enabled": True, "secretKey": SECRET}})
    assert patched.status_code == 200
    params = rp_request("id_token", acr_values=ACR_MFA)
    assert authorize(api, **params).headers["location"] == VERIFY
    done = give_code(api, clock, trust=True)
    assert done.headers["location"].startswith("/auth/authorize?")
    assert COOKIE in set_cookies(done)
    assert browser_session(api)["amr"] == ["pwd", "otp", "mfa"]
    sign_out(api)
    skipped_the_code(api)
