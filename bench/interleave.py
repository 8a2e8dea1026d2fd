"""The 2FA check against the minimal app in alternating short runs: `.venv/bin/python bench/interleave.py
[--at REV ...] [--rounds 5] [--duration 3]`.

On a shared 2-core machine the minimal app's rate moves by ±8 % from one run to the next and by 2×
over an hour, so one run of each (run.py) can put a scenario that sits near its target on either side
of it. Here every run of the check follows a run of the minimal app of its own, seconds apart, and
each pair gives a ratio: the spread of the ratios shows the noise, and their median is the answer.
With several commits (`--at A --at B`), each gets a server and a copy of the same seeded store, and
the rounds alternate their order (A B, B A, ...), so a drift of the machine does not favour one.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from datasets import DATASETS
from oauth_data import RATE_LIMIT_ENV, OAuthRuns
from run import append_results, checkout_source, exported_source, log, machine, seed, settle
from scenarios import VERIFY_CAP
from servers import Process, fhirauth_server, minimal_server
from wrk import CONNECTIONS, THREADS, WrkResult, run_wrk

CHECK_PATH = "/app/auth/two-factor/verify"
# The users of one warm-up run: it loads each server's code and caches before the first round.
WARMUP_SECONDS = 2


@dataclass(frozen=True)
class Run:
    result: WrkResult
    cpu_ms: float


@dataclass(frozen=True)
class Pair:
    round: int
    code: str
    minimal: Run
    check: Run

    @property
    def ratio(self) -> float:
        return self.check.result.rps / self.minimal.result.rps

    @property
    def cpu_ratio(self) -> float:
        return self.minimal.cpu_ms / self.check.cpu_ms


def timed(process: Process, url: str, seconds: float, script_args: list[str]) -> Run:
    settle(process)
    before = process.cpu_seconds()
    result = run_wrk(url, duration=seconds, script_args=script_args)
    return Run(result, 1000 * (process.cpu_seconds() - before) / max(result.requests, 1))


def render(pairs: list[Pair], codes: list[str], header: str) -> str:
    lines = [
        header,
        "",
        "| round | fhirauth | minimal req/s | minimal CPU/req | 2FA check req/s | check CPU/req | refused | vs minimal, req/s | vs minimal, CPU |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in pairs:
        lines.append(
            f"| {p.round} | {p.code} | {p.minimal.result.rps:,.0f} | {p.minimal.cpu_ms:.3f} ms "
            f"| {p.check.result.rps:,.0f} | {p.check.cpu_ms:.3f} ms | {p.check.result.non_2xx} "
            f"| {p.ratio:.1%} | {p.cpu_ratio:.1%} |"
        )
    lines += [
        "",
        "| fhirauth | 2FA check vs minimal, req/s: median (min–max) | CPU: median | target (issue 4) |",
    ]
    lines.append("|---|---:|---:|---|")
    for code in codes:
        ratios = [p.ratio for p in pairs if p.code == code]
        cpu = [p.cpu_ratio for p in pairs if p.code == code]
        median = statistics.median(ratios)
        lines.append(
            f"| {code} | {median:.1%} ({min(ratios):.1%}–{max(ratios):.1%}) | {statistics.median(cpu):.1%} "
            f"| ≥ 25% of minimal: {'met' if median >= 0.25 else '**missed**'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at", metavar="REV", action="append", help="a commit to measure (repeatable)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=3, help="seconds of load per run")
    args = parser.parse_args()
    dataset = DATASETS["oauth"]
    needed = (WARMUP_SECONDS + args.rounds * args.duration) * VERIFY_CAP
    if needed > dataset.users:
        print(
            f"interleave: {args.rounds} rounds of {args.duration} s need {needed:,} 2FA users",
            file=sys.stderr,
        )
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
        servers: list[tuple[str, str, Process, OAuthRuns]] = []
        for n, (source, code) in enumerate(sources):
            store = work / f"store-{n}"
            shutil.copytree(seeded, store)
            url, process = stack.enter_context(
                fhirauth_server(
                    f"sqlite:///{store}/store.db",
                    workers=1,
                    workdir=work,
                    source=source,
                    extra_env=RATE_LIMIT_ENV,
                )
            )
            servers.append((code, url, process, OAuthRuns(data)))
        minimal_url, minimal = stack.enter_context(minimal_server(workers=1, workdir=work))
        minimal_args = [f"paths={DATASETS['1k'].prepare(work / 'paths') / 'user-paths.txt'}"]

        def check(server: tuple[str, str, Process, OAuthRuns], seconds: int) -> Run:
            _, url, process, runs = server
            lines = runs.bearer_code_lines(seconds * VERIFY_CAP, "interleave-lines.txt")
            return timed(process, url + CHECK_PATH, seconds, ["method=POST", f"lines={lines}"])

        timed(minimal, minimal_url + "/", WARMUP_SECONDS, minimal_args)
        for server in servers:
            check(server, WARMUP_SECONDS)
        now = datetime.now(UTC)
        described = machine()
        pairs = []
        for round in range(1, args.rounds + 1):
            for server in servers if round % 2 else reversed(servers):
                reference = timed(minimal, minimal_url + "/", args.duration, minimal_args)
                pairs.append(Pair(round, server[0], reference, check(server, args.duration)))
                log(f"round {round}, {server[0]}: {pairs[-1].ratio:.1%} of minimal")
        header = (
            f"## {now:%Y-%m-%d %H:%M} UTC, sqlite, interleaved: the 2FA check at "
            f"{', '.join(code for code, *_ in servers)}\n\n"
            f"{described}. `bench/interleave.py`: the minimal app, then the check, {args.rounds} rounds "
            f"of {args.duration} s each (wrk -t{THREADS} -c{CONNECTIONS}), 1 uvicorn worker each."
        )
        text = render(pairs, [code for code, *_ in servers], header)
        print(text)
        log(f"appended to {append_results('sqlite', text, now)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
