"""The two-factor targets in alternating short runs: `.venv/bin/python bench/interleave.py
[--compare check|password] [--at REV ...] [--rounds 5] [--duration S]`.

On a shared 2-core machine the minimal app's rate moves by ±8 % from one run to the next and by 2×
over an hour, and Argon2id's cost drifts by as much, so one run of each (run.py) can put a scenario
that sits near its target on either side of it. Here every measured run is paired with a run of
its reference seconds apart (the reference first in odd rounds, second in even ones, so that a
machine slowing down or speeding up under load favours neither), and each pair gives a ratio: the spread of the
ratios shows the noise, and their median is the answer.

* `check` (default): the 2FA check (`POST /app/auth/two-factor/verify`, each request a different
  user's first check) against the minimal app; target ≥ 25 %.
* `password`: the password grant with `totp` against the same grant without it, on the same server;
  target ≥ 95 %.

With several commits (`--at A --at B`), each gets a server and a copy of the same seeded store, and
the rounds alternate their order (A B, B A, ...), so a drift of the machine does not favour one.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from datasets import DATASETS
from oauth_data import RATE_LIMIT_ENV, OAuthDataset, OAuthRuns
from run import append_results, checkout_source, exported_source, log, machine, seed, settle
from scenarios import FORM, PASSWORD_TOTP_CAP, VERIFY_CAP
from servers import Process, fhirauth_server, minimal_server
from wrk import CONNECTIONS, THREADS, WrkResult, run_wrk

# Seconds of unrecorded load on every server before the first round: code paths and caches warm.
WARMUP_SECONDS = 2


@dataclass(frozen=True)
class Run:
    result: WrkResult
    cpu_ms: float


@dataclass(frozen=True)
class Server:
    code: str
    url: str
    process: Process
    runs: OAuthRuns


@dataclass(frozen=True)
class Pair:
    round: int
    code: str
    reference: Run
    measured: Run

    @property
    def ratio(self) -> float:
        return self.measured.result.rps / self.reference.result.rps

    @property
    def cpu_ratio(self) -> float:
        return self.reference.cpu_ms / self.measured.cpu_ms


@dataclass(frozen=True)
class Comparison:
    measured: str
    reference: str
    target: float
    seconds: int
    # How many one-use 2FA users a measured run of one second is given.
    users_per_second: int


COMPARISONS = {
    "check": Comparison("2FA check", "minimal app", 0.25, 3, VERIFY_CAP),
    "password": Comparison("password + totp grant", "password grant", 0.95, 10, PASSWORD_TOTP_CAP),
}


def timed(process: Process, url: str, seconds: int, script_args: list[str]) -> Run:
    settle(process)
    before = process.cpu_seconds()
    result = run_wrk(url, duration=seconds, script_args=script_args)
    return Run(result, 1000 * (process.cpu_seconds() - before) / max(result.requests, 1))


def _form_lines(lines: Path) -> list[str]:
    return ["method=POST", f"lines={lines}", f"type={FORM}"]


def render(comparison: Comparison, pairs: list[Pair], codes: list[str], header: str) -> str:
    reference, measured = comparison.reference, comparison.measured
    lines = [
        header,
        "",
        f"| round | fhirauth | {reference} req/s | CPU/req | {measured} req/s | CPU/req | refused "
        f"| vs {reference}, req/s | vs {reference}, CPU |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in pairs:
        lines.append(
            f"| {p.round} | {p.code} | {p.reference.result.rps:,.0f} | {p.reference.cpu_ms:.3f} ms "
            f"| {p.measured.result.rps:,.0f} | {p.measured.cpu_ms:.3f} ms | {p.measured.result.non_2xx} "
            f"| {p.ratio:.1%} | {p.cpu_ratio:.1%} |"
        )
    lines += [
        "",
        f"| fhirauth | vs {reference}, req/s: median (min–max) | CPU: median | target (two-factor) |",
    ]
    lines.append("|---|---:|---:|---|")
    for code in codes:
        ratios = [p.ratio for p in pairs if p.code == code]
        median = statistics.median(ratios)
        verdict = "met" if median >= comparison.target else "**missed**"
        lines.append(
            f"| {code} | {median:.1%} ({min(ratios):.1%}–{max(ratios):.1%}) "
            f"| {statistics.median(p.cpu_ratio for p in pairs if p.code == code):.1%} "
            f"| ≥ {comparison.target:.0%} of the {reference}: {verdict} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=list(COMPARISONS), default="check")
    parser.add_argument("--at", metavar="REV", action="append", help="a commit to measure (repeatable)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, help="seconds of load per run (check 3, password 10)")
    args = parser.parse_args()
    comparison = COMPARISONS[args.compare]
    seconds = args.duration or comparison.seconds
    dataset = DATASETS["oauth"]
    assert isinstance(dataset, OAuthDataset)
    needed = (WARMUP_SECONDS + args.rounds * seconds) * comparison.users_per_second
    if needed > dataset.totp_users:
        print(f"interleave: {args.rounds} rounds of {seconds} s need {needed:,} 2FA users", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="fhirauth-interleave-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        log("writing the oauth dataset")
        data = dataset.prepare(work / "data")
        sources: list[tuple[Path, str]] = []
        for n, rev in enumerate(args.at or [None]):
            if rev is None:
                sources.append(checkout_source())
            else:
                (work / f"at-{n}").mkdir()
                sources.append(exported_source(rev, work / f"at-{n}"))
        seeded = work / "seeded"
        seeded.mkdir()
        log(f"seeding {dataset.users:,} users")
        seed(f"sqlite:///{seeded}/store.db", dataset.bundles(data), work, sources[0][0])
        servers = []
        for n, (source, code) in enumerate(sources):
            store = work / f"store-{n}"
            shutil.copytree(seeded, store)
            storage = f"sqlite:///{store}/store.db"
            url, process = stack.enter_context(
                fhirauth_server(storage, workers=1, workdir=work, source=source, extra_env=RATE_LIMIT_ENV)
            )
            servers.append(Server(code, url, process, OAuthRuns(data)))

        reference: Callable[[Server, int], Run]
        measured: Callable[[Server, int], Run]
        if args.compare == "check":
            minimal_url, minimal = stack.enter_context(minimal_server(workers=1, workdir=work))
            paths = DATASETS["1k"].prepare(work / "paths") / "user-paths.txt"

            def reference(server: Server, seconds: int) -> Run:
                return timed(minimal, minimal_url + "/", seconds, [f"paths={paths}"])

            def measured(server: Server, seconds: int) -> Run:
                lines = server.runs.bearer_code_lines(seconds * VERIFY_CAP, "interleave-lines.txt")
                url = server.url + "/app/auth/two-factor/verify"
                return timed(server.process, url, seconds, ["method=POST", f"lines={lines}"])

        else:

            def reference(server: Server, seconds: int) -> Run:
                lines = data / "password-grant-lines.txt"
                return timed(server.process, server.url + "/auth/token", seconds, _form_lines(lines))

            def measured(server: Server, seconds: int) -> Run:
                lines = server.runs.password_totp_lines(seconds * PASSWORD_TOTP_CAP)
                return timed(server.process, server.url + "/auth/token", seconds, _form_lines(lines))

        for server in servers:
            reference(server, WARMUP_SECONDS)
            measured(server, WARMUP_SECONDS)
        now = datetime.now(UTC)
        described = machine()
        pairs = []
        for number in range(1, args.rounds + 1):
            for server in servers if number % 2 else reversed(servers):
                if number % 2:
                    pair = Pair(number, server.code, reference(server, seconds), measured(server, seconds))
                else:
                    measured_first = measured(server, seconds)
                    pair = Pair(number, server.code, reference(server, seconds), measured_first)
                pairs.append(pair)
                log(
                    f"round {number}, {server.code}: {comparison.measured} {pair.ratio:.1%} of the {comparison.reference}"
                )
        header = (
            f"## {now:%Y-%m-%d %H:%M} UTC, sqlite, interleaved: the {comparison.measured} against the "
            f"{comparison.reference}, fhirauth {', '.join(s.code for s in servers)}\n\n"
            f"{described}. `bench/interleave.py --compare {args.compare}`: the {comparison.reference} and "
            f"the {comparison.measured} in turn (ABBA), {args.rounds} rounds of {seconds} s each (wrk -t{THREADS} "
            f"-c{CONNECTIONS}), 1 uvicorn worker each."
        )
        text = render(comparison, pairs, [s.code for s in servers], header)
        print(text)
        log(f"appended to {append_results('sqlite', text, now)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
