"""The passkey pages, as the story of one user on both backends: register on the settings page, sign
in with password + passkey (amr pwd hwk mfa), passwordless once AuthConfig turns it on (amr hwk mfa),
and removal with a fresh second factor. The browser half is the software authenticator."""

from __future__ import annotations

import json
from typing import Any

import httpx2
from starlette.testclient import TestClient
from support.webauthn_key import SoftKey

from fhirauth.clock import ManualClock
from tests.api.pages_support import create_user, csrf_from, login

ORIGIN = "http://testserver"
PASSKEYS = "/auth/two-factor/passkeys"


def options(client: TestClient, page: httpx2.Response, purpose: str) -> httpx2.Response:
    return client.post(f"{PASSKEYS}/options", data={"csrf": csrf_from(page), "purpose": purpose})


def session_amr(api: TestClient) -> list[str]:
    """The amr of the browser sign-in this client's cookie holds (the newest browser Session)."""
    bundle = api.get("/Session", params={"type": "browser", "active": "true", "_sort": "-start"}).json()
    sessions: list[dict[str, Any]] = [entry["resource"] for entry in bundle["entry"]]
    amr: list[str] = sessions[0]["amr"]
    return amr


def test_register_sign_in_with_a_passkey_and_remove_it(api: TestClient, clock: ManualClock) -> None:
    create_user(api, "ann")
    key = SoftKey(ORIGIN)
    # 1. signed in with the password alone (no second factor yet)
    assert login(api, "ann@example.org").headers["location"] == "/auth/two-factor"
    settings = api.get("/auth/two-factor")
    assert "Add a passkey" in settings.text and 'src="/static/passkey.js"' in settings.text
    # 2. without the CSRF field: refused, nothing handed out
    assert api.post(f"{PASSKEYS}/options", data={"purpose": "register"}).status_code == 403
    # 3. register
    answer = options(api, settings, "register")
    assert answer.status_code == 200
    credential = key.create(answer.json()["publicKey"])
    registered = api.post(
        PASSKEYS,
        data={"csrf": csrf_from(settings), "name": "Laptop", "credential": json.dumps(credential)},
        follow_redirects=False,
    )
    assert (registered.status_code, registered.headers["location"]) == (
        303,
        "/auth/two-factor?done=passkey-added",
    )
    listed = api.get("/auth/two-factor")
    assert "<strong>Laptop</strong>" in listed.text
    # 4. sign out; the password now leads to the second-factor step, which offers the passkey first
    api.cookies.clear()
    step = login(api, "ann@example.org")
    assert step.headers["location"] == "/auth/two-factor/verify"
    verify = api.get("/auth/two-factor/verify")
    assert verify.text.index("Use a passkey") < verify.text.index("Enter the 6-digit code")
    # 5. a passkey for another purpose, or none pending: refused
    assert options(api, verify, "nonsense").status_code == 400
    answer = options(api, verify, "verify")
    assertion = key.get(answer.json()["publicKey"])
    clock.advance(3)
    done = api.post(
        f"{PASSKEYS}/verify",
        data={"csrf": csrf_from(verify), "credential": json.dumps(assertion)},
        follow_redirects=False,
    )
    assert (done.status_code, done.headers["location"]) == (302, "/auth/two-factor")
    assert session_amr(api) == ["pwd", "hwk", "mfa"]
    # 6. the same assertion again: the pending login and the challenge are both spent
    again = api.post(
        f"{PASSKEYS}/verify",
        data={"csrf": csrf_from(verify), "credential": json.dumps(assertion)},
        follow_redirects=False,
    )
    assert again.status_code == 400
    # 7. remove, confirmed with the passkey
    passkey_id = api.get("/WebAuthnCredential").json()["entry"][0]["resource"]["id"]
    remove_page = api.get(f"{PASSKEYS}/{passkey_id}/remove")
    assert "Confirm with a passkey" in remove_page.text and "Remove with a code" not in remove_page.text
    answer = options(api, remove_page, "confirm")
    removed = api.post(
        f"{PASSKEYS}/{passkey_id}/remove",
        data={"csrf": csrf_from(remove_page), "credential": json.dumps(key.get(answer.json()["publicKey"]))},
        follow_redirects=False,
    )
    assert (removed.status_code, removed.headers["location"]) == (
        303,
        "/auth/two-factor?done=passkey-removed",
    )
    assert api.get("/WebAuthnCredential").json()["total"] == 0
    # 8. the password alone signs in again
    api.cookies.clear()
    assert login(api, "ann@example.org").headers["location"] == "/auth/two-factor"


def test_passwordless_is_off_until_the_auth_config_turns_it_on(api: TestClient, clock: ManualClock) -> None:
    create_user(api, "ann")
    key = SoftKey(ORIGIN)
    login(api, "ann@example.org")
    settings = api.get("/auth/two-factor")
    credential = key.create(options(api, settings, "register").json()["publicKey"])
    api.post(
        PASSKEYS, data={"csrf": csrf_from(settings), "name": "Phone", "credential": json.dumps(credential)}
    )
    api.cookies.clear()
    page = api.get("/auth/login")
    assert "Sign in with a passkey" not in page.text
    assert options(api, page, "sign-in").status_code == 404
    api.put("/AuthConfig/app", json={"resourceType": "AuthConfig", "twoFactor": {"passkeySignIn": True}})
    page = api.get("/auth/login?redirect_to=%2Fauth%2Ftwo-factor")
    assert f'action="{PASSKEYS}/sign-in?redirect_to=%2Fauth%2Ftwo-factor"' in page.text
    answer = options(api, page, "sign-in").json()["publicKey"]
    assert (answer["allowCredentials"], answer["userVerification"]) == ([], "required")
    assertion = key.get(answer)
    clock.advance(2)
    done = api.post(
        f"{PASSKEYS}/sign-in?redirect_to=%2Fauth%2Ftwo-factor",
        data={"csrf": csrf_from(page), "credential": json.dumps(assertion)},
        follow_redirects=False,
    )
    assert (done.status_code, done.headers["location"]) == (302, "/auth/two-factor")
    assert session_amr(api) == ["hwk", "mfa"]
    # Another browser (another CSRF cookie) cannot finish a ceremony this one began.
    answer = options(api, page, "sign-in").json()["publicKey"]
    assertion = key.get(answer)
    api.cookies.clear()
    other_page = api.get("/auth/login")
    stolen = api.post(
        f"{PASSKEYS}/sign-in",
        data={"csrf": csrf_from(other_page), "credential": json.dumps(assertion)},
        follow_redirects=False,
    )
    assert stolen.status_code == 400
