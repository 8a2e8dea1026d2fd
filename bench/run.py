"""Benchmark fhirauth against a minimal Starlette app: `.venv/bin/python bench/run.py [--backend both]`.

Prints a table of req/s, p50/p99 and the ratio to the minimal app for every scenario in
scenarios.SCENARIOS, plus seeding speed and server memory, and appends it to
bench/results/<date>-<backend>.md.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import io
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from datasets import BUNDLE_USERS, DATASETS
from mongo_commands import counted_fhirauth_server, settled_counts
from oauth_data import PASSWORD, RATE_LIMIT_ENV, OAuthDataset, OAuthRuns
from scenarios import (
    CLIENT_CREDENTIALS,
    MEASURED_DATASET,
    MINIMAL,
    MINIMAL_ONE_WRITE,
    ROOT,
    RSS_GOAL_MB,
    SCENARIOS,
    SEED_GOAL_PER_SECOND,
    Scenario,
)
from servers import (
    REPO_ROOT,
    ROOT_CLIENT_SECRET,
    Process,
    fhirauth_command,
    fhirauth_env,
    fhirauth_server,
    minimal_server,
    secantus_server,
)
from wrk import CONNECTIONS, THREADS, WrkResult, run_wrk, wrk_version

RESULTS_DIR = REPO_ROOT / "bench" / "results"
REFERENCES = (MINIMAL, MINIMAL_ONE_WRITE)
ROOT_AUTH_HEADER = "Authorization: Basic " + base64.b64encode(f"root:{ROOT_CLIENT_SECRET}".encode()).decode()


@dataclass(frozen=True)
class Measurement:
    name: str
    value: str
    target: str = ""
    met: bool | None = None


@dataclass(frozen=True)
class Result:
    wrk: WrkResult
    # CPU milliseconds per request of the server's process tree, and of the database when it runs
    # apart: unlike req/s, barely moved by other jobs competing for the same cores.
    server_cpu_ms: float
    db_cpu_ms: float | None
    # MongoDB commands per request by command name, from a run of its own (mongo_commands.py).
    mongo_commands: dict[str, float] | None = None


@dataclass
class Report:
    results: dict[str, Result]
    measurements: list[Measurement]


def log(message: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


class ScaledRuns(OAuthRuns):
    """OAuthRuns whose one-use runs take `scale` of the users they ask for (--one-use-scale)."""

    def __init__(self, data: Path, *, scale: float) -> None:
        super().__init__(data)
        self.scale = scale

    def _take(self, count: int) -> list[dict[str, str]]:
        return super()._take(max(1, round(count * self.scale)))


def selected(datasets: Sequence[str]) -> list[Scenario]:
    """The scenarios of `datasets`, and always the minimal app (every ratio needs it), on both protocols."""
    return [s for s in SCENARIOS if s.name in REFERENCES or s.dataset in datasets]


def matching(scenarios: Sequence[Scenario], only: Sequence[str] | None) -> list[Scenario]:
    """With --only TEXT (repeatable): the minimal app and the scenarios whose name contains a TEXT, plus
    the ones a kept scenario's goal is measured against."""
    if not only:
        return list(scenarios)
    wanted = [text.lower() for text in only]
    kept = {
        s.name for s in scenarios if s.name in REFERENCES or any(text in s.name.lower() for text in wanted)
    }
    kept |= {s.goal.of for s in scenarios if s.name in kept and s.goal is not None}
    return [s for s in scenarios if s.name in kept]


def groups(scenarios: Sequence[Scenario]) -> Iterator[tuple[str, str, list[Scenario]]]:
    """Consecutive scenarios that share a server and a dataset."""
    for (server, dataset), group in itertools.groupby(scenarios, key=lambda s: (s.server, s.dataset)):
        yield server, dataset, list(group)


