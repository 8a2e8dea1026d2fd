"""Whose tokens a client may introspect (RFC 7662 §2.1) and revoke (RFC 7009 §2.1), on both backends.

A client sees its own tokens; another client's answer `{"active": false}`, exactly as an unknown token
does, unless the caller is the root client or its `introspect_clients` names the token's client.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.api.oauth_support import SECRET, basic, bearer, password_tokens, put, setup_world, token

RESOURCE_SERVER = basic("rs", "rs-secret")


@pytest.fixture
def world(api: TestClient) -> TestClient:
    setup_world(api)
    return api


def resource_server(api: TestClient, **fields: Any) -> None:
    put(api, "Client", "rs", secret="rs-secret", grant_types=["client_credentials"], **fields)


def introspect(api: TestClient, value: str, headers: dict[str, str], **extra: str) -> Any:
    response = api.post("/auth/introspect", data={"token": value, **extra}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_client_introspects_its_own_tokens(world: TestClient) -> None:
    tokens = password_tokens(world)
    assert introspect(world, tokens["access_token"], basic("app", SECRET))["active"] is True
    assert introspect(world, tokens["refresh_token"], basic("app", SECRET))["active"] is True


def test_another_clients_tokens_are_inactive(world: TestClient) -> None:
    resource_server(world)
    tokens = password_tokens(world)
    assert introspect(world, tokens["access_token"], RESOURCE_SERVER) == {"active": False}
    assert introspect(world, tokens["refresh_token"], RESOURCE_SERVER) == {"active": False}
    hinted = introspect(world, tokens["refresh_token"], RESOURCE_SERVER, token_type_hint="refresh_token")
    assert hinted == {"active": False}


def test_a_client_credentials_token_is_its_clients_alone(world: TestClient) -> None:
    resource_server(world)
    own = token(world, {}, grant_type="client_credentials", client_id="rs", client_secret="rs-secret")
    app_token = token(world, grant_type="client_credentials").json()["access_token"]
    assert introspect(world, own.json()["access_token"], RESOURCE_SERVER)["client_id"] == "rs"
    assert introspect(world, app_token, RESOURCE_SERVER) == {"active": False}


def test_root_introspects_every_token(world: TestClient) -> None:
    tokens = password_tokens(world)
    claims = introspect(world, tokens["access_token"], basic("root", "secret"))
    assert (claims["active"], claims["client_id"], claims["sub"]) == (True, "app", "ann")


def test_introspect_clients_names_the_clients_whose_tokens_it_sees(world: TestClient) -> None:
    resource_server(world, introspect_clients=["app"])
    tokens = password_tokens(world)
    claims = introspect(world, tokens["access_token"], RESOURCE_SERVER)
    assert (claims["active"], claims["client_id"], claims["sub"]) == (True, "app", "ann")
    assert introspect(world, tokens["refresh_token"], RESOURCE_SERVER)["active"] is True


def test_introspect_clients_that_names_others_does_not_reach_this_one(world: TestClient) -> None:
    resource_server(world, introspect_clients=["billing", "APP"])
    tokens = password_tokens(world)
    assert introspect(world, tokens["access_token"], RESOURCE_SERVER) == {"active": False}


def test_introspect_clients_star_sees_every_clients_tokens(world: TestClient) -> None:
    resource_server(world, introspect_clients=["*"])
    tokens = password_tokens(world)
    claims = introspect(world, tokens["access_token"], RESOURCE_SERVER)
    assert (claims["active"], claims["client_id"], claims["sub"]) == (True, "app", "ann")


def test_an_allowed_client_still_sees_revoked_tokens_as_inactive(world: TestClient) -> None:
    resource_server(world, introspect_clients=["*"])
    tokens = password_tokens(world)
    world.post("/auth/revoke", data={"token": tokens["access_token"]}, headers=basic("app", SECRET))
    assert introspect(world, tokens["access_token"], RESOURCE_SERVER) == {"active": False}


@pytest.mark.parametrize("value", ["app", [""], [3], {"app": True}])
def test_introspect_clients_must_be_a_list_of_client_ids(world: TestClient, value: Any) -> None:
    response = world.put(
        "/Client/rs",
        json={"resourceType": "Client", "secret": "rs-secret", "introspect_clients": value},
    )
    assert response.status_code == 422, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert world.get("/Client/rs").status_code == 404


# Revocation: only the token's own client (or root) ends it; `introspect_clients` grants no revocation.


def test_another_client_cannot_revoke_a_refresh_token(world: TestClient) -> None:
    resource_server(world, introspect_clients=["*"])
    tokens = password_tokens(world)
    response = world.post(
        "/auth/revoke",
        data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        headers=RESOURCE_SERVER,
    )
    assert (response.status_code, response.json()) == (200, {})
    assert world.get("/auth/userinfo", headers=bearer(tokens["access_token"])).status_code == 200
    assert introspect(world, tokens["refresh_token"], basic("app", SECRET))["active"] is True


def test_an_introspecting_client_cannot_revoke_an_access_token(world: TestClient) -> None:
    resource_server(world, introspect_clients=["app"])
    tokens = password_tokens(world)
    response = world.post("/auth/revoke", data={"token": tokens["access_token"]}, headers=RESOURCE_SERVER)
    assert (response.status_code, response.json()) == (200, {})
    assert world.get("/auth/userinfo", headers=bearer(tokens["access_token"])).status_code == 200
