"""The demo app at /demo, in a real Chromium on `FHIRAUTH_DEMO=true fhirauth serve --seed seed/demo.json` (as
`scripts/run` starts it): its whole story.

Sign up (the e-mail comes out on the server console), set the password, enable two-factor
authentication through the JSON operations with the QR code, log out with DELETE /Session, and log in
again through the code step, reading the code from the demo webhook receiver's console line, which
proves the webhook path end to end.

seed/demo.json names http://localhost:8080 (the README's run command); the live server has its own
port, so the demo's AuthConfig webhook and Client/demo-app redirect URI are re-pointed at it before the story.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator

import httpx2
import pytest
from playwright.sync_api import Page, expect
from support.browser import ARTIFACTS_DIR, screenshot
from support.server import REPO_ROOT, ROOT_CLIENT_SECRET, LiveServer, LiveServerFactory

from fhirauth.twofactor import totp

DEMO_SEED = REPO_ROOT / "seed" / "demo.json"
EMAIL = "dana@example.org"
PASSWORD = "dana's long password"
LINK = re.compile(r"(http://127\.0\.0\.1:\d+/auth/signup/confirm/[A-Za-z0-9.-]+\?token=[A-Za-z0-9._-]+)")
SMS = re.compile(r"\[demo SMS gateway\] code for dana@example\.org: (\d{6})")


@pytest.fixture
def server(live_server_factory: LiveServerFactory) -> Iterator[LiveServer]:
    server = live_server_factory(seed=[DEMO_SEED], env={"FHIRAUTH_DEMO": "true"})
    seeded = {
        entry["request"]["url"]: entry["resource"] for entry in json.loads(DEMO_SEED.read_text())["entry"]
    }
    config, demo_app = seeded["/AuthConfig/app"], seeded["/Client/demo-app"]
    config["twoFactor"]["webhook"]["endpoint"] = config["twoFactor"]["webhook"]["endpoint"].replace(
        "http://localhost:8080", server.url
    )
    demo_app["auth"]["implicit"]["redirect_uri"].append(f"{server.url}/demo/auth")
    with httpx2.Client(base_url=server.url, auth=("root", ROOT_CLIENT_SECRET)) as api:
        for path, body in (("/AuthConfig/app", config), ("/Client/demo-app", demo_app)):
            response = api.put(path, json=body)
            assert response.status_code == 200, response.text
    yield server


def step(page: Page, name: str) -> None:
    screenshot(page, f"demo_{name}")


def test_the_demo_story(server: LiveServer, page: Page) -> None:
    page.goto(f"{server.url}/demo")
    expect(page.locator("#signin")).to_be_visible()
    step(page, "01_signed_out")

    # Sign up: the link comes out on the server console
    page.get_by_role("link", name="Sign up").click()
    expect(page.get_by_role("heading")).to_have_text("Create an account")
    step(page, "02_signup")
    page.get_by_label("E-mail").fill(EMAIL)
    page.get_by_role("button", name="Send the link").click()
    expect(page.get_by_role("heading")).to_have_text("Check your e-mail")
    [link] = LINK.findall(server.output())
    page.goto(link)
    expect(page.get_by_role("heading")).to_have_text("Choose a password")
    step(page, "03_choose_password")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Repeat the password").fill(PASSWORD)
    page.get_by_role("button", name="Create the account").click()

    # Back at /demo with a token: the offer to enable two-factor authentication
    expect(page.locator("#offer")).to_be_visible()
    expect(page).to_have_url(f"{server.url}/demo")
    expect(page.locator("#offer h2")).to_have_text(
        "Do you want to enable two-factor authentication right now?"
    )
    step(page, "04_offer")
    page.get_by_role("button", name="Enable using Authenticator app").click()
    expect(page.locator("#enroll")).to_be_visible()
    expect(page.locator("#qr svg")).to_be_visible()
    step(page, "05_qr")
    secret = page.locator("#secret").inner_text()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret), secret
    qr_png = ARTIFACTS_DIR / "demo_05_qr_only.png"
    page.locator("#qr svg").screenshot(path=str(qr_png))
    scanned = subprocess.run(
        ["zbarimg", "--raw", "--quiet", str(qr_png)], capture_output=True, text=True, timeout=20
    )
    assert scanned.stdout.strip() == (
        f"otpauth://totp/fhirauth%20demo:dana%40example.org?secret={secret}&issuer=fhirauth%20demo"
    )

    # The code from the app, a step back (validPastTokensCount 5): the code sent at sign-in is the current one
    page.locator("#token").fill(totp.code_at(secret, totp.step_at(time.time()) - 1))
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator("#codes")).to_be_visible()
    expect(page.locator("#code-list li")).to_have_count(10)
    step(page, "06_recovery_codes")
    page.get_by_role("button", name="I have saved them").click()
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#who")).to_have_text(EMAIL)
    expect(page.locator("#tfa")).to_have_text("enabled")
    expect(page.locator("#offer-again")).to_be_hidden()
    step(page, "07_enabled")

    # Log out (DELETE /Session), then log in: password, then the code step
    with page.expect_response(lambda r: r.url == f"{server.url}/Session") as ended:
        page.get_by_role("button", name="Log out").click()
    assert (ended.value.request.method, ended.value.status) == ("DELETE", 204)
    expect(page.locator("#signin")).to_be_visible()
    step(page, "08_logged_out")
    page.get_by_role("link", name="Log in").click()
    expect(page.get_by_role("heading")).to_have_text("Sign in")
    page.get_by_label("E-mail or username").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{server.url}/auth/two-factor/verify")
    expect(page.get_by_role("status")).to_have_text("We sent you a code.")
    step(page, "09_code_step")
    # The demo SMS gateway printed it before the page was answered.
    [code] = SMS.findall(server.output())
    page.get_by_label("Code").fill(code)
    page.get_by_role("button", name="Verify").click()

    expect(page.locator("#app")).to_be_visible()
    expect(page).to_have_url(f"{server.url}/demo")
    expect(page.locator("#who")).to_have_text(EMAIL)
    expect(page.locator("#tfa")).to_have_text("enabled")
    expect(page.locator("#offer-again")).to_be_hidden()
    step(page, "10_signed_in_with_2fa")
