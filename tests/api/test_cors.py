"""CORS: origins of registered redirect URIs and allowed_origins; preflight; headers on every answer."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.testclient import TestClient

from fhirauth.app import INDEXES, build_services
from fhirauth.auth.origins import CACHE_SECONDS
from fhirauth.clock import ManualClock
from fhirauth.http import errors
from fhirauth.http.serving.application import App
from fhirauth.services import Services
from fhirauth.storage.backends import open_storage
from tests.api.conftest import NO_AUTH, settings_for

SPA = "http://localhost:3000"
PREFLIGHT = {
    "Access-Control-Request-Method": "GET",
    "Access-Control-Request-Headers": "authorization",
    **NO_AUTH,
}
EXPECTED_PREFLIGHT = {
    "access-control-allow-origin": SPA,
    "access-control-allow-methods": "GET, POST, PUT, PATCH, DELETE",
    "access-control-allow-headers": "Authorization, Content-Type, Cache-Control",
    "access-control-max-age": "600",
    "vary": "Origin",
}


def cors_headers(response: object) -> dict[str, str]:
    headers = response.headers  # type: ignore[attr-defined]
    return {k: v for k, v in headers.items() if k.startswith("access-control-") or k == "vary"}


def web_client(**extra: object) -> dict[str, object]:
    return {
        "resourceType": "Client",
        "first_party": True,
        "grant_types": ["implicit"],
        "auth": {"implicit": {"redirect_uri": f"{SPA}/auth"}},
        **extra,
    }


def test_preflight_from_a_redirect_uri_origin(api: TestClient) -> None:
    assert api.put("/Client/web", json=web_client()).status_code == 201
    res = api.options("/User", headers={"Origin": SPA, **PREFLIGHT})
    assert res.status_code == 204
    assert res.content == b""
    assert cors_headers(res) == EXPECTED_PREFLIGHT
    assert "access-control-allow-credentials" not in res.headers


def test_preflight_for_an_auth_endpoint_path_too(api: TestClient) -> None:
    api.put("/Client/web", json=web_client())
    res = api.options("/auth/userinfo", headers={"Origin": SPA, **PREFLIGHT})
    assert res.status_code == 204
    assert cors_headers(res) == EXPECTED_PREFLIGHT


def test_preflight_from_allowed_origins(api: TestClient) -> None:
    client = {
        "resourceType": "Client",
        "grant_types": ["basic"],
        "allowed_origins": ["https://admin.example.org"],
    }
    api.put("/Client/admin", json={**client, "secret": "s"})
    res = api.options("/User", headers={"Origin": "https://admin.example.org", **PREFLIGHT})
    assert res.status_code == 204
    assert res.headers["access-control-allow-origin"] == "https://admin.example.org"


def test_unknown_origin_gets_no_cors_headers(api: TestClient) -> None:
    api.put("/Client/web", json=web_client())
    for origin in ("http://localhost:3001", "https://localhost:3000", "null", "http://evil.example"):
        res = api.options("/User", headers={"Origin": origin, **PREFLIGHT})
        assert res.status_code == 403
        assert cors_headers(res) == {"vary": "Origin"}
        res = api.get("/User", headers={"Origin": origin})
        assert res.status_code == 200
        assert cors_headers(res) == {"vary": "Origin"}


def test_an_inactive_clients_origins_are_not_allowed(api: TestClient) -> None:
    api.put("/Client/web", json=web_client(active=False))
    assert api.options("/User", headers={"Origin": SPA, **PREFLIGHT}).status_code == 403


def test_errors_to_an_allowed_origin_carry_the_headers(api: TestClient) -> None:
    api.put("/Client/web", json=web_client())
    expected = {
        "access-control-allow-origin": SPA,
        "access-control-expose-headers": "ETag, Location, Last-Modified, Content-Location, WWW-Authenticate",
        "vary": "Origin",
    }
    unauthenticated = api.get("/User", headers={"Origin": SPA, **NO_AUTH})
    assert unauthenticated.status_code == 401
    assert cors_headers(unauthenticated) == expected
    api.put("/Client/api", json={"resourceType": "Client", "secret": "s", "grant_types": ["basic"]})
    forbidden = api.get("/User", headers={"Origin": SPA, "Authorization": "Basic YXBpOnM="})
    assert forbidden.status_code == 403
    assert cors_headers(forbidden) == expected
    missing = api.get("/User/nobody", headers={"Origin": SPA})
    assert missing.status_code == 404
    assert cors_headers(missing) == expected
    unknown_route = api.get("/no/such/route/here", headers={"Origin": SPA})
    assert unknown_route.status_code == 404
    assert cors_headers(unknown_route) == expected


def test_a_successful_answer_exposes_etag_to_the_page(api: TestClient) -> None:
    api.put("/Client/web", json=web_client())
    res = api.get("/Client/web", headers={"Origin": SPA})
    assert res.status_code == 200
    assert res.headers["access-control-allow-origin"] == SPA
    assert "ETag" in res.headers["access-control-expose-headers"]


def test_requests_without_origin_are_left_alone(api: TestClient) -> None:
    api.put("/Client/web", json=web_client())
    res = api.get("/User")
    assert cors_headers(res) == {}
    # OPTIONS without Origin is not a preflight: the routes answer it (no OPTIONS route: 405).
    assert api.options("/User").status_code == 405


def test_a_new_client_is_allowed_at_once(api: TestClient) -> None:
    assert api.options("/User", headers={"Origin": SPA, **PREFLIGHT}).status_code == 403
    api.put("/Client/web", json=web_client())
    assert api.options("/User", headers={"Origin": SPA, **PREFLIGHT}).status_code == 204
    api.put("/Client/web", json=web_client(auth={"implicit": {"redirect_uri": "http://localhost:4000/cb"}}))
    assert api.options("/User", headers={"Origin": SPA, **PREFLIGHT}).status_code == 403
    assert api.options("/User", headers={"Origin": "http://localhost:4000", **PREFLIGHT}).status_code == 204


def test_a_client_added_by_another_worker_is_allowed_within_two_seconds(
    api: TestClient, clock: ManualClock
) -> None:
    assert api.options("/User", headers={"Origin": SPA, **PREFLIGHT}).status_code == 403
    services: Services = api.app.state.services  # type: ignore[attr-defined]
    other_worker = build_services(services.settings, services.storage, clock)
    api.portal.call(other_worker.resources.create, "Client", web_client())  # type: ignore[union-attr]
    clock.advance(CACHE_SECONDS - 0.001)
    assert api.options("/User", headers={"Origin": SPA, **PREFLIGHT}).status_code == 403
    clock.advance(0.001)
    assert api.options("/User", headers={"Origin": SPA, **PREFLIGHT}).status_code == 204


async def _boom(request: Request) -> Response:
    raise RuntimeError("a bug")


def app_with_web_client(routes: list[BaseRoute], handlers: Mapping[Any, Any] = errors.handlers) -> App:
    """The real App (its edge, the given error handlers) over `routes`, on a fresh in-memory store
    holding the web Client, whose redirect URI makes SPA an allowed origin."""
    clock = ManualClock()
    settings = settings_for("sqlite://:memory:")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        storage = open_storage(settings.storage, clock)
        await storage.start(INDEXES)
        app.state.services = build_services(settings, storage, clock)
        await app.state.services.resources.create("Client", web_client())
        yield
        await storage.close()

    return App(routes=routes, exception_handlers=handlers, lifespan=lifespan)


@pytest.fixture
def failing_app() -> Iterator[TestClient]:
    """The real App with a route that fails unexpectedly."""
    app = app_with_web_client([Route("/boom", _boom)])
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_a_500_to_an_allowed_origin_carries_the_headers(failing_app: TestClient) -> None:
    res = failing_app.get("/boom", headers={"Origin": SPA})
    assert res.status_code == 500
    assert res.json()["issue"][0]["diagnostics"] == "Internal server error"
    assert res.headers["access-control-allow-origin"] == SPA
    assert res.headers["vary"] == "Origin"
    assert (
        "access-control-allow-origin"
        not in failing_app.get("/boom", headers={"Origin": "http://x.example"}).headers
    )


def test_a_single_page_app_calls_userinfo_and_the_token_endpoint(api: TestClient) -> None:
    spa = web_client(grant_types=["implicit", "password"])
    api.put("/Client/web", json=spa)
    api.put(
        "/User/ann", json={"resourceType": "User", "email": "ann@example.org", "password": "correct horse"}
    )
    form = {"grant_type": "password", "client_id": "web", "username": "ann@example.org"}
    refused = api.post("/auth/token", data={**form, "password": "wrong"}, headers={"Origin": SPA, **NO_AUTH})
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    assert refused.headers["access-control-allow-origin"] == SPA
    granted = api.post(
        "/auth/token", data={**form, "password": "correct horse"}, headers={"Origin": SPA, **NO_AUTH}
    )
    assert granted.headers["access-control-allow-origin"] == SPA
    token = granted.json()["access_token"]
    preflight = api.options("/auth/userinfo", headers={"Origin": SPA, **PREFLIGHT})
    assert preflight.status_code == 204
    userinfo = api.get("/auth/userinfo", headers={"Origin": SPA, "Authorization": f"Bearer {token}"})
    assert userinfo.status_code == 200
    assert userinfo.json()["id"] == "ann"
    assert userinfo.headers["access-control-allow-origin"] == SPA
