"""The edge layer: every answer (errors, 500s, preflights) carries the security and CORS headers, and
an exception is answered by the handler of its class or, failing that, as a 500 raised again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from fhirauth.errors import NotFound
from fhirauth.http import errors
from fhirauth.http.serving.route import EdgeRoute
from tests.api.test_cors import PREFLIGHT, SPA, app_with_web_client

SECURITY = {
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
CORS = {
    "access-control-allow-origin": SPA,
    "access-control-expose-headers": "ETag, Location, Last-Modified, Content-Location, WWW-Authenticate",
}


class HandlerBug(Exception):
    pass


async def _bug(request: Request) -> Response:
    raise RuntimeError("a bug")


async def _not_found(request: Request) -> Response:
    raise NotFound("No such thing")


async def _handler_bug(request: Request) -> Response:
    raise HandlerBug


async def _failing_handler(request: Request, exc: Exception) -> Response:
    raise RuntimeError("the handler has a bug too")


async def _varies(request: Request) -> Response:
    return Response("text", headers={"Vary": "Accept", "Access-Control-Allow-Origin": "*"})


async def _fails_midway(request: Request) -> Response:
    class Midway(Response):
        async def __call__(self, scope: object, receive: object, send: object) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
            raise RuntimeError("after the start")

    return Midway()


def _client(raise_server_exceptions: bool) -> Iterator[TestClient]:
    routes = [
        Route("/bug", _bug),
        Route("/not-found", _not_found),
        Route("/handler-bug", _handler_bug),
        Route("/varies", _varies),
        Route("/midway", _fails_midway),
        EdgeRoute("/direct/not-found", _not_found, methods=["GET"]),
        EdgeRoute("/direct/bug", _bug, methods=["GET"]),
    ]
    handlers = {**errors.handlers, HandlerBug: _failing_handler}
    app = app_with_web_client(routes, handlers)
    with TestClient(app, raise_server_exceptions=raise_server_exceptions) as client:
        yield client


@pytest.fixture
def edge() -> Iterator[TestClient]:
    yield from _client(raise_server_exceptions=False)


@pytest.fixture
def raising_edge() -> Iterator[TestClient]:
    yield from _client(raise_server_exceptions=True)


def _picked(response: object, names: dict[str, str]) -> dict[str, str]:
    headers = response.headers  # type: ignore[attr-defined]
    return {name: headers[name] for name in names if name in headers}


def test_an_unexpected_error_is_a_500_outcome_with_every_header(edge: TestClient) -> None:
    res = edge.get("/bug", headers={"Origin": SPA})
    assert res.status_code == 500
    assert res.json() == {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "fatal", "code": "exception", "diagnostics": "Internal server error"}],
    }
    assert _picked(res, SECURITY) == SECURITY
    assert _picked(res, CORS) == CORS
    assert res.headers["vary"] == "Origin"


def test_an_unexpected_error_is_raised_again_for_the_server_to_log(raising_edge: TestClient) -> None:
    with pytest.raises(RuntimeError, match="a bug"):
        raising_edge.get("/bug")


def test_a_handled_error_is_answered_by_its_handler_and_not_raised(raising_edge: TestClient) -> None:
    res = raising_edge.get("/not-found", headers={"Origin": SPA})
    assert res.status_code == 404
    assert res.json()["issue"] == [{"severity": "error", "code": "not-found", "diagnostics": "No such thing"}]
    assert _picked(res, SECURITY) == SECURITY
    assert _picked(res, CORS) == CORS


def test_an_unknown_route_is_a_404_outcome_with_the_security_headers(raising_edge: TestClient) -> None:
    res = raising_edge.get("/nowhere")
    assert res.status_code == 404
    assert res.json()["issue"][0]["code"] == "not-found"
    assert _picked(res, SECURITY) == SECURITY
    assert "access-control-allow-origin" not in res.headers


def test_a_failing_handler_turns_into_the_500(edge: TestClient) -> None:
    res = edge.get("/handler-bug")
    assert res.status_code == 500
    assert res.json()["issue"][0]["diagnostics"] == "Internal server error"
    assert _picked(res, SECURITY) == SECURITY


def test_an_error_after_the_response_started_is_raised_not_answered(raising_edge: TestClient) -> None:
    with pytest.raises(RuntimeError, match="after the start"):
        raising_edge.get("/midway")


def test_a_routes_own_vary_and_origin_headers_are_amended_not_repeated(edge: TestClient) -> None:
    res = edge.get("/varies", headers={"Origin": SPA})
    assert res.headers.get_list("vary") == ["Accept, Origin"]
    assert res.headers.get_list("access-control-allow-origin") == [SPA]
    unknown = edge.get("/varies", headers={"Origin": "http://elsewhere.example"})
    assert unknown.headers.get_list("vary") == ["Accept, Origin"]
    assert unknown.headers.get_list("access-control-allow-origin") == ["*"]


def test_a_preflight_gets_the_security_headers_but_no_exposed_headers(edge: TestClient) -> None:
    res = edge.options("/bug", headers={"Origin": SPA, **PREFLIGHT})
    assert res.status_code == 204
    assert _picked(res, SECURITY) == SECURITY
    assert "access-control-expose-headers" not in res.headers
    refused = edge.options("/bug", headers={"Origin": "http://elsewhere.example", **PREFLIGHT})
    assert refused.status_code == 403
    assert refused.text == "Origin not allowed"
    assert _picked(refused, SECURITY) == SECURITY


def test_an_edge_routes_errors_are_answered_like_any_other(edge: TestClient) -> None:
    missing = edge.get("/direct/not-found", headers={"Origin": SPA})
    assert missing.status_code == 404
    assert missing.json()["issue"][0]["diagnostics"] == "No such thing"
    assert _picked(missing, CORS) == CORS
    bug = edge.get("/direct/bug")
    assert bug.status_code == 500
    assert bug.json()["issue"][0]["diagnostics"] == "Internal server error"
    assert _picked(bug, SECURITY) == SECURITY
    wrong_method = edge.post("/direct/not-found")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] in ("GET, HEAD", "HEAD, GET")
    assert wrong_method.json()["issue"][0]["code"] == "not-supported"
