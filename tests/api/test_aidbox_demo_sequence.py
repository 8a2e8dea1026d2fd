"""Aidbox's 2FA demo frontend, unchanged, replayed request by request against `scripts/run`'s data.

The app is started as `scripts/run` starts it (seed/demo.json); the requests are the ones the demo's
SPA on http://localhost:3000 sends (aidbox-research.md §3): the signup link of `getSignupUrl()`,
`/auth/authorize?client_id=web&response_type=token[&state=…]` without a redirect_uri, the token read
from the fragment of http://localhost:3000/auth, then `/auth/userinfo`, the JSON 2FA operations and
`DELETE /Session` with that token, cross-origin and without cookies, as `fetch` sends them.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
from starlette.testclient import TestClient

from fhirauth.app import create_app
from fhirauth.clock import ManualClock
from fhirauth.twofactor import totp
from tests.api.conftest import ROOT, settings_for
from tests.api.pages_support import csrf_from

DEMO_SEED = Path(__file__).resolve().parents[2] / "seed" / "demo.json"
SPA = "http://localhost:3000"
EMAIL = "dana@example.org"
PASSWORD = "dana's long password"
LINK = re.compile(r"http://testserver/auth/signup/confirm/([A-Za-z0-9.-]+)\?token=([A-Za-z0-9._-]+)")
OTPAUTH = re.compile(
    r"otpauth://totp/fhirauth%20demo:dana%40example\.org\?secret=([A-Z2-7]{32})&issuer=fhirauth%20demo"
)


@pytest.fixture
def browser(storage_url: str, clock: ManualClock) -> Iterator[TestClient]:
    """The browser, on an app seeded as `scripts/run` seeds it."""
    app = create_app(settings_for(storage_url, seed=str(DEMO_SEED)), clock=clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        # The seed's webhook receiver is served on :8080, which this in-process app is not; the
        # user reads the code from the authenticator app instead.
        config = client.get("/AuthConfig/app", headers={"Authorization": ROOT}).json()
        config["twoFactor"]["webhook"]["endpoint"] = "http://127.0.0.1:9/demo/webhook/two-factor-confirmation"
        assert client.put("/AuthConfig/app", json=config, headers={"Authorization": ROOT}).status_code == 200
        yield client


def spa_fetch(browser: TestClient, method: str, path: str, token: str, body: Any = None) -> httpx2.Response:
    """`fetch` from the SPA's origin: a bearer token, no cookies; the answer must be readable (CORS)."""
    saved = list(browser.cookies.jar)
    browser.cookies.clear()
    try:
        headers = {"Authorization": f"Bearer {token}", "Origin": SPA}
        if body is not None:
            preflight = browser.options(
                path,
                headers={
                    "Origin": SPA,
                    "Access-Control-Request-Method": method,
                    "Access-Control-Request-Headers": "authorization,content-type",
                },
            )
            assert preflight.status_code in (200, 204), preflight.text
            assert preflight.headers["access-control-allow-origin"] == SPA
        response = browser.request(method, path, headers=headers, json=body)
    finally:
        for cookie in saved:
            browser.cookies.jar.set_cookie(cookie)
    assert response.headers["access-control-allow-origin"] == SPA, (path, response.headers)
    return response


def token_from_callback(response: httpx2.Response) -> dict[str, list[str]]:
    """What the SPA's Auth.tsx reads from location.hash at http://localhost:3000/auth."""
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(f"{SPA}/auth#"), location
    return parse_qs(urlsplit(location).fragment)


def code_now(secret: str, clock: ManualClock) -> str:
    return totp.code_at(secret, totp.step_at(clock().timestamp()))


