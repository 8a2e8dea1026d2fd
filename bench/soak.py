"""Soak: mixed traffic against a live fhirauth for a while, watching errors, latency and memory.

    .venv/bin/python bench/soak.py [--minutes 10] [--workers 2] [--backend sqlite|mongo]

Traffic (bench/soak_workload.py): CRUD on Users with root Basic auth, client_credentials tokens,
introspection, and password sign-ins with a TOTP code for users who enabled 2FA through the JSON
operations. Prints one row per minute: requests, responses by status class, transport errors, p50/p99
latency, the server's CPU time per request and RSS (both summed over its process tree from /proc) and
the machine's load average; at the end, latency by operation, the RSS growth from the first to the
last minute, which should stay under RSS_GROWTH_GOAL, and the count of 5xx, which should be zero.
Exits 1 when either goal is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx2
from servers import (
    REPO_ROOT,
    ROOT_CLIENT_SECRET,
    Process,
    fhirauth_command,
    fhirauth_env,
    free_port,
    secantus_server,
    wait_http,
)
from soak_workload import Workload, prepare

RSS_GROWTH_GOAL = 0.10
_MINUTE_SECONDS = 60.0


@dataclass
class Minute:
    index: int
    latencies: list[float] = field(default_factory=list)
    classes: Counter[str] = field(default_factory=Counter)
    failures: Counter[tuple[str, int | str]] = field(default_factory=Counter)
    by_operation: dict[str, list[float]] = field(default_factory=dict)
    rss_bytes: int = 0
    cpu_seconds: float = 0.0
    load_average: float = 0.0

    def record(self, operation: str, status: int | str, seconds: float) -> None:
        self.latencies.append(seconds)
        self.by_operation.setdefault(operation, []).append(seconds)
        self.classes["transport" if isinstance(status, str) else f"{status // 100}xx"] += 1
        if isinstance(status, str) or status >= 400:
            self.failures[(operation, status)] += 1

    def percentile(self, fraction: float) -> float:
        return percentile(self.latencies, fraction)


def percentile(latencies: list[float], fraction: float) -> float:
    ordered = sorted(latencies)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


HEADER = (
    "| minute | requests | 2xx | 4xx | 5xx | transport errors | p50 ms | p99 ms | server CPU ms/request "
    "| RSS MB | load avg |"
)
RULE = "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"


def row(minute: Minute) -> str:
    c = minute.classes
    return (
        f"| {minute.index} | {len(minute.latencies)} | {c['2xx']} | {c['4xx']} | {c['5xx']} | {c['transport']} "
        f"| {minute.percentile(0.50) * 1000:.1f} | {minute.percentile(0.99) * 1000:.1f} "
        f"| {minute.cpu_seconds * 1000 / max(1, len(minute.latencies)):.2f} "
        f"| {minute.rss_bytes / 2**20:.1f} | {minute.load_average:.1f} |"
    )


def log(message: str) -> None:
    print(f"[soak {datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# All the traffic comes from one address, which stands for many clients: the per-address limits are
# raised out of its way, while the limiter still counts every request in storage.
PER_ADDRESS_LIMITS = {
    f"FHIRAUTH_RATE_LIMIT_{name}_IP": "1000000/minute" for name in ("LOGIN", "TOKEN", "SIGNUP", "TWO_FACTOR")
}


@contextmanager
def fhirauth(storage: str, workers: int, workdir: Path) -> Iterator[tuple[str, Process]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = fhirauth_command("serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers))
    env = {**fhirauth_env(storage, url, REPO_ROOT), **PER_ADDRESS_LIMITS}
    process = Process("fhirauth", command, workdir=workdir, env=env)
    try:
        wait_http(f"{url}/health", process)
        yield url, process
    finally:
        process.stop()


async def soak(url: str, server: Process, minutes: float, concurrency: int, totp_users: int) -> list[Minute]:
    limits = httpx2.Limits(max_connections=concurrency + 4)
    async with (
        httpx2.AsyncClient(
            base_url=url, auth=("root", ROOT_CLIENT_SECRET), timeout=30.0, limits=limits
        ) as root,
        httpx2.AsyncClient(base_url=url, timeout=30.0, limits=limits) as plain,
    ):
        started = time.monotonic()
        pools = await prepare(root, plain, totp_users)
        log(f"prepared {totp_users} users with 2FA and the CRUD data in {time.monotonic() - started:.1f} s")

        minutes_done: list[Minute] = []
        current = Minute(1)

        def record(operation: str, status: int | str, seconds: float) -> None:
            current.record(operation, status, seconds)

        workload = Workload(root, plain, pools, record)
        deadline = time.monotonic() + minutes * _MINUTE_SECONDS

        async def client() -> None:
            while time.monotonic() < deadline:
                await workload.step()

        clients = [asyncio.create_task(client()) for _ in range(concurrency)]
        cpu_before = server.cpu_seconds()
        print(HEADER, RULE, sep="\n", flush=True)
        while time.monotonic() < deadline:
            await asyncio.sleep(min(_MINUTE_SECONDS, deadline - time.monotonic()))
            server.check_running()
            current.rss_bytes = server.rss_bytes()
            cpu_now = server.cpu_seconds()
            current.cpu_seconds, cpu_before = cpu_now - cpu_before, cpu_now
            # The machine may be shared: the 1-minute load average says how much else was running.
            current.load_average = os.getloadavg()[0]
            minutes_done.append(current)
            print(row(current), flush=True)
            current = Minute(current.index + 1)
        await asyncio.gather(*clients)
        return minutes_done


def summary(minutes: list[Minute]) -> tuple[list[str], bool]:
    first, last = minutes[0], minutes[-1]
    growth = last.rss_bytes / first.rss_bytes - 1
    total = sum(len(m.latencies) for m in minutes)
    server_errors = sum(m.classes["5xx"] for m in minutes)
    failures: Counter[tuple[str, int | str]] = sum((m.failures for m in minutes), Counter())
    operations: dict[str, list[float]] = {}
    for minute in minutes:
        for name, latencies in minute.by_operation.items():
            operations.setdefault(name, []).extend(latencies)
    lines = [
        f"requests: {total}, 5xx: {server_errors} (goal 0), transport errors: "
        f"{sum(m.classes['transport'] for m in minutes)}",
        "by operation (requests, p50/p99 ms): "
        + ", ".join(
            f"{name} {len(seconds)} ({percentile(seconds, 0.5) * 1000:.0f}/{percentile(seconds, 0.99) * 1000:.0f})"
            for name, seconds in sorted(operations.items(), key=lambda item: -len(item[1]))
        ),
        f"RSS minute {first.index} → {last.index}: {first.rss_bytes / 2**20:.1f} MB → "
        f"{last.rss_bytes / 2**20:.1f} MB, growth {growth:+.1%} (goal < {RSS_GROWTH_GOAL:.0%})",
    ]
    if failures:
        listed = ", ".join(f"{op} {status}: {n}" for (op, status), n in failures.most_common())
        lines.append(f"non-2xx by operation: {listed}")
    return lines, server_errors == 0 and growth < RSS_GROWTH_GOAL


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backend", choices=["sqlite", "mongo"], default="sqlite")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at once")
    parser.add_argument(
        "--totp-users", type=int, default=300, help="users with 2FA; each signs in at most once per 30 s step"
    )
    args = parser.parse_args()
    # A SIGTERM (a timeout, a cancelled job) unwinds like Ctrl-C, so the servers are stopped too.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))

    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fhirauth-soak-")))
        if args.backend == "sqlite":
            storage = f"sqlite:///{workdir / 'soak.db'}"
        else:
            uri, _database = stack.enter_context(secantus_server(workdir))
            storage = f"{uri}soak"
        url, server = stack.enter_context(fhirauth(storage, args.workers, workdir))
        log(
            f"{args.backend}, {args.workers} worker(s), {args.concurrency} in flight, {args.minutes} min at {url}"
        )
        minutes = asyncio.run(soak(url, server, args.minutes, args.concurrency, args.totp_users))
        lines, met = summary(minutes)
        for line in lines:
            print(line)
        if not met:
            tail = (workdir / "fhirauth.log").read_text(errors="replace")[-4000:]
            print(f"--- server log (tail) ---\n{tail}", file=sys.stderr)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
