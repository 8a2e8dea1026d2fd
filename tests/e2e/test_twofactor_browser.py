"""Two-factor authentication in a real Chromium against `fhirauth serve --seed seed/demo.json`.

The QR code is read back from a screenshot with Debian's `zbarimg`, and every code is computed from
the secret in the decoded otpauth URI, as an authenticator app would. The demo AuthConfig accepts
five past steps (validPastTokensCount 5) and each step only once, so the story uses three successive
steps that are already in the window when it starts (enrol with now−2, sign in with now−1, disable
with now) instead of waiting for step boundaries.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import httpx2
import pytest
from playwright.sync_api import Page, expect
from support.browser import ARTIFACTS_DIR, screenshot
from support.server import REPO_ROOT, ROOT_CLIENT_SECRET, LiveServer, LiveServerFactory

from fhirauth.twofactor import totp

DEMO_SEED = REPO_ROOT / "seed" / "demo.json"
PASSWORD = "correct horse battery staple"
CALLBACK = "http://127.0.0.1:9/portal"
WRONG = "That code did not work. Check the time on your phone and try the newest code."
_URI = re.compile(
    r"otpauth://totp/fhirauth%20demo:ann%40example\.org\?secret=([A-Z2-7]{32})&issuer=fhirauth%20demo"
)


@pytest.fixture
def server(live_server_factory: LiveServerFactory) -> Iterator[LiveServer]:
    # The demo's webhook receiver stands in for an SMS gateway.
    server = live_server_factory(seed=[DEMO_SEED], env={"FHIRAUTH_DEMO": "true"})
    seeded = {
        entry["request"]["url"]: entry["resource"] for entry in json.loads(DEMO_SEED.read_text())["entry"]
    }
    config = seeded["/AuthConfig/app"]
    # The demo's webhook receiver is on this server, not on :8080.
    config["twoFactor"]["webhook"]["endpoint"] = f"{server.url}/demo/webhook/two-factor-confirmation"
    with httpx2.Client(base_url=server.url, auth=("root", ROOT_CLIENT_SECRET)) as api:
        for path, body in {
            "/AuthConfig/app": config,
            "/Client/portal": {
                "resourceType": "Client",
                "first_party": True,
                "grant_types": ["implicit"],
                "auth": {"implicit": {"redirect_uri": CALLBACK}},
            },
            "/User/ann": {"resourceType": "User", "email": "ann@example.org", "password": PASSWORD},
        }.items():
            response = api.put(path, json=body)
            assert response.status_code in (200, 201), response.text
    yield server


def step(page: Page, name: str) -> None:
    screenshot(page, f"twofactor_{name}")


def sign_in_with_password(page: Page, url: str) -> None:
    page.goto(url)
    expect(page).to_have_title("Sign in · fhirauth demo")
    page.get_by_label("E-mail or username").fill("ann@example.org")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def decode_qr(image: Path) -> str:
    result = subprocess.run(
        ["zbarimg", "--raw", "--quiet", str(image)], capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def wrong_code(secret: str, step: int) -> str:
    near = {totp.code_at(secret, s) for s in range(step - 6, step + 3)}
    return next(f"{n:06d}" for n in range(123456, 1_000_000) if f"{n:06d}" not in near)


def test_enable_with_the_qr_sign_in_with_the_code_and_disable(server: LiveServer, page: Page) -> None:
    # Signed in with the password: 2FA is off
    sign_in_with_password(page, f"{server.url}/auth/login")
    expect(page).to_have_url(f"{server.url}/auth/two-factor")
    expect(page.locator(".status")).to_contain_text("Two-factor authentication is off.")
    step(page, "01_settings_off")

    # Enable: the QR code, scanned from a screenshot
    page.get_by_role("link", name="Enable").click()
    expect(page.get_by_role("heading")).to_have_text("Set up two-factor authentication")
    step(page, "02_enable")
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    qr_png = ARTIFACTS_DIR / "twofactor_02_qr.png"
    page.locator("figure.qr svg").screenshot(path=str(qr_png))
    uri = decode_qr(qr_png)
    match = _URI.fullmatch(uri)
    assert match, uri
    secret = match.group(1)
    assert parse_qs(urlsplit(uri).query)["issuer"] == ["fhirauth demo"]
    assert unquote(urlsplit(uri).path) == "/fhirauth demo:ann@example.org"
    expect(page.locator("#secret")).to_have_text(" ".join(secret[i : i + 4] for i in range(0, 32, 4)))
    now = totp.step_at(time.time())

    page.get_by_label("Code from the app").fill(totp.code_at(secret, now - 2))
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_role("heading")).to_have_text("Save your recovery codes")
    expect(page.locator("#recovery-codes li")).to_have_count(10)
    step(page, "03_recovery_codes")
    page.get_by_role("link", name="I have saved them").click()
    expect(page.locator(".status")).to_have_text("Two-factor authentication is on. 10 recovery codes left.")
    step(page, "04_settings_on")

    # Sign out, then sign in to a client: password, then the code step
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    page.route(
        "http://127.0.0.1:9/**",
        lambda route: route.fulfill(status=200, content_type="text/html", body="<title>portal</title>portal"),
    )
    query = urlencode(
        {"client_id": "portal", "response_type": "token", "redirect_uri": CALLBACK, "state": "s1"}
    )
    sign_in_with_password(page, f"{server.url}/auth/authorize?{query}")
    expect(page).to_have_url(f"{server.url}/auth/two-factor/verify")
    expect(page.get_by_role("heading")).to_have_text("Two-factor authentication")
    expect(page.get_by_role("status")).to_have_text("We sent you a code.")
    assert not any(cookie["name"] == "asid" for cookie in page.context.cookies())
    step(page, "05_verify")

    page.get_by_label("Code").fill(wrong_code(secret, now))
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("alert")).to_have_text(WRONG)
    step(page, "06_verify_wrong_code")

    page.get_by_label("Code").fill(totp.code_at(secret, now - 1))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(f"{CALLBACK}#*")
    fragment = parse_qs(urlsplit(page.url).fragment)
    assert fragment["state"] == ["s1"]
    with httpx2.Client(base_url=server.url) as client:
        me = client.get("/auth/userinfo", headers={"Authorization": f"Bearer {fragment['access_token'][0]}"})
    assert me.status_code == 200
    assert (me.json()["id"], me.json()["twoFactor"]) == ("ann", {"enabled": True})

    # Disable with a current code
    page.goto(f"{server.url}/auth/two-factor")
    page.get_by_role("link", name="Disable").click()
    expect(page.get_by_role("heading")).to_have_text("Turn off two-factor authentication")
    step(page, "07_disable")
    page.get_by_label("Code from your authenticator app, or a recovery code").fill(totp.code_at(secret, now))
    page.get_by_role("button", name="Turn off").click()
    expect(page).to_have_url(f"{server.url}/auth/two-factor?done=disabled")
    # One message: the status line itself announces the change.
    expect(page.get_by_role("status")).to_contain_text("Two-factor authentication is off.")
    assert page.locator("main").inner_text().count("Two-factor authentication is off") == 1
    step(page, "08_settings_off_again")
