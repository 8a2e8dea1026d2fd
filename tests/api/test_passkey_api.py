"""The passkey JSON operations (/app/auth/two-factor/passkeys/*) on both backends, every refused
caller in turn: no token, a third-party client's token, a wrong, expired or replayed challenge,
another user's credential, an unknown credential, a counter that went backwards."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient
from support.webauthn_key import SoftKey

from fhirauth.clock import ManualClock
from tests.api.conftest import NO_AUTH
from tests.api.pages_support import audit_detail, audit_events
from tests.api.test_twofactor_api import PASSWORD, bearer, code_now

BASE = "/app/auth/two-factor/passkeys"
ORIGIN = "http://testserver"
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@pytest.fixture
def setup(api: TestClient) -> None:
    for client_id, first_party in (("app", True), ("other", False)):
        api.put(
            f"/Client/{client_id}",
            json={
                "resourceType": "Client",
                "first_party": first_party,
                "secret": f"{client_id}-secret",
                "grant_types": ["password"],
            },
        )
    for user in ("ann", "bob"):
        api.put(
            f"/User/{user}",
            json={"resourceType": "User", "email": f"{user}@example.org", "password": PASSWORD},
        )


def token(api: TestClient, user: str = "ann", client: str = "app") -> dict[str, str]:
    form = {
        "grant_type": "password",
        "username": f"{user}@example.org",
        "password": PASSWORD,
        "client_id": client,
        "client_secret": f"{client}-secret",
    }
    answer = api.post("/auth/token", data=form, headers=NO_AUTH)
    assert answer.status_code == 200, answer.text
    return bearer(answer.json()["access_token"])


def register(api: TestClient, auth: dict[str, str], key: SoftKey, name: str = "Laptop") -> dict[str, Any]:
    options = api.post(f"{BASE}/registration/options", json={}, headers=auth)
    assert options.status_code == 200, options.text
    created = api.post(
        f"{BASE}/registration",
        json={"name": name, "credential": key.create(options.json()["publicKey"])},
        headers=auth,
    )
    assert created.status_code == 201, created.text
    return created.json()


def assertion(api: TestClient, auth: dict[str, str], key: SoftKey, **kwargs: Any) -> dict[str, Any]:
    options = api.post(f"{BASE}/authentication/options", json={}, headers=auth)
    assert options.status_code == 200, options.text
    return key.get(options.json()["publicKey"], **kwargs)


def error(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error"]


def test_register_list_step_up_and_remove(api: TestClient, setup: None, clock: ManualClock) -> None:
    auth = token(api)
    # 1. nothing yet
    assert api.get(BASE, headers=auth).json() == {"passkeys": []}
    # 2. register: the options name this server's relying party
    options = api.post(f"{BASE}/registration/options", json={}, headers=auth).json()["publicKey"]
    assert (options["rp"]["id"], options["attestation"]) == ("testserver", "none")
    key = SoftKey(ORIGIN)
    created = api.post(
        f"{BASE}/registration", json={"name": "Laptop", "credential": key.create(options)}, headers=auth
    )
    assert created.status_code == 201
    passkey = created.json()
    assert passkey == {
        "id": passkey["id"],
        "name": "Laptop",
        "created": "2026-01-01T00:00:00.000Z",
        "lastUsed": None,
        "transports": ["internal"],
        "synced": False,
    }
    # 3. listed; the public key and counter stay inside
    assert api.get(BASE, headers=auth).json() == {"passkeys": [passkey]}
    # 4. step-up with it: a device-bound key
    clock.advance(5)
    used = api.post(f"{BASE}/authentication", json={"credential": assertion(api, auth, key)}, headers=auth)
    assert (used.status_code, used.json()) == (200, {"amr": "hwk", "passkey": passkey["id"]})
    assert api.get(BASE, headers=auth).json()["passkeys"][0]["lastUsed"] == "2026-01-01T00:00:05.000Z"
    # 5. removal needs a fresh second factor: none given, a wrong one, then a passkey
    assert error(api.post(f"{BASE}/remove", json={"id": passkey["id"]}, headers=auth)) == (422, "not_enabled")
    body = {"id": passkey["id"], "credential": assertion(api, auth, key)}
    assert api.post(f"{BASE}/remove", json=body, headers=auth).json() == {}
    assert api.get(BASE, headers=auth).json() == {"passkeys": []}
    stored = api.get(f"/WebAuthnCredential/{passkey['id']}")
    assert stored.status_code == 410


def test_refused_callers(api: TestClient, setup: None, clock: ManualClock) -> None:
    auth, bob = token(api), token(api, "bob")
    third_party = token(api, client="other")
    for method, path in (
        ("get", BASE),
        ("post", f"{BASE}/registration/options"),
        ("post", f"{BASE}/registration"),
        ("post", f"{BASE}/authentication/options"),
        ("post", f"{BASE}/authentication"),
        ("post", f"{BASE}/remove"),
    ):
        anonymous = api.request(method, path, json={}, headers=NO_AUTH)
        assert anonymous.status_code == 401, path
        assert error(api.request(method, path, json={}, headers=third_party)) == (
            403,
            "first_party_client_required",
        )
    key, bobs = SoftKey(ORIGIN), SoftKey(ORIGIN)
    register(api, auth, key)
    register(api, bob, bobs)
    # No passkey to offer: bob's own options are his; ann's unknown to a new user
    # A wrong challenge: made up, another user's, expired, or spent.
    forged = key.get({"challenge": "bm90LWEtY2hhbGxlbmdl"})
    assert error(api.post(f"{BASE}/authentication", json={"credential": forged}, headers=auth)) == (
        422,
        "challenge_invalid",
    )
    bobs_challenge = assertion(api, bob, bobs)
    assert error(api.post(f"{BASE}/authentication", json={"credential": bobs_challenge}, headers=auth)) == (
        422,
        "challenge_invalid",
    )
    replayed = assertion(api, auth, key)
    assert api.post(f"{BASE}/authentication", json={"credential": replayed}, headers=auth).status_code == 200
    assert error(api.post(f"{BASE}/authentication", json={"credential": replayed}, headers=auth)) == (
        422,
        "challenge_invalid",
    )
    # Bob's key on ann's ceremony, and a key nobody registered.
    options = api.post(f"{BASE}/authentication/options", json={}, headers=auth).json()["publicKey"]
    assert error(
        api.post(f"{BASE}/authentication", json={"credential": bobs.get(options)}, headers=auth)
    ) == (
        422,
        "unknown_passkey",
    )
    stranger = SoftKey(ORIGIN)
    stranger.rp_id = "testserver"
    options = api.post(f"{BASE}/authentication/options", json={}, headers=auth).json()["publicKey"]
    assert error(
        api.post(f"{BASE}/authentication", json={"credential": stranger.get(options)}, headers=auth)
    ) == (
        422,
        "unknown_passkey",
    )
    # A counter rollback.
    rolled = assertion(api, auth, key, sign_count=1)
    assert api.post(f"{BASE}/authentication", json={"credential": rolled}, headers=auth).json() == {
        "error": "passkey_refused",
        "error_description": "The passkey's signature counter went backwards; it may have been copied",
    }
    # Past the minute of the per-address limit on two-factor operations.
    clock.advance(61)
    # Bad input: 400 before anything is spent, never a 500.
    for body in ({}, {"credential": "x"}, {"credential": []}):
        assert api.post(f"{BASE}/authentication", json=body, headers=auth).status_code == 400
    assert api.post(f"{BASE}/remove", json={"id": 7}, headers=auth).status_code == 400
    assert error(api.post(f"{BASE}/authentication", json={"credential": {"response": {}}}, headers=auth)) == (
        422,
        "passkey_refused",
    )
    # Ann cannot remove Bob's passkey, even with a good passkey of her own.
    bobs_id = api.get(BASE, headers=bob).json()["passkeys"][0]["id"]
    body = {"id": bobs_id, "credential": assertion(api, auth, key, sign_count=10)}
    assert error(api.post(f"{BASE}/remove", json=body, headers=auth)) == (422, "unknown_passkey")
    assert len(api.get(BASE, headers=bob).json()["passkeys"]) == 1
    # The counter stayed where the last good use left it.
    ann_id = api.get(BASE, headers=auth).json()["passkeys"][0]["id"]
    assert api.get(f"/WebAuthnCredential/{ann_id}").json()["signCount"] == 10


def test_expired_registration_challenge(api: TestClient, setup: None, clock: ManualClock) -> None:
    auth = token(api)
    options = api.post(f"{BASE}/registration/options", json={}, headers=auth).json()["publicKey"]
    clock.advance(301)
    key = SoftKey(ORIGIN)
    answer = api.post(
        f"{BASE}/registration", json={"name": "Late", "credential": key.create(options)}, headers=auth
    )
    assert error(answer) == (422, "challenge_invalid")
    assert api.get(BASE, headers=auth).json() == {"passkeys": []}


def test_a_passkey_only_user_gets_no_token_from_the_password_grant(api: TestClient, setup: None) -> None:
    register(api, token(api), SoftKey(ORIGIN))
    form = {
        "grant_type": "password",
        "username": "ann@example.org",
        "password": PASSWORD,
        "client_id": "app",
        "client_secret": "app-secret",
    }
    answer = api.post("/auth/token", data=form, headers=NO_AUTH)
    assert (answer.status_code, answer.json()) == (
        400,
        {
            "error": "invalid_grant",
            "error_description": "This account's second factor is a passkey; sign in through the browser",
        },
    )


def test_removal_with_a_code_instead_of_a_passkey(api: TestClient, setup: None, clock: ManualClock) -> None:
    auth = token(api)
    passkey = register(api, auth, SoftKey(ORIGIN))
    # The user turns TOTP on too (written here by the administrator): a code may now confirm.
    patched = api.patch("/User/ann", json={"twoFactor": {"enabled": True, "secretKey": SECRET}})
    assert patched.status_code == 200, patched.text
    remove = f"{BASE}/remove"
    # 1. a wrong code, a code of the wrong shape, none: refused, the passkey stays
    for body in ({"token": "000000"}, {"token": 123456}, {"token": ""}):
        refused = api.post(remove, json={"id": passkey["id"], **body}, headers=auth)
        assert (refused.status_code, refused.json()) == (
            422,
            {"error": "wrong_token", "error_description": "Wrong token"},
        ), body
    assert api.get(BASE, headers=auth).json() == {"passkeys": [passkey]}
    # 2. a current code, naming another user's or an unknown passkey: the code is spent, nothing removed
    clock.advance(61)
    unknown = {"id": "0" * 64, "token": code_now(SECRET, clock)}
    assert error(api.post(remove, json=unknown, headers=auth)) == (422, "unknown_passkey")
    # 3. the same code again: the replay guard refuses it
    again = {"id": passkey["id"], "token": unknown["token"]}
    assert error(api.post(remove, json=again, headers=auth)) == (422, "wrong_token")
    # 4. the next code removes it
    clock.advance(30)
    done = api.post(remove, json={"id": passkey["id"], "token": code_now(SECRET, clock)}, headers=auth)
    assert (done.status_code, done.json()) == (200, {})
    assert api.get(BASE, headers=auth).json() == {"passkeys": []}
    assert api.get(f"/WebAuthnCredential/{passkey['id']}").status_code == 410
    removed = audit_events(api, "passkey-removed")
    assert [audit_detail(e) for e in removed] == [{"passkey": passkey["id"], "by": "user"}]
    # TOTP is still on: the user keeps two-factor authentication
    assert api.get("/User/ann").json()["twoFactor"]["enabled"] is True
