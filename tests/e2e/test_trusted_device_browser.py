""" "Don't ask again on this device" in Chromium against a live `fhirauth serve`: the box ticked at the
code step, the next sign-in in the same browser context without the code, a new context asked, a
request for MFA asked even on the trusted browser, another user's sign-in in it asked, and the cookie
dead after a password change.

A real server runs on the real clock, so the code is computed from the secret at the real time, as
an authenticator app would; the AuthConfig accepts five past steps so no test waits for a step.
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

import httpx2
import pytest
from playwright.sync_api import Browser, Page, expect
from support.browser import screenshot
from support.server import ROOT_CLIENT_SECRET, LiveServer, LiveServerFactory

from fhirauth.twofactor import totp

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a new and different passphrase"
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
CALLBACK = "http://127.0.0.1:9/portal"
ACR_MFA = "urn:fhirauth:acr:mfa"
COOKIE = "fhirauth_trusted"


@pytest.fixture
def server(live_server_factory: LiveServerFactory) -> LiveServer:
    server = live_server_factory()
    with httpx2.Client(base_url=server.url, auth=("root", ROOT_CLIENT_SECRET)) as api:
        for path, body in {
            "/AuthConfig/app": {"resourceType": "AuthConfig", "twoFactor": {"validPastTokensCount": 5}},
            "/Client/portal": {
                "resourceType": "Client",
                "first_party": True,
                "grant_types": ["implicit"],
                "auth": {"implicit": {"redirect_uri": CALLBACK}},
            },
            "/User/ann": {"resourceType": "User", "email": "ann@example.org", "password": PASSWORD},
            "/User/bob": {"resourceType": "User", "email": "bob@example.org", "password": PASSWORD},
        }.items():
            response = api.put(path, json=body)
            assert response.status_code in (200, 201), response.text
        for user in ("ann", "bob"):
            on = api.patch(f"/User/{user}", json={"twoFactor": {"enabled": True, "secretKey": SECRET}})
            assert on.status_code == 200, on.text
    return server


def sign_in(page: Page, url: str, who: str = "ann", password: str = PASSWORD) -> None:
    page.goto(url)
    page.get_by_label("E-mail or username").fill(f"{who}@example.org")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def asked_for_the_code(page: Page, server: LiveServer) -> None:
    expect(page).to_have_url(f"{server.url}/auth/two-factor/verify")
    expect(page.get_by_label("Code")).to_be_visible()


def signed_in_without_the_code(page: Page, server: LiveServer) -> None:
    expect(page).to_have_url(f"{server.url}/auth/two-factor")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def sign_out(page: Page, server: LiveServer) -> None:
    page.goto(f"{server.url}/auth/two-factor")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")


def test_a_trusted_browser_skips_the_code_and_nothing_else_does(
    server: LiveServer, page: Page, browser: Browser
) -> None:
    login = f"{server.url}/auth/login"
    # 1. the code step offers to trust this browser; ticked, the settings page lists it
    sign_in(page, login)
    asked_for_the_code(page, server)
    page.get_by_label("Code").fill(totp.code_at(SECRET, totp.step_at(time.time()) - 3))
    page.get_by_label("Don't ask again on this device for 30 days").check()
    page.get_by_role("button", name="Verify").click()
    expect(page.locator(".trusted-device")).to_have_count(1)
    expect(page.locator(".trusted-device strong")).to_have_text("Chrome on Linux")
    expect(page.locator(".trusted-device")).to_contain_text("(this browser)")
    (cookie,) = [c for c in page.context.cookies() if c["name"] == COOKIE]
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Lax", "/auth")
    screenshot(page, "trusted_device_listed")

    # 2. the next sign-in in the same browser: the password alone
    sign_out(page, server)
    sign_in(page, login)
    signed_in_without_the_code(page, server)

    # 3. a new browser context (no cookie) is asked
    fresh = browser.new_context().new_page()
    try:
        sign_in(fresh, login)
        asked_for_the_code(fresh, server)
    finally:
        fresh.context.close()

    # 4. a client asking for MFA: the trusted browser is asked for the code all the same
    sign_out(page, server)
    request = {
        "client_id": "portal",
        "response_type": "id_token",
        "redirect_uri": CALLBACK,
        "scope": "openid",
        "nonce": "n-1",
        "acr_values": ACR_MFA,
    }
    sign_in(page, f"{server.url}/auth/authorize?{urlencode(request)}")
    asked_for_the_code(page, server)

    # 5. another user in this browser: ann's cookie does not stand in for bob's code
    page.context.clear_cookies(name="fhirauth_pending")
    page.context.clear_cookies(name="asid")
    sign_in(page, login, "bob")
    asked_for_the_code(page, server)
    page.context.clear_cookies(name="fhirauth_pending")

    # 6. after a password change the cookie no longer works
    with httpx2.Client(base_url=server.url, auth=("root", ROOT_CLIENT_SECRET)) as api:
        changed = api.patch("/User/ann", json={"password": NEW_PASSWORD})
        assert changed.status_code == 200, changed.text
    assert [c["name"] for c in page.context.cookies() if c["name"] == COOKIE] == [COOKIE]
    sign_in(page, login, password=NEW_PASSWORD)
    asked_for_the_code(page, server)
    screenshot(page, "trusted_device_after_password_change")
