"""CORS on the discovery documents: any page may read them (SMART App Launch 2.2 §CORS), without
credentials; every other route keeps the registered-origins rule (tests/api/test_cors.py)."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.api.conftest import NO_AUTH
from tests.api.test_cors import PREFLIGHT, SPA, cors_headers, web_client

STRANGER = "https://inferno.example.org"
DISCOVERY = (
    "/.well-known/smart-configuration",
    "/metadata",
    "/.well-known/openid-configuration",
    "/.well-known/oauth-authorization-server",
    "/.well-known/jwks.json",
)
ANY_ORIGIN = {"access-control-allow-origin": "*"}


@pytest.mark.parametrize("path", DISCOVERY)
def test_any_origin_reads_a_discovery_document(api: TestClient, path: str) -> None:
    api.put("/Client/web", json=web_client())
    for origin in (STRANGER, SPA, "null"):
        response = api.get(path, headers={"Origin": origin, **NO_AUTH})
        assert response.status_code == 200
        assert cors_headers(response) == ANY_ORIGIN
    assert (
        api.head(path, headers={"Origin": STRANGER, **NO_AUTH}).headers["access-control-allow-origin"] == "*"
    )
    # The same answer for a request without Origin, so a cache holding either serves every page.
    assert cors_headers(api.get(path, headers=NO_AUTH)) == ANY_ORIGIN


@pytest.mark.parametrize("path", DISCOVERY)
def test_any_origin_gets_a_preflight_for_reading_a_discovery_document(api: TestClient, path: str) -> None:
    response = api.options(path, headers={"Origin": STRANGER, **PREFLIGHT})
    assert response.status_code == 204
    assert response.content == b""
    assert cors_headers(response) == {
        "access-control-allow-origin": "*",
        "access-control-allow-methods": "GET",
        "access-control-allow-headers": "Authorization, Content-Type, Cache-Control",
        "access-control-max-age": "600",
    }
    assert "access-control-allow-credentials" not in response.headers
    assert response.headers["x-content-type-options"] == "nosniff"


def test_other_methods_on_a_discovery_path_keep_the_registered_origins_rule(api: TestClient) -> None:
    writing = {**PREFLIGHT, "Access-Control-Request-Method": "POST"}
    refused = api.options("/metadata", headers={"Origin": STRANGER, **writing})
    assert refused.status_code == 403
    assert cors_headers(refused) == {"vary": "Origin"}
    posted = api.post("/.well-known/smart-configuration", headers={"Origin": STRANGER, **NO_AUTH})
    assert posted.status_code == 405
    assert cors_headers(posted) == {"vary": "Origin"}


def test_an_unregistered_origin_still_gets_nothing_from_the_api_and_the_token_endpoint(
    api: TestClient,
) -> None:
    api.put("/Client/web", json=web_client())
    for path in ("/User", "/auth/token", "/auth/userinfo", "/.well-known/smart-configuration/x"):
        preflight = api.options(path, headers={"Origin": STRANGER, **PREFLIGHT})
        assert preflight.status_code == 403
        assert cors_headers(preflight) == {"vary": "Origin"}
    assert cors_headers(api.get("/User", headers={"Origin": STRANGER})) == {"vary": "Origin"}
    token = api.post("/auth/token", data={"grant_type": "password"}, headers={"Origin": STRANGER, **NO_AUTH})
    assert token.status_code == 401
    assert token.json()["error"] == "invalid_client"
    assert cors_headers(token) == {"vary": "Origin"}
    # The registered origin keeps its own grant there.
    assert api.get("/User", headers={"Origin": SPA}).headers["access-control-allow-origin"] == SPA
