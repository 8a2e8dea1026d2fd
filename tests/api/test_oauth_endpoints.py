"""Introspection (RFC 7662), revocation (RFC 7009), userinfo, DELETE /Session, discovery and JWKS."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from fhirauth.clock import ManualClock
from tests.api.oauth_support import (
    NO_STORE,
    SECRET,
    basic,
    bearer,
    error_of,
    password_tokens,
    put,
    services,
    setup_world,
    token,
)

NO_AUTH = {"Authorization": ""}
START = 1767225600  # the ManualClock's 2026-01-01T00:00:00Z


@pytest.fixture
def world(api: TestClient) -> TestClient:
    setup_world(api)
    return api


def introspect(api: TestClient, value: str, headers: dict[str, str] | None = None, **extra: str) -> Any:
    response = api.post(
        "/auth/introspect", data={"token": value, **extra}, headers=headers or basic("app", SECRET)
    )
    assert response.status_code == 200, response.text
    assert (response.headers["cache-control"], response.headers["pragma"]) == tuple(NO_STORE.values())
    return response.json()


def revoke(api: TestClient, value: str, headers: dict[str, str] | None = None, **extra: str) -> int:
    response = api.post(
        "/auth/revoke", data={"token": value, **extra}, headers=headers or basic("app", SECRET)
    )
    return response.status_code


# Introspection


def test_introspection_of_an_active_user_token(world: TestClient) -> None:
    body = password_tokens(world, scope="openid")
    assert introspect(world, body["access_token"]) == {
        "active": True,
        "client_id": "app",
        "username": "ann@example.org",
        "sub": "ann",
        "scope": "openid",
        "exp": START + 3600,
        "iat": START,
        "token_type": "Bearer",
        "iss": "http://testserver",
        "aud": "app",
        # A password grant with openid is a sign-in of its own (with its ID token): a password alone.
        "acr": "urn:fhirauth:acr:pwd",
        "amr": ["pwd"],
    }


def test_introspection_of_a_refresh_token(world: TestClient) -> None:
    body = password_tokens(world)
    claims = introspect(world, body["refresh_token"], token_type_hint="refresh_token")
    assert claims == {
        "active": True,
        "client_id": "app",
        "username": "ann@example.org",
        "sub": "ann",
        "iat": START,
        "token_type": "refresh_token",
        "iss": "http://testserver",
        "aud": "app",
    }


def test_introspection_of_a_client_credentials_jwt(world: TestClient) -> None:
    setup_world(world, auth={"client_credentials": {"token_format": "jwt", "access_token_expiration": 30}})
    value = token(world, grant_type="client_credentials", audience="https://api.example").json()[
        "access_token"
    ]
    claims = introspect(world, value, headers=basic("root", "secret"))
    assert world.portal is not None
    session = world.portal.call(services(world).sessions.find_by_access_token, value)
    assert claims.pop("jti") == session["jti"]
    assert claims == {
        "active": True,
        "client_id": "app",
        "sub": "app",
        "exp": START + 30,
        "iat": START,
        "token_type": "Bearer",
        "iss": "http://testserver",
        "aud": "https://api.example",
    }


def test_unknown_expired_and_revoked_tokens_are_just_inactive(world: TestClient, clock: ManualClock) -> None:
    assert introspect(world, "never-issued") == {"active": False}
    body = password_tokens(world)
    assert revoke(world, body["access_token"]) == 200
    assert introspect(world, body["access_token"]) == {"active": False}
    assert introspect(world, body["refresh_token"]) == {"active": False}
    other = password_tokens(world)
    clock.advance(3600)
    assert introspect(world, other["access_token"]) == {"active": False}
    assert introspect(world, other["refresh_token"])["active"] is True


def test_tokens_of_an_inactive_user_are_inactive(world: TestClient) -> None:
    body = password_tokens(world)
    world.patch("/User/ann", json={"inactive": True})
    assert introspect(world, body["access_token"]) == {"active": False}


def test_introspection_needs_client_authentication(world: TestClient) -> None:
    body = password_tokens(world)
    anonymous = world.post("/auth/introspect", data={"token": body["access_token"]}, headers=NO_AUTH)
    assert error_of(anonymous) == (401, "invalid_client")
    assert "www-authenticate" not in anonymous.headers
    wrong = world.post("/auth/introspect", data={"token": body["access_token"]}, headers=basic("app", "nope"))
    assert error_of(wrong) == (401, "invalid_client")
    assert wrong.headers["www-authenticate"] == 'Basic realm="fhirauth"'
    in_body = world.post(
        "/auth/introspect",
        data={"token": body["access_token"], "client_id": "app", "client_secret": SECRET},
        headers=NO_AUTH,
    )
    assert in_body.json()["active"] is True


def test_public_clients_cannot_introspect(world: TestClient) -> None:
    put(world, "Client", "spa", grant_types=["code"])
    response = world.post("/auth/introspect", data={"token": "x", "client_id": "spa"}, headers=NO_AUTH)
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "This endpoint needs client credentials",
    }


def test_introspection_needs_the_token(world: TestClient) -> None:
    response = world.post("/auth/introspect", data={}, headers=basic("app", SECRET))
    assert response.json() == {"error": "invalid_request", "error_description": "Missing 'token'"}


# Revocation


def test_revoking_a_refresh_token_ends_its_session(world: TestClient) -> None:
    body = password_tokens(world)
    assert revoke(world, body["refresh_token"], token_type_hint="refresh_token") == 200
    assert world.get("/auth/userinfo", headers=bearer(body["access_token"])).status_code == 401
    refreshed = token(world, grant_type="refresh_token", refresh_token=body["refresh_token"])
    assert refreshed.json() == {"error": "invalid_grant", "error_description": "Refresh token was revoked"}


def test_revoking_unknown_tokens_and_hints_answers_200(world: TestClient) -> None:
    assert revoke(world, "never-issued") == 200
    assert revoke(world, "never-issued", token_type_hint="id_token") == 200


def test_a_client_cannot_revoke_another_clients_token(world: TestClient) -> None:
    body = password_tokens(world)
    put(world, "Client", "other", secret="other-secret", grant_types=["client_credentials"])
    assert revoke(world, body["access_token"], headers=basic("other", "other-secret")) == 200
    assert world.get("/auth/userinfo", headers=bearer(body["access_token"])).status_code == 200


def test_root_may_revoke_any_token(world: TestClient) -> None:
    body = password_tokens(world)
    assert revoke(world, body["access_token"], headers=basic("root", "secret")) == 200
    assert world.get("/auth/userinfo", headers=bearer(body["access_token"])).status_code == 401


def test_revocation_needs_client_authentication(world: TestClient) -> None:
    body = password_tokens(world)
    response = world.post("/auth/revoke", data={"token": body["access_token"]}, headers=NO_AUTH)
    assert error_of(response) == (401, "invalid_client")
    assert world.get("/auth/userinfo", headers=bearer(body["access_token"])).status_code == 200


# Userinfo


def test_userinfo_never_shows_secrets(world: TestClient) -> None:
    put(
        world,
        "User",
        "ann",
        email="ann@example.org",
        password="correct horse battery staple",
        twoFactor={"enabled": True, "secretKey": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "transport": "email"},
    )
    session_token = _browser_cookie(world, "ann")
    response = world.get("/auth/userinfo", headers={**NO_AUTH, "Cookie": f"asid={session_token}"})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    user = response.json()
    assert user["twoFactor"] == {"enabled": True, "transport": "email"}
    assert "password" not in user
    assert "secretKey" not in response.text and "argon2" not in response.text


def _browser_cookie(api: TestClient, user_id: str) -> str:
    app_services = services(api)
    assert api.portal is not None

    async def sign_in() -> str:
        user = await app_services.resources.read("User", user_id)
        cookie, _ = await app_services.sessions.create_browser_session(user, max_age=600, ip=None)
        return cookie

    return api.portal.call(sign_in)


def test_userinfo_with_a_bearer_token(world: TestClient) -> None:
    body = password_tokens(world)
    response = world.get("/auth/userinfo", headers=bearer(body["access_token"]))
    assert response.json() == body["userinfo"]


def test_userinfo_without_a_user_is_401(world: TestClient) -> None:
    anonymous = world.get("/auth/userinfo", headers=NO_AUTH)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="fhirauth"'
    assert world.get("/auth/userinfo").status_code == 401  # root's Basic credentials are no session
    client_token = token(world, grant_type="client_credentials").json()["access_token"]
    assert world.get("/auth/userinfo", headers=bearer(client_token)).status_code == 401
    unknown = world.get("/auth/userinfo", headers={**NO_AUTH, "Cookie": "asid=forged"})
    assert unknown.status_code == 401


# DELETE /Session


def test_delete_session_ends_the_callers_session(world: TestClient) -> None:
    body = password_tokens(world)
    other = password_tokens(world)
    response = world.delete("/Session", headers=bearer(body["access_token"]))
    assert response.status_code == 204
    assert world.get("/auth/userinfo", headers=bearer(body["access_token"])).status_code == 401
    assert world.get("/auth/userinfo", headers=bearer(other["access_token"])).status_code == 200
    assert world.delete("/Session", headers=bearer(body["access_token"])).status_code == 401


def test_delete_session_without_a_token_is_401(world: TestClient) -> None:
    assert world.delete("/Session", headers=NO_AUTH).status_code == 401
    assert world.delete("/Session").status_code == 401


def test_session_search_still_reaches_the_resource_api(world: TestClient) -> None:
    password_tokens(world)
    bundle = world.get("/Session").json()
    assert bundle["total"] == 1
    assert "access_token" not in bundle["entry"][0]["resource"]


# Discovery and keys


@pytest.mark.parametrize(
    "path", ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"]
)
def test_discovery_names_the_issuer_and_endpoints(api: TestClient, path: str) -> None:
    body = api.get(path, headers=NO_AUTH).json()
    assert body["issuer"] == "http://testserver"
    assert body["token_endpoint"] == "http://testserver/auth/token"
    assert body["authorization_endpoint"] == "http://testserver/auth/authorize"
    assert body["jwks_uri"] == "http://testserver/.well-known/jwks.json"
    assert body["introspection_endpoint"] == "http://testserver/auth/introspect"
    assert body["revocation_endpoint"] == "http://testserver/auth/revoke"
    assert body["userinfo_endpoint"] == "http://testserver/auth/userinfo"
    assert body["response_types_supported"] == [
        "code",
        "token",
        "id_token",
        "id_token token",
        "code id_token",
        "code token",
        "code id_token token",
    ]
    assert body["grant_types_supported"] == [
        "authorization_code",
        "password",
        "client_credentials",
        "refresh_token",
        "implicit",
    ]
    assert body["code_challenge_methods_supported"] == ["S256", "plain"]


def test_jwks_has_public_keys_only(api: TestClient) -> None:
    response = api.get("/.well-known/jwks.json", headers=NO_AUTH)
    # One key per signing algorithm: RS256, ES256, EdDSA (Ed25519).
    assert [set(key) for key in response.json()["keys"]] == [
        {"kty", "n", "e", "kid", "use", "alg"},
        {"kty", "crv", "x", "y", "kid", "use", "alg"},
        {"kty", "crv", "x", "kid", "use", "alg"},
    ]
    assert response.headers["cache-control"] == "max-age=300"