def argon2_verify_rate(seconds: float, threads: int = 2) -> Result:
    """Raw PasswordHasher.verify of a correct password in `threads` threads of this process: the
    ceiling of the password grant on the same cores (argon2-cffi releases the GIL while hashing)."""
    from concurrent.futures import ThreadPoolExecutor

    from fhirauth.auth.passwords import PasswordHasher

    hasher = PasswordHasher()
    stored = hasher.hash(PASSWORD)
    deadline = time.perf_counter() + seconds

    def loop() -> int:
        count = 0
        while time.perf_counter() < deadline:
            assert hasher.verify(stored, PASSWORD)
            count += 1
        return count

    cpu_before, started = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        count = sum(pool.map(lambda _: loop(), range(threads)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_before
    log(
        f"argon2id verify: {count / elapsed:,.1f}/s in {threads} threads, {1000 * cpu / count:.1f} ms CPU each"
    )
    return Result(WrkResult(count, elapsed, 0.0, 0.0, 0, 0), 1000 * cpu / count, None)


def storage_url(backend: str, dataset: str, work: Path, mongo_uri: str | None) -> str:
    if backend == "sqlite":
        return f"sqlite:///{work / f'store-{dataset}.db'}"
    assert mongo_uri is not None
    return f"{mongo_uri.rstrip('/')}/bench_{dataset}"


def seed(storage: str, bundles: Sequence[Path], work: Path, source: Path) -> float:
    """Seconds one `fhirauth seed` command takes to load all `bundles`, start-up included."""
    started = time.perf_counter()
    completed = subprocess.run(
        fhirauth_command("seed", *map(str, bundles)),
        cwd=work,
        env=fhirauth_env(storage, "http://127.0.0.1", source),
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"fhirauth seed failed:\n{completed.stderr[-4000:]}")
    return elapsed


def verify_in_process(storage: str, data: Path, runs: OAuthRuns, work: Path, source: Path) -> Measurement:
    """TwoFactorService.verify on the same store, for the 2FA users no HTTP scenario used."""
    first = runs.taken()
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "bench" / "totp_inprocess.py"),
            storage,
            str(data / "totp-users.json"),
            str(first),
        ],
        cwd=work,
        env=fhirauth_env(storage, "http://127.0.0.1", source),
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(completed.stdout.splitlines()[-1])
    log(f"TwoFactorService.verify in-process: {result}")
    return Measurement(
        f"TwoFactorService.verify in-process, SQLite, each user's first check ({result['accepted']:,} of "
        f"{result['calls']:,} accepted)",
        f"{result['wall_us']:,.0f} µs per call ({result['cpu_us']:,.0f} µs CPU)",
        "≤ 1 ms of server time (two-factor)",
        result["accepted"] == result["calls"] and result["cpu_us"] <= 1000,
    )


def measure(
    scenario: Scenario,
    url: str,
    data: Path,
    args: argparse.Namespace,
    server: Process,
    db: Process | None,
    runs: OAuthRuns | None = None,
) -> Result:
    target = url + (scenario.path if not scenario.paths else "/")

    def wrk_arguments(seconds: float) -> tuple[list[str], list[str]]:
        headers = []
        if scenario.server == "fhirauth" and scenario.authorization is not None:
            authorization = (
                ROOT_AUTH_HEADER
                if scenario.authorization == ROOT
                else f"Authorization: {scenario.authorization}"
            )
            headers.append(authorization)
        script_args = scenario.script_args(data)
        if scenario.setup is not None:
            assert runs is not None
            more_args, more_headers = scenario.setup(runs, url, seconds)
            script_args, headers = script_args + more_args, headers + more_headers
        return script_args, headers

    if args.warmup:
        script_args, headers = wrk_arguments(args.warmup)
        run_wrk(
            target,
            duration=args.warmup,
            script_args=script_args,
            headers=headers,
            connections=args.connections,
        )
        settle(server)
    script_args, headers = wrk_arguments(args.duration)
    server_before, db_before = server.cpu_seconds(), db.cpu_seconds() if db else 0.0
    with profiled(scenario, server, args):
        result = run_wrk(
            target,
            duration=args.duration,
            script_args=script_args,
            headers=headers,
            connections=args.connections,
        )
    requests = max(result.requests, 1)
    server_cpu_ms = 1000 * (server.cpu_seconds() - server_before) / requests
    db_cpu_ms = 1000 * (db.cpu_seconds() - db_before) / requests if db else None
    log(
        f"{scenario.name}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
        f"server CPU {server_cpu_ms:.3f} ms/request"
    )
    return Result(result, server_cpu_ms, db_cpu_ms)