def test_the_demo_frontends_requests(
    browser: TestClient, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1. "Sign up": getSignupUrl() → /auth/signup?client_id=web&response_type=token
    signup = "/auth/signup?" + urlencode({"client_id": "web", "response_type": "token"})
    form = browser.get(signup)
    assert form.status_code == 200
    capsys.readouterr()
    sent = browser.post(signup, data={"csrf": csrf_from(form), "email": EMAIL})
    assert sent.status_code == 200
    # 2. the console provider prints the e-mail; its link sets the password
    [(registration_id, link_token)] = LINK.findall(capsys.readouterr().out)
    link = f"/auth/signup/confirm/{registration_id}?token={link_token}"
    password_form = browser.get(link)
    assert password_form.status_code == 200
    done = browser.post(
        f"/auth/signup/confirm/{registration_id}",
        data={
            "csrf": csrf_from(password_form),
            "token": link_token,
            "password": PASSWORD,
            "password_confirm": PASSWORD,
        },
        follow_redirects=False,
    )
    assert done.status_code == 302
    assert done.headers["location"] == "/auth/authorize?client_id=web&response_type=token"
    # 3. the authorize continuation, with no redirect_uri, lands on the SPA's /auth with a token
    fragment = token_from_callback(browser.get(done.headers["location"], follow_redirects=False))
    assert (fragment["token_type"], fragment["expires_in"]) == (["bearer"], ["3600"])
    token = fragment["access_token"][0]
    # 4. /auth/userinfo: no second factor yet, so the SPA offers "enable two-factor authentication?"
    me = spa_fetch(browser, "GET", "/auth/userinfo", token)
    assert me.status_code == 200
    user = me.json()
    assert user["email"] == EMAIL
    assert not user.get("twoFactor", {}).get("enabled")
    # 5. [Enable using Authenticator app]: the otpauth URI for the QR code
    requested = spa_fetch(browser, "POST", "/app/auth/two-factor/request", token, {})
    assert requested.status_code == 200, requested.text
    match = OTPAUTH.fullmatch(requested.json()["uri"])
    assert match, requested.json()
    secret = match.group(1)
    # 6. the code from the authenticator app turns it on
    confirmed = spa_fetch(
        browser, "POST", "/app/auth/two-factor/confirm", token, {"token": code_now(secret, clock)}
    )
    assert confirmed.status_code == 200, confirmed.text
    me = spa_fetch(browser, "GET", "/auth/userinfo", token)
    assert me.json()["twoFactor"]["enabled"] is True
    assert secret not in me.text
    # 7. "Log out": DELETE /Session; the token no longer works
    assert spa_fetch(browser, "DELETE", "/Session", token).status_code == 204
    assert spa_fetch(browser, "GET", "/auth/userinfo", token).status_code == 401
    # 8. "Log in": authorize with the SPA's state, no redirect_uri → the login page
    state = base64.b64encode(json.dumps({"nextUrl": "/app"}).encode()).decode()
    query = urlencode({"client_id": "web", "response_type": "token", "state": state})
    to_login = browser.get(f"/auth/authorize?{query}", follow_redirects=False)
    assert (to_login.status_code, to_login.headers["location"]) == (302, f"/auth/login?{query}")
    login_form = browser.get(to_login.headers["location"])
    to_code = browser.post(
        to_login.headers["location"],
        data={"csrf": csrf_from(login_form), "username": EMAIL, "password": PASSWORD},
        follow_redirects=False,
    )
    assert (to_code.status_code, to_code.headers["location"]) == (302, "/auth/two-factor/verify")
    # 9. the code step (the webhook cannot deliver here; the authenticator's next code works)
    code_form = browser.get("/auth/two-factor/verify")
    assert "We could not send you a code; use your authenticator app." in code_form.text
    clock.advance(30)
    back = browser.post(
        "/auth/two-factor/verify",
        data={"csrf": csrf_from(code_form), "code": code_now(secret, clock)},
        follow_redirects=False,
    )
    assert (back.status_code, back.headers["location"]) == (302, f"/auth/authorize?{query}")
    # 10. back at the SPA with a new token and its state (Auth.tsx then goes to state.nextUrl)
    fragment = token_from_callback(browser.get(back.headers["location"], follow_redirects=False))
    assert fragment["state"] == [state]
    me = spa_fetch(browser, "GET", "/auth/userinfo", fragment["access_token"][0])
    assert (me.status_code, me.json()["email"], me.json()["twoFactor"]["enabled"]) == (200, EMAIL, True)
