"""Instructions per request with and without each piece of fhirauth/http/serving/ that leans on a
framework's internals, in-process through the whole ASGI app: `VARIANT` replaces one piece with what
Starlette's public API does, so each piece's saving can be weighed against a whole request.

    valgrind --tool=callgrind --dump-before=getppid --callgrind-out-file=/tmp/cg.%p \\
        .venv/bin/python bench/serving_pieces.py VARIANT
    .venv/bin/python bench/serving_pieces.py --report /tmp/cg.PID

Variants: `as-is`, `starlette-router` (Starlette's Router instead of FixedPathRouter),
`starlette-stack` (the edge as a middleware inside Starlette's own error and exception middleware),
`route-matches` (FixedPathRouter, but every candidate through `Route.matches`), `request-response`
(EdgeRoute's endpoints through Starlette's `request_response` wrapper), `stream-body` (bodies read
through `Request.stream()`). Each kind of request runs WARM_UP times, then MEASURED times between two
`os.getppid()` calls: with `--dump-before=getppid`, callgrind writes one file per phase, and
`--report` divides each measured phase's instructions by MEASURED.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson

from fhirauth.errors import PayloadTooLarge
from fhirauth.http import bodies
from fhirauth.http.serving import body, route

WARM_UP = 30
MEASURED = 300
KINDS = ("introspection", "client_credentials", "GET /User/{id}", "2FA check")


async def _read_bytes_by_stream(request: Any, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _plain_route_init(self: Any, path: str, endpoint: Any, *, methods: list[str]) -> None:
    route.Route.__init__(self, path, endpoint, methods=methods)


def _apply(variant: str) -> None:
    """Before the route tables are built (at import): they hold the route class and `read_bytes`."""
    if variant == "stream-body":
        body.read_bytes = bodies.read_bytes = _read_bytes_by_stream
    elif variant == "request-response":
        route.EdgeRoute.__init__ = _plain_route_init  # type: ignore[method-assign]
    elif variant == "starlette-router":
        from starlette.routing import Router

        from fhirauth.http.serving import application

        application.FixedPathRouter = Router  # type: ignore[misc,assignment]
    elif variant == "starlette-stack":
        from starlette.applications import Starlette
        from starlette.middleware import Middleware

        from fhirauth.http.serving import application

        def build_middleware_stack(self: Any) -> Any:
            self.user_middleware = [Middleware(application.Edge, self.exception_handlers, https=self.https)]
            return Starlette.build_middleware_stack(self)

        application.App.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
    elif variant == "route-matches":
        from fhirauth.http.serving import router

        router._exact = lambda route, scope: route.matches(scope)  # noqa: SLF001
    elif variant != "as-is":
        raise SystemExit(f"unknown variant {variant!r}")


class _Caller:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, bytes]:
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        raw += [(b"host", b"bench"), (b"content-length", str(len(body)).encode())]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": raw,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8080),
            "state": {},
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def _run() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from oauth_data import CLIENT_AUTH, RATE_LIMIT_ENV, OAuthDataset

    from fhirauth.app import create_app
    from fhirauth.clock import ManualClock
    from fhirauth.seeding import seed_files
    from fhirauth.settings import Settings
    from fhirauth.twofactor import totp

    os.environ.update(RATE_LIMIT_ENV)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        storage="sqlite://:memory:",
        secret_key="bench-master-secret",  # type: ignore[arg-type]
        root_client_secret="secret",  # type: ignore[arg-type]
        base_url="http://bench",
    )
    clock = ManualClock()
    app = create_app(settings, clock=clock)
    call = _Caller(app)
    root = {"Authorization": "Basic " + base64.b64encode(b"root:secret").decode()}
    form = {"Authorization": CLIENT_AUTH, "Content-Type": "application/x-www-form-urlencoded"}
    async with app.router.lifespan_context(app):
        data = OAuthDataset("pieces", totp_users=2 * (WARM_UP + MEASURED)).prepare(
            Path(tempfile.mkdtemp(prefix="serving-pieces-"))
        )
        await seed_files(app.state.services.bundles, sorted(data.glob("bundle-*.json")))
        status, answer = await call("POST", "/auth/token", form, b"grant_type=client_credentials")
        assert status == 200, answer
        token = orjson.loads(answer)["access_token"]
        users = iter(orjson.loads((data / "totp-users.json").read_bytes()))
        step = totp.step_at(clock().timestamp())

        def verify() -> Awaitable[tuple[int, bytes]]:
            user = next(users)
            body = orjson.dumps({"token": totp.code_at(user["secret"], step)})
            headers = {"Authorization": f"Bearer {user['token']}", "Content-Type": "application/json"}
            return call("POST", "/app/auth/two-factor/verify", headers, body)

        requests: dict[str, Callable[[], Awaitable[tuple[int, bytes]]]] = {
            "introspection": lambda: call(
                "POST", "/auth/introspect", form, urlencode({"token": token}).encode()
            ),
            "client_credentials": lambda: call("POST", "/auth/token", form, b"grant_type=client_credentials"),
            "GET /User/{id}": lambda: call("GET", "/User/pw1", root),
            "2FA check": verify,
        }
        for kind in KINDS:
            for _ in range(WARM_UP):
                status, answer = await requests[kind]()
                assert status == 200, (kind, status, answer)
            os.getppid()
            for _ in range(MEASURED):
                await requests[kind]()
            os.getppid()


def report(prefix: str) -> None:
    """Instructions per request of each measured phase: the dumps after each second marker."""
    totals = []
    for path in sorted(Path(prefix).parent.glob(Path(prefix).name + ".*"), key=lambda p: int(p.suffix[1:])):
        match = re.search(r"^summary: (\d+)", path.read_text(errors="replace"), re.MULTILINE)
        totals.append(int(match.group(1)) if match else 0)
    # Dump 1 ends at the first marker (start-up, seeding, warm-up), dump 2 at the second (measured).
    measured = totals[1::2][: len(KINDS)]
    for kind, total in zip(KINDS, measured, strict=True):
        print(f"{kind:>20}: {total / MEASURED:>10,.0f} instructions a request")


if __name__ == "__main__":
    if sys.argv[1] == "--report":
        report(sys.argv[2])
    else:
        _apply(sys.argv[1])
        asyncio.run(_run())
