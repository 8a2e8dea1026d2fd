"""The Aidbox demo app's JSON 2FA operations and the password grant with `totp`, walked in order."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.testclient import TestClient

from fhirauth.app import create_app
from fhirauth.clock import ManualClock
from fhirauth.twofactor import totp
from tests.api.conftest import NO_AUTH, settings_for

PASSWORD = "correct horse battery staple"


@pytest.fixture
def setup(api: TestClient) -> None:
    api.put(
        "/AuthConfig/app",
        json={
            "resourceType": "AuthConfig",
            "twoFactor": {
                "issuerName": "ACME Co",
                "validPastTokensCount": 1,
                "maxAttempts": 3,
                "lockoutSeconds": 60,
            },
        },
    )
    # The JSON 2FA operations answer only first-party clients' tokens.
    api.put(
        "/Client/app",
        json={
            "resourceType": "Client",
            "first_party": True,
            "secret": "app-secret",
            "grant_types": ["password"],
        },
    )
    api.put("/User/ann", json={"resourceType": "User", "email": "ann@example.org", "password": PASSWORD})


def password_grant(api: TestClient, **extra: str):
    form = {
        "grant_type": "password",
        "username": "ann@example.org",
        "password": PASSWORD,
        "client_id": "app",
        "client_secret": "app-secret",
        **extra,
    }
    return api.post("/auth/token", data=form, headers=NO_AUTH)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def code_now(secret: str, clock: ManualClock) -> str:
    return totp.code_at(secret, totp.step_at(clock().timestamp()))


def test_enable_use_and_disable_story(api: TestClient, clock: ManualClock, setup: None) -> None:
    # 1. a token for ann, without 2FA
    res1 = password_grant(api)
    assert res1.status_code == 200
    auth = bearer(res1.json()["access_token"])
    # 2. no token: 401
    assert api.post("/app/auth/two-factor/request", json={}, headers=NO_AUTH).status_code == 401
    # 3. confirm before request: not_requested
    res3 = api.post("/app/auth/two-factor/confirm", json={"token": "123456"}, headers=auth)
    assert (res3.status_code, res3.json()) == (
        422,
        {"error": "not_requested", "error_description": "2FA is not requested"},
    )
    # 4. request: the otpauth URI, issuer from the AuthConfig, RFC 3986-encoded
    res4 = api.post("/app/auth/two-factor/request", json={}, headers=auth)
    assert res4.status_code == 200
    uri = res4.json()["uri"]
    assert uri.startswith("otpauth://totp/ACME%20Co:ann%40example.org?secret=")
    secret = parse_qs(urlsplit(uri).query)["secret"][0]
    assert parse_qs(urlsplit(uri).query)["issuer"] == ["ACME Co"]
    assert len(secret) == 32
    # 5. asking again while pending keeps the same secret
    assert api.post("/app/auth/two-factor/request", json={}, headers=auth).json()["uri"] == uri
    # 6. the stored secret is encrypted, never Base32, never returned
    stored = api.portal.call(api.app.state.services.storage.get, "User", "ann").document  # type: ignore[union-attr]
    assert secret not in str(stored)
    assert "secretKey" not in api.get("/User/ann").text
    # 7. a wrong code
    res7 = api.post("/app/auth/two-factor/confirm", json={"token": "000000"}, headers=auth)
    assert (res7.status_code, res7.json()) == (
        422,
        {"error": "wrong_token", "error_description": "Wrong token"},
    )
    # 8. the right code (as a JSON number too, like the demo's number input would send it)
    code = code_now(secret, clock)
    res8 = api.post("/app/auth/two-factor/confirm", json={"token": int(code)}, headers=auth)
    assert res8.status_code == 200
    recovery = res8.json()["recoveryCodes"]
    assert len(recovery) == 10 and len(set(recovery)) == 10
    # 9. enabled now: both operations refuse
    res9 = api.post("/app/auth/two-factor/confirm", json={"token": code}, headers=auth)
    assert (res9.status_code, res9.json()["error"]) == (422, "already_enabled")
    assert api.post("/app/auth/two-factor/request", json={}, headers=auth).json() == {
        "error": "already_enabled",
        "error_description": "2FA is already enabled",
    }
    # 10. userinfo shows the state, and no secret
    info = api.get("/auth/userinfo", headers=auth).json()
    assert info["twoFactor"] == {"enabled": True}
    assert "recoveryCodes" not in str(info) and "password" not in info
    # 11. the password grant now needs a code
    res11 = password_grant(api)
    assert (res11.status_code, res11.json()) == (
        400,
        {"error": "invalid_grant", "error_description": "Two-factor authentication code required"},
    )
    # 12. the enrolment code was spent: the same step is refused; the next step works once
    assert password_grant(api, totp=code).json()["error"] == "invalid_grant"
    clock.advance(30)
    next_code = code_now(secret, clock)
    assert password_grant(api, totp=next_code).status_code == 200
    assert password_grant(api, totp=next_code).json()["error"] == "invalid_grant"
    # 13. a recovery code works once, in any case and with or without the hyphen
    assert password_grant(api, totp=recovery[0].upper().replace("-", "")).status_code == 200
    assert password_grant(api, totp=recovery[0]).json()["error"] == "invalid_grant"
    # 14. disable needs a current code
    res14 = api.post("/app/auth/two-factor/disable", json={"token": "999999"}, headers=auth)
    assert (res14.status_code, res14.json()["error"]) == (422, "wrong_token")
    clock.advance(30)
    assert (
        api.post("/app/auth/two-factor/disable", json={"token": code_now(secret, clock)}, headers=auth).json()
        == {}
    )
    assert api.get("/auth/userinfo", headers=auth).json()["twoFactor"] == {"enabled": False}
    assert password_grant(api).status_code == 200
    # 15. enabling again makes a new secret
    again = api.post("/app/auth/two-factor/request", json={}, headers=auth).json()["uri"]
    assert parse_qs(urlsplit(again).query)["secret"][0] != secret


def test_lockout_after_max_attempts(api: TestClient, clock: ManualClock, setup: None) -> None:
    auth = bearer(password_grant(api).json()["access_token"])
    uri = api.post("/app/auth/two-factor/request", json={}, headers=auth).json()["uri"]
    secret = parse_qs(urlsplit(uri).query)["secret"][0]
    for _ in range(3):
        assert (
            api.post("/app/auth/two-factor/confirm", json={"token": "000000"}, headers=auth).status_code
            == 422
        )
    locked = api.post("/app/auth/two-factor/confirm", json={"token": code_now(secret, clock)}, headers=auth)
    assert locked.status_code == 429
    assert locked.headers["retry-after"] == "60"
    assert locked.json()["error"] == "locked"
    clock.advance(61)
    assert (
        api.post(
            "/app/auth/two-factor/confirm", json={"token": code_now(secret, clock)}, headers=auth
        ).status_code
        == 200
    )


def test_admin_reset_through_the_api(api: TestClient, clock: ManualClock, setup: None) -> None:
    auth = bearer(password_grant(api).json()["access_token"])
    uri = api.post("/app/auth/two-factor/request", json={}, headers=auth).json()["uri"]
    secret = parse_qs(urlsplit(uri).query)["secret"][0]
    api.post("/app/auth/two-factor/confirm", json={"token": code_now(secret, clock)}, headers=auth)
    assert api.patch("/User/ann", json={"twoFactor": {"enabled": False}}).status_code == 200
    assert password_grant(api).status_code == 200
    reset = api.get("/AuditEvent?action=2fa-reset").json()
    assert reset["total"] == 1
    assert reset["entry"][0]["resource"]["agent"][0]["who"] == {"resourceType": "User", "id": "ann"}
    # the old secret is gone: a new enrolment starts from a new one
    fresh = api.post("/app/auth/two-factor/request", json={}, headers=auth).json()["uri"]
    assert secret not in fresh


def test_migrated_secret_works_with_the_existing_authenticator(
    api: TestClient, clock: ManualClock, setup: None
) -> None:
    secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    api.put(
        "/User/ann",
        json={
            "resourceType": "User",
            "email": "ann@example.org",
            "twoFactor": {"enabled": True, "secretKey": secret},
        },
    )
    assert password_grant(api).json()["error_description"] == "Two-factor authentication code required"
    assert password_grant(api, totp=code_now(secret, clock)).status_code == 200


def stored_state(api: TestClient, user_id: str) -> object:
    storage = api.app.state.services.storage  # type: ignore[union-attr]
    record = api.portal.call(storage.record_get, "totp-step", user_id)  # type: ignore[union-attr]
    return record.document if record is not None else None


def test_step_up_verify_walked_in_order(api: TestClient, clock: ManualClock, setup: None) -> None:
    verify = "/app/auth/two-factor/verify"
    wrong = {"error": "wrong_token", "error_description": "Wrong token"}
    auth = bearer(password_grant(api).json()["access_token"])
    # 1. no token: 401
    res1 = api.post(verify, json={"token": "123456"}, headers=NO_AUTH)
    assert res1.status_code == 401
    assert res1.headers["www-authenticate"] == 'Bearer realm="fhirauth"'
    # 2. 2FA off
    res2 = api.post(verify, json={"token": "123456"}, headers=auth)
    assert (res2.status_code, res2.json()) == (
        422,
        {"error": "not_enabled", "error_description": "2FA is not enabled"},
    )
    assert stored_state(api, "ann") is None
    uri = api.post("/app/auth/two-factor/request", json={}, headers=auth).json()["uri"]
    secret = parse_qs(urlsplit(uri).query)["secret"][0]
    enrolled_step = totp.step_at(clock().timestamp())
    enrolment_code = code_now(secret, clock)
    assert (
        api.post("/app/auth/two-factor/confirm", json={"token": enrolment_code}, headers=auth).status_code
        == 200
    )
    # 3. a wrong code
    res3 = api.post(verify, json={"token": "000000"}, headers=auth)
    assert (res3.status_code, res3.json()) == (422, wrong)
    assert stored_state(api, "ann") == {
        "step": enrolled_step,
        "failures": 1,
        "earlierFailures": 0,
        "lockedUntil": None,
    }
    # 4. the next step's code is accepted and spent; the failure is forgotten
    clock.advance(30)
    code = code_now(secret, clock)
    res4 = api.post(verify, json={"token": code}, headers=auth)
    assert (res4.status_code, res4.json()) == (200, {})
    assert stored_state(api, "ann") == {
        "step": enrolled_step + 1,
        "failures": 0,
        "earlierFailures": 0,
        "lockedUntil": None,
    }
    # 5. the same code again
    res5 = api.post(verify, json={"token": code}, headers=auth)
    assert (res5.status_code, res5.json()) == (422, wrong)
    assert api.get("/AuditEvent?action=2fa-replay-refused").json()["total"] == 1
    # 6. the third failure in a row locks (maxAttempts 3, lockoutSeconds 60): even the right code is refused
    assert api.post(verify, json={"token": "000000"}, headers=auth).json() == wrong
    res6 = api.post(verify, json={"token": "000000"}, headers=auth)
    assert (res6.status_code, res6.json()) == (422, wrong)
    clock.advance(30)
    locked = api.post(verify, json={"token": code_now(secret, clock)}, headers=auth)
    assert (locked.status_code, locked.json()) == (
        429,
        {"error": "locked", "error_description": "Too many wrong codes; try again later"},
    )
    assert locked.headers["retry-after"] == "30"
    assert stored_state(api, "ann") == {
        "step": enrolled_step + 1,
        "failures": 0,
        "earlierFailures": 3,
        "lockedUntil": "2026-01-01T00:01:30.000Z",
    }
    # 7. after the lock, a code works again, and 2FA stayed on throughout
    clock.advance(30)
    assert api.post(verify, json={"token": code_now(secret, clock)}, headers=auth).json() == {}
    assert api.get("/auth/userinfo", headers=auth).json()["twoFactor"] == {"enabled": True}


def test_step_up_verify_takes_a_recovery_code_once(api: TestClient, clock: ManualClock, setup: None) -> None:
    auth = bearer(password_grant(api).json()["access_token"])
    uri = api.post("/app/auth/two-factor/request", json={}, headers=auth).json()["uri"]
    secret = parse_qs(urlsplit(uri).query)["secret"][0]
    confirmed = api.post(
        "/app/auth/two-factor/confirm", json={"token": code_now(secret, clock)}, headers=auth
    )
    recovery = confirmed.json()["recoveryCodes"]
    verify = "/app/auth/two-factor/verify"
    assert api.post(verify, json={"token": recovery[3]}, headers=auth).json() == {}
    assert api.post(verify, json={"token": recovery[3]}, headers=auth).json()["error"] == "wrong_token"
    stored = api.portal.call(api.app.state.services.storage.get, "User", "ann").document  # type: ignore[union-attr]
    assert len(stored["twoFactor"]["recoveryCodes"]) == 9


def test_step_up_verify_is_rate_limited_per_address(storage_url: str, clock: ManualClock) -> None:
    settings = settings_for(storage_url, rate_limit_two_factor_ip="2/minute")
    with TestClient(create_app(settings, clock=clock), raise_server_exceptions=False) as api:
        for _ in range(2):
            assert api.post("/app/auth/two-factor/verify", json={"token": "123456"}).status_code == 401
        refused = api.post("/app/auth/two-factor/verify", json={"token": "123456"})
        assert (refused.status_code, refused.json()) == (
            429,
            {"error": "invalid_request", "error_description": "Too many requests; try again in 60 seconds"},
        )
        assert refused.headers["retry-after"] == "60"