def count_commands(
    scenario: Scenario, url: str, data: Path, args: argparse.Namespace, counts: Path, runs: OAuthRuns
) -> dict[str, float]:
    """MongoDB commands per request of `scenario`, by command name, on the counted server at `url`.

    One connection: when wrk stops, at most one request is in flight, and the server completes it for
    nobody; its commands are counted over at most 1/requests too many.
    """
    target = url + (scenario.path if not scenario.paths else "/")
    headers = []
    if scenario.authorization is not None:
        authorization = (
            ROOT_AUTH_HEADER if scenario.authorization == ROOT else f"Authorization: {scenario.authorization}"
        )
        headers.append(authorization)
    script_args = scenario.script_args(data)
    if scenario.setup is not None:
        more_args, more_headers = scenario.setup(runs, url, args.count_duration)
        script_args, headers = script_args + more_args, headers + more_headers
    before = settled_counts(counts)
    result = run_wrk(
        target, duration=args.count_duration, script_args=script_args, headers=headers, connections=1
    )
    counted = settled_counts(counts) - before
    requests = max(result.requests, 1)
    per_request = {name: count / requests for name, count in sorted(counted.items())}
    log(
        f"{scenario.name}: {sum(per_request.values()):.2f} MongoDB commands/request "
        f"({', '.join(f'{name} {n:.2f}' for name, n in per_request.items())}) over {result.requests} requests"
        + (f", {result.non_2xx} non-2xx" if result.non_2xx else "")
    )
    return per_request


def settle(server: Process, timeout: float = 15.0) -> None:
    """Wait until the server has finished the warm-up's requests.

    wrk stops with up to CONNECTIONS requests in flight, and the server completes them for nobody: a
    slow scenario (an Argon2id per password grant) would charge about a second of that work to the
    measured run, in its CPU per request and its request rate.
    """
    deadline = time.monotonic() + timeout
    before = server.cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = server.cpu_seconds()
        if now - before < 0.01:
            return
        before = now


