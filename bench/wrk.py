"""Running wrk with bench/request.lua and reading the numbers its done() hook prints."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "request.lua"
THREADS = 2
CONNECTIONS = 64


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    socket_errors: int
    non_2xx: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def run_wrk(
    url: str,
    *,
    duration: float,
    script_args: Sequence[str] = (),
    headers: Sequence[str] = (),
    connections: int = CONNECTIONS,
) -> WrkResult:
    # wrk needs a connection per thread at least.
    threads = min(THREADS, connections)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency", "--timeout", "10s"]
    command += ["-s", str(SCRIPT)]
    for header in headers:
        command += ["-H", header]
    # request.lua's `lines=` splits its file between the threads, so it must know how many there are.
    command += [url, "--", f"threads={threads}", *script_args]
    completed = subprocess.run(command, capture_output=True, text=True, check=True, timeout=duration + 60)
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            data = json.loads(line.removeprefix("BENCH_JSON "))
            return WrkResult(
                requests=data["requests"],
                seconds=data["duration_us"] / 1e6,
                p50_ms=data["p50_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                socket_errors=data["connect_errors"]
                + data["read_errors"]
                + data["write_errors"]
                + data["timeouts"],
                non_2xx=data["non_2xx"],
            )
    raise RuntimeError(f"wrk printed no result:\n{completed.stdout}\n{completed.stderr}")


def wrk_version() -> str:
    completed = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    first = (completed.stdout or completed.stderr).splitlines()
    return first[0].split(" [")[0] if first else "wrk"
