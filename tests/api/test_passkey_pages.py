"""The passkey pages, as the story of one user on both backends: register on the settings page, sign
in with password + passkey (amr pwd hwk mfa), passwordless once AuthConfig turns it on (amr hwk mfa),
and removal with a fresh second factor. The browser half is the software authenticator."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx2
import pytest
from starlette.testclient import TestClient
from support.webauthn_key import SoftKey

from fhirauth.clock import ManualClock
from fhirauth.twofactor import totp
from fhirauth.twofactor.passkeys.credentials import passkey_id
from tests.api.oidc_support import CB, NONCE, authorize, id_token_claims, rp_request, setup_clients
from tests.api.oidc_support import answer as redirect_params
from tests.api.pages_support import audit_detail, audit_events, call, create_user, csrf_from, login, services

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"

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
    assert "Use a passkey" in verify.text
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


# The sign-in step after the password, for a user whose second factor is a passkey

VERIFY = "/auth/two-factor/verify"
TRUSTED = "fhirauth_trusted"
ACR_MFA = "urn:fhirauth:acr:mfa"
_PASSKEY_FORM = re.compile(r'<form method="post" action="/auth/two-factor/passkeys/verify".*?</form>', re.S)
_OFFER = "Don't ask again on this device for 30 days"


def register_on_settings(api: TestClient, key: SoftKey, name: str = "Laptop") -> str:
    """Register `key` from the settings page of the signed-in user; the passkey's id."""
    settings = api.get("/auth/two-factor")
    credential = key.create(options(api, settings, "register").json()["publicKey"])
    registered = api.post(
        PASSKEYS,
        data={"csrf": csrf_from(settings), "name": name, "credential": json.dumps(credential)},
        follow_redirects=False,
    )
    assert registered.status_code == 303, registered.text
    return passkey_id(key.credential_id)


def passkey_only_user(api: TestClient, key: SoftKey, user: str = "ann") -> str:
    """`user` with `key` as her only second factor, signed out; the passkey's id."""
    create_user(api, user)
    assert login(api, f"{user}@example.org").headers["location"] == "/auth/two-factor"
    registered = register_on_settings(api, key)
    api.cookies.clear()
    return registered


def give_passkey(api: TestClient, key: SoftKey, *, trust: bool) -> httpx2.Response:
    page = api.get(VERIFY)
    assert page.status_code == 200, page.text
    answer = options(api, page, "verify")
    assert answer.status_code == 200, answer.text
    data = {"csrf": csrf_from(page), "credential": json.dumps(key.get(answer.json()["publicKey"]))}
    if trust:
        data["trust_device"] = "on"
    return api.post(f"{PASSKEYS}/verify", data=data, follow_redirects=False)


def sign_out(api: TestClient) -> None:
    page = api.get("/auth/two-factor")
    assert api.post("/auth/logout", data={"csrf": csrf_from(page)}).status_code == 200
    assert "asid" not in api.cookies


def newest_session(api: TestClient) -> dict[str, Any]:
    bundle = api.get("/Session", params={"type": "browser", "active": "true", "_sort": "-start"}).json()
    session: dict[str, Any] = bundle["entry"][0]["resource"]
    return session


@pytest.mark.parametrize(("synced", "method"), [(False, "hwk"), (True, "swk")])
def test_the_passkey_step_may_trust_the_browser(
    api: TestClient, clock: ManualClock, synced: bool, method: str
) -> None:
    key = SoftKey(ORIGIN, backup_eligible=synced)
    passkey_only_user(api, key)
    assert login(api, "ann@example.org").headers["location"] == VERIFY
    # 1. the passkey's form offers to trust the browser, as the code's does
    form = _PASSKEY_FORM.search(api.get(VERIFY).text)
    assert form is not None and _OFFER in form.group(0)
    assert 'name="trust_device" value="on"' in form.group(0)
    # 2. ticked: signed in with the passkey, and the browser is trusted with the passkey's method
    clock.advance(2)
    done = give_passkey(api, key, trust=True)
    assert (done.status_code, done.headers["location"]) == (302, "/auth/two-factor")
    assert newest_session(api)["amr"] == ["pwd", method, "mfa"]
    assert TRUSTED in api.cookies
    devices = call(api, services(api).trusted_devices.devices, "ann")
    assert [(d.methods, d.last_used) for d in devices] == [((method,), None)]
    assert [audit_detail(e)["device"] for e in audit_events(api, "trusted-device-granted")] == [devices[0].id]
    # 3. the next sign-in in this browser needs the password only
    sign_out(api)
    clock.advance(60)
    again = login(api, "ann@example.org")
    assert (again.status_code, again.headers["location"]) == (302, "/auth/two-factor")
    session = newest_session(api)
    assert (session["amr"], session["trustedDevice"]["amr"]) == (["pwd"], [method])


def test_unticked_the_passkey_step_trusts_nothing(api: TestClient, clock: ManualClock) -> None:
    key = SoftKey(ORIGIN)
    passkey_only_user(api, key)
    login(api, "ann@example.org")
    done = give_passkey(api, key, trust=False)
    assert done.status_code == 302
    assert TRUSTED not in api.cookies
    assert call(api, services(api).trusted_devices.devices, "ann") == []
    sign_out(api)
    assert login(api, "ann@example.org").headers["location"] == VERIFY


