"""FixedPathRouter answers every request exactly as Starlette's Router over the same table would."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.testclient import TestClient

from fhirauth.http.serving.router import FixedPathRouter


def answer(name: str):  # type: ignore[no-untyped-def]
    async def endpoint(request: Request) -> Response:
        # What Starlette's routing leaves in the scope for the endpoint, FixedPathRouter leaves too.
        scope = request.scope
        return PlainTextResponse(
            f"{name} {dict(request.path_params)} route={scope['route'].path}"
            f" endpoint={scope['endpoint'] is endpoint} router={scope['router'] is scope['app'].router}"
            f" keys={sorted(scope)}"
        )

    return endpoint


TABLE = [
    Route("/{kind:str}", answer("pattern-first"), methods=["PUT"]),
    Route("/token", answer("token"), methods=["POST"]),
    Route("/token", answer("token-get"), methods=["GET"]),
    Route("/{kind:str}", answer("pattern"), methods=["DELETE"]),
    Route("/users/{id}", answer("user"), methods=["GET"]),
    Route("/health", answer("health"), methods=["GET"]),
    Route("/slash/", answer("slash"), methods=["GET"]),
    Mount("/static", routes=[Route("/file", answer("file"))]),
]

REQUESTS = [
    ("POST", "/token"),
    ("GET", "/token"),
    ("PUT", "/token"),  # a pattern route listed before the fixed one takes it
    ("DELETE", "/token"),  # no fixed route takes DELETE; the pattern after it does
    ("PATCH", "/token"),  # nobody: 405 with Starlette's Allow header
    ("GET", "/health"),
    ("POST", "/health"),
    ("GET", "/users/7"),
    ("GET", "/nowhere/at/all"),
    ("GET", "/slash"),  # redirected to /slash/
    ("GET", "/static/file"),
]


# Behind a proxy that mounts the app under a prefix: the prefix is no part of the route's path.
ROOT_PATH_REQUESTS = [
    ("POST", "/api/token"),
    ("GET", "/api/health"),
    ("GET", "/api/users/7"),
    ("GET", "/slash/"),  # under root_path /slash this is "/": no route, though "/slash/" is one
    ("GET", "/elsewhere/health"),  # a path outside the root path is routed whole
]


def client(router: Router, root_path: str = "") -> TestClient:
    app = Starlette()
    app.router = router
    return TestClient(app, follow_redirects=False, root_path=root_path)


def assert_same_answer(method: str, path: str, root_path: str = "") -> None:
    expected = client(Router(TABLE), root_path).request(method, path)
    got = client(FixedPathRouter(TABLE), root_path).request(method, path)
    assert (got.status_code, got.text, got.headers.get("allow"), got.headers.get("location")) == (
        expected.status_code,
        expected.text,
        expected.headers.get("allow"),
        expected.headers.get("location"),
    )


@pytest.mark.parametrize(("method", "path"), REQUESTS)
def test_fixed_path_router_answers_as_starlettes_router(method: str, path: str) -> None:
    assert_same_answer(method, path)


@pytest.mark.parametrize(("method", "path"), ROOT_PATH_REQUESTS)
def test_under_a_root_path_too(method: str, path: str) -> None:
    root_path = "/slash" if path == "/slash/" else "/api"
    assert_same_answer(method, path, root_path)


def test_a_fixed_path_tries_only_the_routes_that_can_match_it() -> None:
    router = FixedPathRouter(TABLE)
    candidates = {
        path: [(getattr(r, "path", None), exact) for r, exact in routes]
        for path, routes in router._candidates.items()
    }
    # A route of exactly that path is told apart by the method alone; a pattern still runs.
    assert candidates == {
        "/token": [("/{kind:str}", False), ("/token", True), ("/token", True), ("/{kind:str}", False)],
        "/health": [("/{kind:str}", False), ("/{kind:str}", False), ("/health", True)],
        "/slash/": [("/slash/", True)],
    }
