"""Passkeys in Chromium with the DevTools virtual authenticator (ctap2, internal, resident keys, user
verification), against `fhirauth serve` on http://localhost (an IP address cannot be an rpId).

The story: register a passkey on the settings page; sign out; password + passkey; passwordless; the
same passwordless request sent again (replayed) is refused; a counter rollback (the stored count
raised past the authenticator's through the administrator's API) is refused; remove the passkey
with a passkey confirmation; a second authenticator holding a passkey the server never registered
is refused.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from playwright.sync_api import CDPSession, Page, expect
from support.server import ROOT_CLIENT_SECRET, LiveServer

PASSWORD = "correct horse battery staple"
AUTHENTICATOR = {
    "protocol": "ctap2",
    "ctap2Version": "ctap2_1",
    "transport": "internal",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
    "automaticPresenceSimulation": True,
}


@pytest.fixture
def server() -> Iterator[LiveServer]:
    server = LiveServer(env={"FHIRAUTH_RATE_LIMIT_TWO_FACTOR_IP": "off"})
    server.url = f"http://localhost:{server.port}"
    server.extra_env["FHIRAUTH_BASE_URL"] = server.url
    with server.start():
        with httpx2.Client(base_url=server.url, auth=("root", ROOT_CLIENT_SECRET)) as api:
            user = {"resourceType": "User", "email": "ann@example.org", "password": PASSWORD}
            assert api.put("/User/ann", json=user).status_code == 201
            config = {"resourceType": "AuthConfig", "twoFactor": {"passkeySignIn": True}}
            assert api.put("/AuthConfig/app", json=config).status_code == 201
        yield server


def authenticator(cdp: CDPSession) -> str:
    answer: dict[str, Any] = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})
    return str(answer["authenticatorId"])


def root(server: LiveServer) -> httpx2.Client:
    return httpx2.Client(base_url=server.url, auth=("root", ROOT_CLIENT_SECRET))


def newest_amr(server: LiveServer) -> list[str]:
    with root(server) as api:
        bundle = api.get("/Session", params={"type": "browser", "_sort": "-start", "_count": "1"}).json()
    amr: list[str] = bundle["entry"][0]["resource"]["amr"]
    return amr


def sign_out(page: Page, server: LiveServer) -> None:
    page.goto(f"{server.url}/auth/two-factor")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You are signed out.")).to_be_visible()


def password(page: Page, server: LiveServer) -> None:
    page.goto(f"{server.url}/auth/login")
    page.get_by_label("E-mail or username").fill("ann@example.org")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()


def test_passkey_story(page: Page, server: LiveServer) -> None:
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    first = authenticator(cdp)

    # 1. signed in with the password, register a passkey on the settings page
    password(page, server)
    expect(page).to_have_url(f"{server.url}/auth/two-factor")
    page.get_by_label("Name for the new passkey").fill("Laptop")
    page.get_by_role("button", name="Add a passkey").click()
    expect(page).to_have_url(f"{server.url}/auth/two-factor?done=passkey-added")
    expect(page.locator(".passkey strong")).to_have_text("Laptop")
    credentials = cdp.send("WebAuthn.getCredentials", {"authenticatorId": first})["credentials"]
    assert len(credentials) == 1 and credentials[0]["isResidentCredential"]

    # 2. sign out; the password now asks for the passkey, offered first
    sign_out(page, server)
    password(page, server)
    expect(page).to_have_url(f"{server.url}/auth/two-factor/verify")
    page.get_by_role("button", name="Use a passkey").click()
    expect(page).to_have_url(f"{server.url}/auth/two-factor")
    assert newest_amr(server) == ["pwd", "hwk", "mfa"]

    # 3. sign out; passwordless, and the same request replayed is refused
    sign_out(page, server)
    page.goto(f"{server.url}/auth/login")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/passkeys/sign-in")) as sent:
        page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page).to_have_url(f"{server.url}/auth/two-factor")
    assert newest_amr(server) == ["hwk", "mfa"]
    replayed = page.request.post(
        sent.value.url,
        data=sent.value.post_data,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        max_redirects=0,
    )
    assert replayed.status == 400
    assert "That passkey did not work" in replayed.text()

    # 4. a counter rollback: the stored count is raised past the authenticator's
    with root(server) as api:
        passkey = api.get("/WebAuthnCredential").json()["entry"][0]["resource"]
        count = passkey["signCount"]
        assert count >= 2
        raised = api.put(f"/WebAuthnCredential/{passkey['id']}", json={**passkey, "signCount": count + 100})
        assert raised.status_code == 200
    sign_out(page, server)
    page.goto(f"{server.url}/auth/login")
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page.get_by_text("That passkey did not work")).to_be_visible()
    with root(server) as api:
        events = api.get("/AuditEvent", params={"action": "passkey-counter-rollback"}).json()
        assert events["total"] == 1
        restored = api.get(f"/WebAuthnCredential/{passkey['id']}").json()
        assert restored["signCount"] == count + 100
        assert (
            api.put(f"/WebAuthnCredential/{passkey['id']}", json={**restored, "signCount": 0}).status_code
            == 200
        )

    # 5. remove the passkey, confirmed with the passkey itself
    password(page, server)
    page.get_by_role("button", name="Use a passkey").click()
    expect(page).to_have_url(f"{server.url}/auth/two-factor")
    page.get_by_role("link", name="Remove").click()
    page.get_by_role("button", name="Confirm with a passkey").click()
    expect(page).to_have_url(f"{server.url}/auth/two-factor?done=passkey-removed")
    expect(page.locator(".passkey")).to_have_count(0)

    # 6. another authenticator, with a passkey for this site the server never registered: refused
    cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": first})
    second = authenticator(cdp)
    key = ec.generate_private_key(ec.SECP256R1())
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cdp.send(
        "WebAuthn.addCredential",
        {
            "authenticatorId": second,
            "credential": {
                "credentialId": base64.b64encode(os.urandom(16)).decode(),
                "isResidentCredential": True,
                "rpId": "localhost",
                "privateKey": base64.b64encode(pkcs8).decode(),
                "userHandle": base64.b64encode(b"ann-elsewhere").decode(),
                "signCount": 0,
            },
        },
    )
    sign_out(page, server)
    page.goto(f"{server.url}/auth/login")
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page.get_by_text("That passkey did not work")).to_be_visible()
    with root(server) as api:
        refused = api.get("/AuditEvent", params={"action": "passkey-refused"}).json()
        reasons = [
            detail["valueString"]
            for entry in refused["entry"]
            for detail in entry["resource"]["entity"][0]["detail"]
            if detail["type"] == "reason"
        ]
        assert "unknown-passkey" in reasons
