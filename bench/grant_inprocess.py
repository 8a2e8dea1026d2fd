"""CPU per client_credentials grant in-process, through the whole ASGI app, for each kind of client the
HTTP scenarios use: `.venv/bin/python bench/grant_inprocess.py [--requests N] [--rounds R] [--profile KIND]`.

No wrk and no sockets: what is left is fhirauth's own work for a request (the edge, routing, the body,
client authentication, the grant, the Session write, the response), so a change of a few µs shows
where an HTTP run's noise on a shared machine hides it. The kinds run in alternating rounds, each
reporting µs of thread CPU per request; `--profile KIND` prints cProfile's top functions for one kind
instead. Also: one raw signature of each algorithm with the server's own keys, the floor of a JWT grant.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from oauth_data import (  # noqa: E402
    CLIENT_AUTH,
    JWT_CLIENT_AUTH,
    RATE_LIMIT_ENV,
    SIGNING_ALG_CLIENT_AUTH,
    OAuthDataset,
    OAuthRuns,
)

BASE_URL = "http://bench"
FORM = "application/x-www-form-urlencoded"
BODY = b"grant_type=client_credentials"
KINDS = {
    "opaque": CLIENT_AUTH,
    "RS256": JWT_CLIENT_AUTH,
    "ES256": SIGNING_ALG_CLIENT_AUTH["ES256"],
    "EdDSA": SIGNING_ALG_CLIENT_AUTH["EdDSA"],
    "private_key_jwt": None,
}

Call = Callable[[], Awaitable[tuple[int, bytes]]]


def _caller(app: Any, headers: dict[str, str], body: bytes) -> Call:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw += [(b"host", b"bench"), (b"content-length", str(len(body)).encode())]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/auth/token",
        "raw_path": b"/auth/token",
        "root_path": "",
        "query_string": b"",
        "headers": raw,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }

    async def call() -> tuple[int, bytes]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app({**scope, "state": {}}, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    return call


async def _run(args: argparse.Namespace) -> None:
    from fhirauth.app import create_app
    from fhirauth.seeding import seed_files
    from fhirauth.settings import Settings

    os.environ.update(RATE_LIMIT_ENV)
    work = Path(tempfile.mkdtemp(prefix="grant-inprocess-"))
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        storage=f"sqlite:///{work / 'store.db'}",
        secret_key="bench-master-secret",  # type: ignore[arg-type]
        root_client_secret="secret",  # type: ignore[arg-type]
        base_url=BASE_URL,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        data = OAuthDataset("inprocess", totp_users=0).prepare(work / "data")
        await seed_files(app.state.services.bundles, sorted(data.glob("bundle-*.json")))
        runs = OAuthRuns(data)
        total = args.requests * (args.rounds + 1)
        assertions = (runs.private_key_jwt_lines(BASE_URL, total)).read_text().splitlines()
        pkjwt = iter([line.split("\t", 1)[1].encode() for line in assertions])

        def request(kind: str) -> Call:
            authorization = KINDS[kind]
            if authorization is None:
                return _caller(app, {"Content-Type": FORM}, next(pkjwt))
            return _caller(app, {"Authorization": authorization, "Content-Type": FORM}, BODY)

        async def measure(kind: str, count: int) -> float:
            calls = [request(kind) for _ in range(count)]
            started = time.thread_time()
            # In groups of `concurrency` at once, as wrk's connections keep a server busy: what storage
            # batches (a group commit) and what the event loop shares is shared as it is under load.
            for start in range(0, count, args.concurrency):
                group = calls[start : start + args.concurrency]
                for status, answer in await asyncio.gather(*(call() for call in group)):
                    assert status == 200, (kind, status, answer)
            return 1e6 * (time.thread_time() - started) / count

        kinds = args.kinds or list(KINDS)
        for kind in kinds:
            await measure(kind, args.requests)
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            await measure(args.profile, args.requests)
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
            return
        results: dict[str, list[float]] = {kind: [] for kind in kinds}
        for n in range(args.rounds):
            for kind in kinds if n % 2 == 0 else reversed(kinds):
                results[kind].append(await measure(kind, args.requests))
        keys = app.state.services.keys
        for kind, values in results.items():
            line = f"{kind:>16}: median {statistics.median(values):6.1f} µs CPU a grant"
            line += f" (min {min(values):.1f}, max {max(values):.1f})"
            print(line)
        for alg in ("RS256", "ES256", "EdDSA"):
            signer = await keys.signer_for(alg)
            claims = {"iss": BASE_URL, "sub": "bench", "aud": "bench", "exp": 1, "iat": 1, "jti": "x" * 22}
            started = time.thread_time()
            for _ in range(500):
                signer.sign(claims)
            print(f"{'sign ' + alg:>16}: {1e6 * (time.thread_time() - started) / 500:6.1f} µs (tight loop)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="grants per kind and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at once")
    parser.add_argument("--kinds", nargs="*", choices=list(KINDS))
    parser.add_argument("--profile", choices=list(KINDS))
    parser.add_argument("--top", type=int, default=40)
    asyncio.run(_run(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
