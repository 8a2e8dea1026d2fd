"""Fire 10,000 password guesses at one account from many addresses: `.venv/bin/python bench/guess.py`.

A real `fhirauth serve` (two workers sharing one SQLite file, trusting X-Forwarded-For as behind a
reverse proxy) is started as the tests start it (tests/support/server.py). Each guess is a sign-in
form POSTed to /auth/login from an address of its own. The script prints, per scenario, how many
guesses reached the password check ("evaluated", from the server's own AuditEvents: reason
`wrong-password`), how many the brute-force lock refused unseen (reason `locked`, answered exactly
like a wrong password), how many a rate limit refused (429), and the time taken; then how long the
refusals take, to show that an unknown user, a wrong password and a locked account cost the same.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import re
import secrets
import statistics
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.server import ROOT_CLIENT_SECRET, LiveServer  # noqa: E402

VICTIM = "victim@example.org"
BYSTANDER = "bystander@example.org"
_CSRF = re.compile(r'<input type="hidden" name="csrf" value="([0-9a-f]{64})">')
_ROOT = {"Authorization": "Basic " + base64.b64encode(f"root:{ROOT_CLIENT_SECRET}".encode()).decode()}
# Below the failure factor (30), so the bystander's probes never lock it.
_PROBES = 25


@dataclass(frozen=True)
class Scenario:
    name: str
    env: Mapping[str, str]


SCENARIOS = (
    Scenario("defaults", {}),
    Scenario(
        "per-account rate limit off (the brute-force lock alone)",
        {"FHIRAUTH_RATE_LIMIT_LOGIN_ACCOUNT": "off"},
    ),
)


@dataclass(frozen=True)
class Result:
    scenario: str
    guesses: int
    addresses: int
    statuses: Counter[int]
    reasons: Counter[str]
    seconds: float
    latency_ms: dict[str, float]


def address(n: int, addresses: int) -> str:
    k = n % addresses
    return f"10.{(k >> 16) & 255}.{(k >> 8) & 255}.{k & 255}"


async def sign_in_form(http: httpx2.AsyncClient) -> str:
    page = await http.get("/auth/login")
    match = _CSRF.search(page.text)
    assert match, page.text
    return match.group(1)


async def guess(http: httpx2.AsyncClient, csrf: str, username: str, password: str, source: str) -> int:
    response = await http.post(
        "/auth/login",
        data={"csrf": csrf, "username": username, "password": password},
        headers={"X-Forwarded-For": source},
    )
    return response.status_code


async def fire(
    http: httpx2.AsyncClient, csrf: str, guesses: int, addresses: int, concurrency: int
) -> Counter[int]:
    statuses: Counter[int] = Counter()
    queue = iter(range(guesses))

    async def worker() -> None:
        for n in queue:
            statuses[await guess(http, csrf, VICTIM, f"guess-{n:05d}", address(n, addresses))] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


async def login_reasons(http: httpx2.AsyncClient) -> Counter[str]:
    reasons: Counter[str] = Counter()
    page = 1
    while True:
        bundle = (
            await http.get(
                "/AuditEvent", params={"action": "login", "_count": 1000, "_page": page}, headers=_ROOT
            )
        ).json()
        for entry in bundle.get("entry", []):
            reasons[_reason(entry["resource"])] += 1
        if page * 1000 >= bundle["total"]:
            return reasons
        page += 1


def _reason(event: dict[str, Any]) -> str:
    for item in event.get("entity", [{}])[0].get("detail", []):
        if item["type"] == "reason":
            return str(item["valueString"])
    return "success"


async def refusal_medians_ms(http: httpx2.AsyncClient, csrf: str) -> dict[str, float]:
    """Sequential sign-ins, the three kinds taking turns (so that load drifts hit all alike), each from
    an address of its own."""
    kinds = {"unknown user": "nobody@example.org", "wrong password": BYSTANDER, "locked account": VICTIM}
    durations: dict[str, list[float]] = {kind: [] for kind in kinds}
    for n in range(_PROBES):
        for k, (kind, username) in enumerate(kinds.items()):
            started = time.perf_counter()
            status = await guess(http, csrf, username, "guess", f"172.16.{k}.{n}")
            durations[kind].append(time.perf_counter() - started)
            assert status == 400, status
    return {kind: statistics.median(values) * 1000 for kind, values in durations.items()}


async def run(
    server: LiveServer, scenario: Scenario, guesses: int, addresses: int, concurrency: int
) -> Result:
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(base_url=server.url, timeout=60.0, limits=limits) as http:
        for email in (VICTIM, BYSTANDER):
            user = {"resourceType": "User", "email": email, "password": secrets.token_urlsafe(16)}
            created = await http.put(f"/User/{email.split('@')[0]}", json=user, headers=_ROOT)
            assert created.status_code == 201, created.text
        csrf = await sign_in_form(http)
        started = time.perf_counter()
        statuses = await fire(http, csrf, guesses, addresses, concurrency)
        seconds = time.perf_counter() - started
        reasons = await login_reasons(http)
        # Only where the victim is locked by now and no account limit answers first.
        unlimited = scenario.env.get("FHIRAUTH_RATE_LIMIT_LOGIN_ACCOUNT") == "off"
        latency = await refusal_medians_ms(http, csrf) if unlimited else {}
    return Result(scenario.name, guesses, min(guesses, addresses), statuses, reasons, seconds, latency)


def report(results: list[Result], workers: int) -> str:
    lines = [
        f"{results[0].guesses:,} guesses at one account, from {results[0].addresses:,} addresses, "
        f"{workers} workers sharing one SQLite file:",
        "",
        "| scenario | evaluated | refused by the lock | refused by a rate limit (429) | other | time | guesses/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        evaluated = result.reasons["wrong-password"]
        locked = result.reasons["locked"]
        limited = result.statuses[429]
        other = result.guesses - result.statuses[400] - limited
        lines.append(
            f"| {result.scenario} | {evaluated:,} | {locked:,} | {limited:,} | {other:,} | "
            f"{result.seconds:.1f} s | {result.guesses / result.seconds:,.0f} |"
        )
    probes = [result.latency_ms for result in results if result.latency_ms]
    if probes:
        lines += ["", f"Median time to a refusal (sequential, taking turns, {_PROBES} each):", ""]
        lines += [f"* {name}: {ms:.1f} ms" for name, ms in probes[0].items()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guesses", type=int, default=10_000)
    parser.add_argument("--addresses", type=int, default=10_000, help="distinct X-Forwarded-For addresses")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    results = []
    for scenario in SCENARIOS:
        env = {"FHIRAUTH_TRUST_PROXY_HEADERS": "true", "FHIRAUTH_LOG_LEVEL": "error", **scenario.env}
        with LiveServer(workers=args.workers, env=env) as server:
            results.append(asyncio.run(run(server, scenario, args.guesses, args.addresses, args.concurrency)))
    print(report(results, args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
