"""Step-up in Chromium: oidc-client-ts asks for MFA (acr_values) after a password-only sign-in, or its
Client requires it; fhirauth asks for the second factor on the same sign-in, or walks a user without
2FA through setting it up, and the ID token then says amr [pwd, otp, mfa].

A real server runs on the real clock, so codes are computed from the secret at the real time, as an
authenticator app would (the default window accepts the previous step too).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from playwright.sync_api import Page, expect
from rp_site import RelyingParty, relying_party
from support.server import ROOT_CLIENT_SECRET, LiveServer, LiveServerFactory

from fhirauth.twofactor import totp

PASSWORD = "correct horse battery staple"
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
ACR_MFA = "urn:fhirauth:acr:mfa"


@pytest.fixture
def server(live_server_factory: LiveServerFactory) -> LiveServer:
    server = live_server_factory()
    user = {"resourceType": "User", "email": "ann@example.org", "password": PASSWORD}
    with httpx2.Client(base_url=server.url, auth=("root", ROOT_CLIENT_SECRET)) as api:
        assert api.put("/User/ann", json=user).status_code == 201
    return server


def register(server: LiveServer, rp: RelyingParty, **fields: Any) -> None:
    client = {
        "resourceType": "Client",
        "first_party": True,
        "grant_types": ["authorization_code"],
        "auth": {"authorization_code": {"redirect_uri": [rp.callback, rp.silent], "pkce": True}},
        **fields,
    }
    with httpx2.Client(base_url=server.url, auth=("root", ROOT_CLIENT_SECRET)) as api:
        response = api.put(f"/Client/{rp.client_id}", json=client)
        assert response.status_code == 201, response.text


@pytest.fixture
def spa(server: LiveServer, tmp_path: Path) -> Iterator[RelyingParty]:
    with relying_party(tmp_path / "spa", server.url, "spa", scope="openid") as rp:
        register(server, rp)
        yield rp


@pytest.fixture
def strict(server: LiveServer, tmp_path: Path) -> Iterator[RelyingParty]:
    with relying_party(tmp_path / "strict", server.url, "strict", scope="openid") as rp:
        register(server, rp, require_mfa=True)
        yield rp


def code_now(secret: str) -> str:
    return totp.code_at(secret, totp.step_at(time.time()))


def signed_in(page: Page, server: LiveServer, client_id: str) -> dict[str, Any]:
    """The ID token claims of the user the callback page got, verified against the JWKS."""
    expect(page).to_have_title("signed in")
    user = page.evaluate("window.outcome")
    keys = KeySet.import_key_set(httpx2.get(f"{server.url}/.well-known/jwks.json").json())
    claims = dict(jwt.decode(user["id_token"], keys, algorithms=["RS256"]).claims)
    assert (claims["iss"], claims["aud"], claims["sub"]) == (server.url, client_id, "ann")
    return claims


def password_sign_in(page: Page, rp: RelyingParty) -> None:
    page.goto(rp.url("index.html"))
    page.evaluate("() => { mgr.signinRedirect(); }")
    page.get_by_label("E-mail or username").fill("ann@example.org")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_a_request_for_mfa_asks_for_the_code_on_the_same_sign_in(
    server: LiveServer, spa: RelyingParty, page: Page
) -> None:
    # 1. a password-only sign-in
    password_sign_in(page, spa)
    before = signed_in(page, server, "spa")
    assert (before["amr"], before["acr"]) == (["pwd"], "urn:fhirauth:acr:pwd")
    # 2. an administrator turns 2FA on; a silent request for MFA cannot show the code step
    with httpx2.Client(base_url=server.url, auth=("root", ROOT_CLIENT_SECRET)) as api:
        turned_on = api.patch("/User/ann", json={"twoFactor": {"enabled": True, "secretKey": SECRET}})
        assert turned_on.status_code == 200, turned_on.text
    failed = page.evaluate(
        f"mgr.signinSilent({{acr_values: '{ACR_MFA}'}}).then(() => 'renewed', (e) => e.error)"
    )
    assert failed == "interaction_required"
    # 3. the same request with the user at hand: the code step, then back to the client
    page.goto(spa.url("index.html"))
    page.evaluate(f"() => {{ mgr.signinRedirect({{acr_values: '{ACR_MFA}'}}); }}")
    expect(page.get_by_role("heading")).to_have_text("Two-factor authentication")
    page.get_by_label("Code").fill(code_now(SECRET))
    page.get_by_role("button", name="Verify").click()
    after = signed_in(page, server, "spa")
    assert (after["amr"], after["acr"]) == (["pwd", "otp", "mfa"], ACR_MFA)
    # The same sign-in (sid), raised: its time is the code's.
    assert after["sid"] == before["sid"]
    assert after["auth_time"] >= before["auth_time"]


def test_a_client_that_requires_mfa_walks_a_user_without_2fa_through_enrolment(
    server: LiveServer, strict: RelyingParty, page: Page
) -> None:
    password_sign_in(page, strict)
    # No second factor to ask for: set one up first
    expect(page.get_by_role("heading")).to_have_text("Set up two-factor authentication")
    secret = page.locator("#secret").inner_text().replace(" ", "")
    page.get_by_label("Code from the app").fill(code_now(secret))
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_role("heading")).to_have_text("Save your recovery codes")
    expect(page.locator("#recovery-codes li")).to_have_count(10)
    page.get_by_role("link", name="I have saved them").click()
    # Back at the client's request, which now has the second factor it asked for
    claims = signed_in(page, server, "strict")
    assert (claims["amr"], claims["acr"]) == (["pwd", "otp", "mfa"], ACR_MFA)
    with httpx2.Client(base_url=server.url, auth=("root", ROOT_CLIENT_SECRET)) as api:
        assert api.get("/User/ann").json()["twoFactor"]["enabled"] is True