def test_a_passkey_only_user_is_not_shown_the_code_form(api: TestClient, clock: ManualClock) -> None:
    key = SoftKey(ORIGIN)
    passkey_only_user(api, key)
    login(api, "ann@example.org")
    page = api.get(VERIFY)
    assert "Use a passkey" in page.text
    assert 'action="/auth/two-factor/verify"' not in page.text
    assert "Enter the 6-digit code" not in page.text and "recovery codes" not in page.text
    assert "Lost your passkey? Ask an administrator to reset two-factor authentication." in page.text
    # A user with TOTP only is shown the code form and no passkey; one with both, the passkey first.
    api.cookies.clear()
    create_user(api, "bob")
    api.patch("/User/bob", json={"twoFactor": {"enabled": True, "secretKey": SECRET}})
    login(api, "bob@example.org")
    code_step = api.get(VERIFY)
    assert "Use a passkey" not in code_step.text and "Enter the 6-digit code" in code_step.text
    api.post(
        VERIFY,
        data={"csrf": csrf_from(code_step), "code": totp.code_at(SECRET, totp.step_at(clock().timestamp()))},
    )
    register_on_settings(api, SoftKey(ORIGIN))
    api.cookies.clear()
    login(api, "bob@example.org")
    both = api.get(VERIFY).text
    assert both.index("Use a passkey") < both.index("Enter the 6-digit code") < both.index("recovery codes")
    assert "Lost your passkey" not in both


def test_removing_the_last_passkey_forgets_the_trusted_devices(api: TestClient, clock: ManualClock) -> None:
    key, spare = SoftKey(ORIGIN), SoftKey(ORIGIN)
    first = passkey_only_user(api, key)
    login(api, "ann@example.org")
    clock.advance(2)
    assert give_passkey(api, key, trust=True).status_code == 302
    second = register_on_settings(api, spare, "Spare")
    # 1. one passkey of two goes: the second factor stays, and so does the trusted browser
    remove_with_passkey(api, spare, first)
    devices = call(api, services(api).trusted_devices.devices, "ann")
    assert len(devices) == 1
    # 2. the last one goes: two-factor is off, every trusted device is forgotten
    clock.advance(61)
    remove_with_passkey(api, spare, second)
    assert api.get("/WebAuthnCredential").json()["total"] == 0
    assert call(api, services(api).trusted_devices.devices, "ann") == []
    revoked = audit_events(api, "trusted-device-revoked")
    assert [(audit_detail(e)["device"], audit_detail(e)["reason"]) for e in revoked] == [
        (devices[0].id, "two-factor-off")
    ]


def test_a_user_with_totp_keeps_her_trusted_devices_without_passkeys(
    api: TestClient, clock: ManualClock
) -> None:
    create_user(api, "ann")
    api.patch("/User/ann", json={"twoFactor": {"enabled": True, "secretKey": SECRET}})
    key = SoftKey(ORIGIN)
    login(api, "ann@example.org")
    code = totp.code_at(SECRET, totp.step_at(clock().timestamp()))
    page = api.get(VERIFY)
    api.post(VERIFY, data={"csrf": csrf_from(page), "code": code, "trust_device": "on"})
    only = register_on_settings(api, key)
    remove_with_passkey(api, key, only)
    assert api.get("/WebAuthnCredential").json()["total"] == 0
    assert len(call(api, services(api).trusted_devices.devices, "ann")) == 1
    assert audit_events(api, "trusted-device-revoked") == []


def remove_with_passkey(api: TestClient, key: SoftKey, passkey: str) -> None:
    """Remove `passkey` on its page, confirmed with `key` (another or the same passkey of the user)."""
    page = api.get(f"{PASSKEYS}/{passkey}/remove")
    answer = options(api, page, "confirm").json()["publicKey"]
    removed = api.post(
        f"{PASSKEYS}/{passkey}/remove",
        data={"csrf": csrf_from(page), "credential": json.dumps(key.get(answer))},
        follow_redirects=False,
    )
    assert (removed.status_code, removed.headers["location"]) == (
        303,
        "/auth/two-factor?done=passkey-removed",
    ), removed.text


def test_a_step_up_through_authorize_is_met_by_a_passkey(api: TestClient, clock: ManualClock) -> None:
    setup_clients(api)
    key = SoftKey(ORIGIN)
    login(api, "ann@example.org")
    register_on_settings(api, key)
    assert newest_session(api)["amr"] == ["pwd"]
    params = rp_request("id_token", acr_values=ACR_MFA)
    # 1. the password sign-in does not meet the request for MFA: the browser is asked for the passkey
    asked = authorize(api, **params)
    assert (asked.status_code, asked.headers["location"]) == (302, VERIFY)
    page = api.get(VERIFY)
    assert "Use a passkey" in page.text and "Enter the 6-digit code" not in page.text
    # 2. the passkey raises this sign-in (same Session) and the request goes on
    session_id = newest_session(api)["id"]
    clock.advance(2)
    done = give_passkey(api, key, trust=True)
    assert done.status_code == 302 and done.headers["location"].startswith("/auth/authorize?")
    assert [d.methods for d in call(api, services(api).trusted_devices.devices, "ann")] == [("hwk",)]
    answered = api.get(done.headers["location"], follow_redirects=False)
    fragment = redirect_params(answered.headers["location"], CB, "fragment")
    claims = id_token_claims(api, fragment["id_token"], kind="implicit", now=clock(), nonce=NONCE)
    assert (claims["acr"], claims["amr"]) == (ACR_MFA, ["pwd", "hwk", "mfa"])
    session = newest_session(api)
    assert (session["id"], session["amr"]) == (session_id, ["pwd", "hwk", "mfa"])
    steps = [audit_detail(e) for e in audit_events(api, "login") if "stepUp" in audit_detail(e)]
    assert [s["stepUp"] for s in steps] == ["hwk"]
    # 3. the same request again is answered at once
    assert authorize(api, **params).headers["location"].startswith(CB + "#")
