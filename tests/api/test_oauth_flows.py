"""Token lifetimes and single use over HTTP on both backends: codes, refresh tokens, access tokens."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from fhirauth.clock import ManualClock
from tests.api.oauth_support import (
    CHALLENGE,
    NO_STORE,
    PASSWORD,
    REDIRECT,
    VERIFIER,
    authorization_code,
    bearer,
    error_of,
    password_tokens,
    put,
    setup_world,
    token,
)


@pytest.fixture
def world(api: TestClient) -> TestClient:
    setup_world(api)
    return api


def userinfo_status(api: TestClient, access_token: str) -> int:
    return api.get("/auth/userinfo", headers=bearer(access_token)).status_code


def test_password_grant_response_is_aidbox_shaped(world: TestClient) -> None:
    response = token(world, grant_type="password", username="ann@example.org", password=PASSWORD)
    assert response.status_code == 200
    assert (response.headers["cache-control"], response.headers["pragma"]) == tuple(NO_STORE.values())
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "userinfo"}
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 3600)
    assert body["userinfo"] == {
        "resourceType": "User",
        "id": "ann",
        "email": "ann@example.org",
        "meta": {
            "versionId": "1",
            "lastUpdated": "2026-01-01T00:00:00.000Z",
            "createdAt": "2026-01-01T00:00:00.000Z",
        },
    }


def test_access_token_is_refused_once_expired(world: TestClient, clock: ManualClock) -> None:
    setup_world(world, auth={"password": {"access_token_expiration": 60}})
    body = password_tokens(world)
    assert body["expires_in"] == 60
    assert userinfo_status(world, body["access_token"]) == 200
    clock.advance(60)
    response = world.get("/auth/userinfo", headers=bearer(body["access_token"]))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="fhirauth", error="invalid_token"'
    assert world.get("/User", headers=bearer(body["access_token"])).status_code == 401


def test_code_flow_with_pkce(world: TestClient) -> None:
    put(world, "Client", "spa", grant_types=["code"], auth={"authorization_code": {"redirect_uri": REDIRECT}})
    code = authorization_code(world, client_id="spa", code_challenge=CHALLENGE, code_challenge_method="S256")
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": "spa"}
    response = token(world, {"Authorization": ""}, **form, code_verifier=VERIFIER)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "userinfo"}
    assert userinfo_status(world, body["access_token"]) == 200


def test_code_with_a_wrong_verifier_is_refused_and_spent(world: TestClient) -> None:
    put(world, "Client", "spa", grant_types=["code"], auth={"authorization_code": {"redirect_uri": REDIRECT}})
    code = authorization_code(world, client_id="spa", code_challenge=CHALLENGE, code_challenge_method="S256")
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": "spa"}
    wrong = token(world, {"Authorization": ""}, **form, code_verifier="w" * 43)
    assert (error_of(wrong), wrong.json()["error_description"]) == (
        (400, "invalid_grant"),
        "'code_verifier' does not match the code challenge",
    )
    assert error_of(token(world, {"Authorization": ""}, **form, code_verifier=VERIFIER)) == (
        400,
        "invalid_grant",
    )


def test_expired_code_is_refused(world: TestClient, clock: ManualClock) -> None:
    code = authorization_code(world)
    clock.advance(60)
    response = token(world, grant_type="authorization_code", code=code, redirect_uri=REDIRECT)
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "Invalid or expired authorization code",
    }


def test_redirect_uri_mismatch_at_the_token_endpoint(world: TestClient) -> None:
    code = authorization_code(world)
    response = token(
        world, grant_type="authorization_code", code=code, redirect_uri="https://app.example/other"
    )
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "'redirect_uri' does not match the authorization request",
    }


def test_code_reuse_is_refused_and_revokes_the_first_tokens(world: TestClient) -> None:
    code = authorization_code(world)
    first = token(world, grant_type="authorization_code", code=code, redirect_uri=REDIRECT).json()
    assert userinfo_status(world, first["access_token"]) == 200
    again = token(world, grant_type="authorization_code", code=code, redirect_uri=REDIRECT)
    assert again.status_code == 400
    assert again.json() == {
        "error": "invalid_grant",
        "error_description": "Authorization code was already used; the tokens issued from it are revoked",
    }
    assert userinfo_status(world, first["access_token"]) == 401
    refreshed = token(world, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert refreshed.json() == {"error": "invalid_grant", "error_description": "Refresh token was revoked"}


def test_refresh_rotates_and_the_old_refresh_token_dies(world: TestClient) -> None:
    first = password_tokens(world)
    second = token(world, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert second.status_code == 200
    assert (second.headers["cache-control"], second.headers["pragma"]) == tuple(NO_STORE.values())
    body = second.json()
    assert body["refresh_token"] != first["refresh_token"]
    assert userinfo_status(world, body["access_token"]) == 200
    assert userinfo_status(world, first["access_token"]) == 401
    assert error_of(token(world, grant_type="refresh_token", refresh_token=first["refresh_token"])) == (
        400,
        "invalid_grant",
    )


def test_expired_refresh_token_is_refused(world: TestClient, clock: ManualClock) -> None:
    setup_world(world, auth={"password": {"refresh_token": True, "refresh_token_expiration": 600}})
    first = password_tokens(world)
    clock.advance(600)
    response = token(world, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert response.json() == {"error": "invalid_grant", "error_description": "Refresh token expired"}


def test_refresh_token_of_another_client_is_refused(world: TestClient) -> None:
    first = password_tokens(world)
    put(world, "Client", "other", secret="other-secret", grant_types=["refresh_token"])
    response = token(
        world,
        {"Authorization": ""},
        grant_type="refresh_token",
        refresh_token=first["refresh_token"],
        client_id="other",
        client_secret="other-secret",
    )
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "Refresh token was issued to another client",
    }


def test_client_credentials_token_reaches_the_api_as_the_client(world: TestClient) -> None:
    body = token(world, grant_type="client_credentials").json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert world.get("/auth/userinfo", headers=bearer(body["access_token"])).status_code == 401
    root = token(
        world,
        {"Authorization": ""},
        grant_type="client_credentials",
        client_id="root",
        client_secret="secret",
    )
    assert world.get("/User/ann", headers=bearer(root.json()["access_token"])).status_code == 200
