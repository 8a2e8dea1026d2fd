"""The password grant with the openid scope returns an ID token (as Keycloak's direct grant does), whose
amr says how the user signed in: `pwd`, and `otp` and `mfa` when the grant carried a TOTP code. The
token Session remembers the sign-in for refreshes and introspection: stored, so both backends.
"""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from starlette.testclient import TestClient

from fhirauth.clock import ManualClock
from fhirauth.twofactor import totp
from tests.api.conftest import NO_AUTH
from tests.api.oidc_support import half_hash, id_token_claims

PASSWORD = "correct horse battery staple"
SIGNED_IN_AT = 1767225600  # the ManualClock's start, 2026-01-01T00:00:00Z


@pytest.fixture
def setup(api: TestClient) -> None:
    client = {
        "resourceType": "Client",
        "secret": "app-secret",
        "grant_types": ["password", "refresh_token"],
        "auth": {"password": {"refresh_token": True, "access_token_expiration": 900}},
    }
    assert api.put("/Client/app", json=client).status_code in (200, 201)
    user = {"resourceType": "User", "email": "ann@example.org", "password": PASSWORD}
    assert api.put("/User/ann", json=user).status_code in (200, 201)


def grant(api: TestClient, **extra: str) -> httpx2.Response:
    form = {"grant_type": "password", "username": "ann@example.org", "password": PASSWORD, **extra}
    return api.post("/auth/token", data=form, auth=("app", "app-secret"), headers=NO_AUTH)


def password_session(api: TestClient) -> dict[str, Any]:
    bundle = api.get("/Session", params={"type": "password"}).json()
    (entry,) = bundle["entry"]
    session: dict[str, Any] = entry["resource"]
    return session


def test_the_password_grant_with_openid_returns_an_id_token_with_amr_pwd(
    api: TestClient, setup: None, clock: ManualClock
) -> None:
    clock.advance(30)
    response = grant(api, scope="openid profile")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "scope",
        "userinfo",
        "id_token",
    }
    claims = id_token_claims(api, body["id_token"], kind="code", now=clock(), client_id="app")
    session = password_session(api)
    assert claims == {
        "iss": "http://testserver",
        "sub": "ann",
        "aud": "app",
        "iat": SIGNED_IN_AT + 30,
        "exp": SIGNED_IN_AT + 30 + 900,
        "auth_time": SIGNED_IN_AT + 30,
        "sid": session["id"],
        "at_hash": half_hash(body["access_token"]),
        "amr": ["pwd"],
        "acr": "urn:fhirauth:acr:pwd",
    }
    # As for the code grant: the acr is stored only when a request asked for one; it follows from amr.
    assert (session["auth_time"], session["amr"], "acr" in session) == (SIGNED_IN_AT + 30, ["pwd"], False)
    introspected = api.post(
        "/auth/introspect", data={"token": body["access_token"]}, auth=("app", "app-secret"), headers=NO_AUTH
    ).json()
    assert (introspected["active"], introspected["amr"], introspected["acr"]) == (
        True,
        ["pwd"],
        "urn:fhirauth:acr:pwd",
    )


def test_a_totp_code_in_the_grant_makes_amr_otp_and_mfa(
    api: TestClient, setup: None, clock: ManualClock
) -> None:
    secret = totp.new_secret()
    patched = api.patch("/User/ann", json={"twoFactor": {"enabled": True, "secretKey": secret}})
    assert patched.status_code == 200, patched.text
    code = totp.code_at(secret, totp.step_at(clock().timestamp()))
    response = grant(api, scope="openid", totp=code)
    assert response.status_code == 200, response.text
    claims = id_token_claims(api, response.json()["id_token"], kind="code", now=clock(), client_id="app")
    assert (claims["amr"], claims["acr"]) == (["pwd", "otp", "mfa"], "urn:fhirauth:acr:mfa")
    assert password_session(api)["amr"] == ["pwd", "otp", "mfa"]


def test_a_refresh_keeps_the_sign_in_of_the_password_grant(
    api: TestClient, setup: None, clock: ManualClock
) -> None:
    first = grant(api, scope="openid").json()
    clock.advance(60)
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    refreshed = api.post("/auth/token", data=form, auth=("app", "app-secret"), headers=NO_AUTH)
    assert refreshed.status_code == 200, refreshed.text
    claims = id_token_claims(api, refreshed.json()["id_token"], kind="code", now=clock(), client_id="app")
    before = id_token_claims(api, first["id_token"], kind="code", now=clock(), client_id="app")
    # Core §12.2: the same subject, sign-in time and session; issued anew.
    assert (claims["sub"], claims["auth_time"], claims["sid"], claims["amr"]) == (
        "ann",
        SIGNED_IN_AT,
        before["sid"],
        ["pwd"],
    )
    assert claims["iat"] == SIGNED_IN_AT + 60


def test_without_openid_there_is_no_id_token(api: TestClient, setup: None) -> None:
    response = grant(api, scope="profile")
    assert response.status_code == 200, response.text
    assert "id_token" not in response.json()
    session = password_session(api)
    assert "auth_time" not in session and "amr" not in session


def test_a_wrong_password_with_openid_issues_nothing(api: TestClient, setup: None) -> None:
    form = {"grant_type": "password", "username": "ann@example.org", "password": "wrong", "scope": "openid"}
    response = api.post("/auth/token", data=form, auth=("app", "app-secret"), headers=NO_AUTH)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")
    assert api.get("/Session", params={"type": "password"}).json()["total"] == 0
