"""API authentication at the resource-server stage: root Basic, clients with `basic`, 401 vs 403."""

from __future__ import annotations

import base64

from starlette.testclient import TestClient

from tests.api.conftest import NO_AUTH


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def test_no_credentials_is_401_with_challenge(api: TestClient) -> None:
    res = api.get("/User", headers=NO_AUTH)
    assert res.status_code == 401
    assert res.headers["www-authenticate"].startswith("Basic")
    assert res.json()["issue"][0]["code"] == "login"


def test_wrong_root_secret_is_401(api: TestClient) -> None:
    res = api.get("/User", headers=basic("root", "wrong"))
    assert res.status_code == 401
    assert "www-authenticate" in res.headers
    assert api.get("/User", headers={"Authorization": "Basic !!!"}).status_code == 401
    assert api.get("/User", headers={"Authorization": "Digest abc"}).status_code == 401


def test_basic_client_without_policies_is_403(api: TestClient) -> None:
    api.put("/Client/api", json={"resourceType": "Client", "secret": "s3cret", "grant_types": ["basic"]})
    assert api.get("/User", headers=basic("api", "s3cret")).status_code == 403
    assert api.get("/User", headers=basic("api", "wrong")).status_code == 401


def test_client_without_basic_grant_cannot_use_basic(api: TestClient) -> None:
    api.put("/Client/spa", json={"resourceType": "Client", "secret": "s3cret", "grant_types": ["password"]})
    assert api.get("/User", headers=basic("spa", "s3cret")).status_code == 401


def test_nothing_is_written_without_credentials(api: TestClient) -> None:
    res = api.post("/User", json={"resourceType": "User", "email": "x@example.org"}, headers=NO_AUTH)
    assert res.status_code == 401
    assert api.get("/User").json()["total"] == 0