@contextmanager
def profiled(scenario: Scenario, server: Process, args: argparse.Namespace) -> Iterator[None]:
    """With --profile DIR: py-spy samples the server (workers included) while the scenario is measured."""
    if args.profile is None or scenario.server != "fhirauth":
        yield
        return
    args.profile.mkdir(parents=True, exist_ok=True)
    name = "".join(c if c.isalnum() else "-" for c in scenario.name.lower()).strip("-")
    output = args.profile / f"{name}.txt"
    spy = subprocess.Popen(
        ["py-spy", "record", "--pid", str(server.pid), "--subprocesses", "--rate", "250", "--format", "raw"]
        + ["--duration", str(args.duration), "--output", str(output), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.wait(timeout=args.duration + 30)
        log(f"profile of {scenario.name}: {output}")


def run_backend(
    backend: str, data: dict[str, Path], work: Path, source: Path, args: argparse.Namespace
) -> Report:
    report = Report({}, [])
    with ExitStack() as stack:
        mongo_uri, db = stack.enter_context(secantus_server(work)) if backend == "mongo" else (None, None)
        for server, dataset, scenarios in groups(matching(selected(args.datasets), args.only)):
            if server != "fhirauth":
                one_write = server == "minimal-one-write"
                with minimal_server(workers=args.workers, workdir=work, one_write=one_write) as (
                    url,
                    process,
                ):
                    for scenario in scenarios:
                        report.results[scenario.name] = measure(
                            scenario, url, data[dataset], args, process, None
                        )
                continue
            storage = storage_url(backend, dataset, work, mongo_uri)
            measured = dataset == MEASURED_DATASET
            users = DATASETS[dataset].users
            log(f"seeding {users:,} users into {backend}")
            seconds = seed(storage, DATASETS[dataset].bundles(data[dataset]), work, source)
            resources = DATASETS[dataset].resources
            rate = resources / seconds
            report.measurements.append(
                Measurement(
                    f"`fhirauth seed` {resources:,} resources, {users:,} of them Users (transaction Bundles of {BUNDLE_USERS})",
                    f"{rate:,.0f} resources/s ({seconds:.1f} s)",
                    f"≥ {SEED_GOAL_PER_SECOND:,} resources/s" if measured else "",
                    rate >= SEED_GOAL_PER_SECOND if measured else None,
                )
            )
            # A fresh server per scenario: what one scenario leaves behind in the process (heap, caches)
            # must not be billed to the next. The store is shared, so writes come last in the table.
            rss_mb = 0.0
            runs = ScaledRuns(data[dataset], scale=args.one_use_scale)
            extra_env = RATE_LIMIT_ENV if dataset == "oauth" else {}
            for scenario in scenarios:
                if scenario.in_process:
                    report.results[scenario.name] = argon2_verify_rate(args.duration)
                    continue
                with fhirauth_server(
                    storage, workers=args.workers, workdir=work, source=source, extra_env=extra_env
                ) as (url, process):
                    report.results[scenario.name] = measure(
                        scenario, url, data[dataset], args, process, db, runs
                    )
                    rss_mb = max(rss_mb, process.rss_bytes() / 2**20)
                if backend == "mongo" and args.count_duration:
                    counts = work / f"commands-{len(report.results)}"
                    with counted_fhirauth_server(
                        storage,
                        workers=args.workers,
                        workdir=work,
                        source=source,
                        counts=counts,
                        extra_env=extra_env,
                    ) as (url, _process):
                        commands = count_commands(scenario, url, data[dataset], args, counts, runs)
                    report.results[scenario.name] = dataclasses.replace(
                        report.results[scenario.name], mongo_commands=commands
                    )
            # The in-process check is SQLite's target, and needs 2FA users the runs left unused.
            oauth = DATASETS[dataset]
            if backend == "sqlite" and isinstance(oauth, OAuthDataset) and runs.taken() < oauth.totp_users:
                report.measurements.append(verify_in_process(storage, data[dataset], runs, work, source))
            report.measurements.append(
                Measurement(
                    f"server RSS after a {dataset} scenario (the largest)",
                    f"{rss_mb:,.0f} MB",
                    f"≤ {RSS_GOAL_MB} MB" if measured else "",
                    rss_mb <= RSS_GOAL_MB if measured else None,
                )
            )
    granted = report.results.get(CLIENT_CREDENTIALS)
    if granted is not None:
        report.measurements.append(
            Measurement(
                "client_credentials grants (opaque) per second of server CPU",
                f"{1000 / granted.server_cpu_ms:,.0f} /s",
                "Keycloak's sizing guide: 120 /s per vCPU",
            )
        )
    return report


def _verdict(met: bool | None) -> str:
    return "" if met is None else ("met" if met else "**missed**")


def render(report: Report, header: str) -> str:
    minimal = report.results.get(MINIMAL)
    one_write = report.results.get(MINIMAL_ONE_WRITE)
    lines = [
        header,
        "",
        "| scenario | req/s | p50 | p99 | errors | server CPU/req | db CPU/req | Mongo cmds/req "
        "| vs minimal, req/s | vs minimal, CPU | vs minimal with one write, req/s | target | |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for scenario in SCENARIOS:
        measured = report.results.get(scenario.name)
        if measured is None:
            continue
        result = measured.wrk
        errors = result.socket_errors + result.non_2xx
        rps_ratio = f"{result.rps / minimal.wrk.rps:.0%}" if minimal else ""
        cpu_ratio = (
            f"{minimal.server_cpu_ms / measured.server_cpu_ms:.0%}"
            if minimal and measured.server_cpu_ms
            else ""
        )
        like_ratio = f"{result.rps / one_write.wrk.rps:.0%}" if one_write and one_write.wrk.rps else ""
        db_cpu = f"{measured.db_cpu_ms:.2f} ms" if measured.db_cpu_ms is not None else ""
        commands = ""
        if measured.mongo_commands is not None:
            by_name = ", ".join(f"{name} {n:.2f}" for name, n in measured.mongo_commands.items())
            commands = f"{sum(measured.mongo_commands.values()):.2f} ({by_name})"
        target, met = "", None
        if scenario.goal is not None:
            reference = report.results[scenario.goal.of].wrk
            target = scenario.goal.describe()
            met = errors == 0 and result.rps >= scenario.goal.fraction * reference.rps
            if scenario.goal.of != MINIMAL and reference.rps > 0:
                target += f" (here {result.rps / reference.rps:.0%})"
        lines.append(
            f"| {scenario.name} | {result.rps:,.0f} | {result.p50_ms:.2f} ms | {result.p99_ms:.2f} ms | {errors} "
            f"| {measured.server_cpu_ms:.2f} ms | {db_cpu} | {commands} | {rps_ratio} | {cpu_ratio} | {like_ratio} "
            f"| {target} | {_verdict(met)} |"
        )
    lines += ["", "| measurement | value | target | |", "|---|---:|---|---|"]
    for m in report.measurements:
        lines.append(f"| {m.name} | {m.value} | {m.target} | {_verdict(m.met)} |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    load = os.getloadavg()[0]
    return f"nproc {os.cpu_count()}, {cpu}, Python {platform.python_version()}, {wrk_version()}, load average {load:.2f}"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout


def checkout_source() -> tuple[Path, str]:
    """The working tree, described by its commit and whether the code differs from it."""
    described = _git("rev-parse", "--short", "HEAD").strip()
    if _git("status", "--porcelain", "--", "fhirauth", "schemas").strip():
        described += " with uncommitted changes"
    return REPO_ROOT, described


def exported_source(rev: str, work: Path) -> tuple[Path, str]:
    """The code of commit `rev` alone, so edits in the working tree cannot change the numbers mid-run."""
    source = work / "source"
    source.mkdir()
    archive = subprocess.run(
        ["git", "archive", rev, "fhirauth", "schemas"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(source, filter="data")
    return source, _git("rev-parse", "--short", rev).strip()


def append_results(backend: str, text: str, now: datetime) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{now:%Y-%m-%d}-{backend}.md"
    with path.open("a") as results:
        if results.tell() == 0:
            results.write(f"# fhirauth benchmark results: {backend}, {now:%Y-%m-%d}\n\n")
        results.write(text + "\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per scenario")
    parser.add_argument(
        "--warmup", type=int, default=2, help="seconds of unrecorded load before each scenario"
    )
    parser.add_argument("--backend", choices=["sqlite", "mongo", "both"], default="sqlite")
    parser.add_argument(
        "--workers", type=int, default=1, help="uvicorn workers for fhirauth and the minimal app"
    )
    parser.add_argument(
        "--at", metavar="REV", help="benchmark this commit (exported) instead of the working tree"
    )
    parser.add_argument(
        "--datasets",
        type=lambda value: value.split(","),
        default=list(DATASETS),
        help=f"comma-separated datasets whose scenarios run (default all: {','.join(DATASETS)})",
    )
    parser.add_argument(
        "--only",
        metavar="TEXT",
        action="append",
        help="only the scenarios whose name contains TEXT (and the minimal app); repeatable",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=CONNECTIONS,
        help=f"wrk connections of the measured runs (default {CONNECTIONS}); 1 shows the work of a "
        "request without queueing in the server or the driver's pool",
    )
    parser.add_argument(
        "--count-duration",
        type=float,
        default=3.0,
        help="MongoDB only: seconds of one-connection load on a server of its own that counts each "
        "scenario's commands per request (0: do not count)",
    )
    parser.add_argument(
        "--oauth-users",
        type=int,
        help="2FA users of the oauth dataset (default 160,000: days to seed into SecantusDB)",
    )
    parser.add_argument(
        "--one-use-scale",
        type=float,
        default=1.0,
        help="give one-use scenarios (codes, TOTP checks) this fraction of their users per second, "
        "for a smaller --oauth-users at MongoDB's rates",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        type=Path,
        help="sample the server with py-spy during each measured run; raw stacks go to DIR/<scenario>.txt",
    )
    args = parser.parse_args()
    if args.profile is not None and shutil.which("py-spy") is None:
        print("bench: --profile needs py-spy (pip install py-spy)", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2

    if args.oauth_users is not None:
        DATASETS["oauth"] = OAuthDataset("oauth", args.oauth_users)
    backends = ["sqlite", "mongo"] if args.backend == "both" else [args.backend]
    with tempfile.TemporaryDirectory(prefix="fhirauth-bench-") as tmp:
        work = Path(tmp)
        source, code = exported_source(args.at, work) if args.at else checkout_source()
        log("writing datasets")
        needed = {s.dataset for s in matching(selected(args.datasets), args.only)}
        data = {name: DATASETS[name].prepare(work / "data" / name) for name in needed}
        for backend in backends:
            now = datetime.now(UTC)
            described = machine()
            report = run_backend(backend, data, work, source, args)
            header = (
                f"## {now:%Y-%m-%d %H:%M} UTC, {backend}, fhirauth {code}\n\n"
                f"{described}. fhirauth and the minimal app with {args.workers} uvicorn worker(s); "
                f"wrk -t{min(THREADS, args.connections)} -c{args.connections} -d{args.duration}s "
                f"after {args.warmup} s of warm-up, "
                "on the same machine."
            )
            text = render(report, header)
            print(text)
            log(f"appended to {append_results(backend, text, now)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
