"""The processes a benchmark runs: fhirauth, the minimal app and SecantusDB, each in its own session."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "bench"
ROOT_CLIENT_SECRET = "secret"

_START_TIMEOUT_SECONDS = 60.0
_STOP_TIMEOUT_SECONDS = 15.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fhirauth_env(storage: str, base_url: str, source: Path) -> dict[str, str]:
    """The environment for fhirauth imported from `source` (the checkout, or an exported commit)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("FHIRAUTH_")}
    return {
        **inherited,
        "PYTHONPATH": str(source),
        "FHIRAUTH_STORAGE": storage,
        "FHIRAUTH_SECRET_KEY": "benchmark-master-secret",
        "FHIRAUTH_ROOT_CLIENT_SECRET": ROOT_CLIENT_SECRET,
        "FHIRAUTH_BASE_URL": base_url,
    }


def fhirauth_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "fhirauth.cli", *args]


class Process:
    """A server started in a session of its own, so stopping it stops its workers too."""

    def __init__(self, name: str, command: Sequence[str], *, workdir: Path, env: Mapping[str, str]) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                list(command),
                cwd=workdir,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self._process.pid

    def check_running(self) -> None:
        if self._process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self._process.returncode}:\n{self.log_path.read_text()[-4000:]}"
            )

    def rss_bytes(self) -> int:
        """Resident memory of the process and all its descendants (uvicorn workers)."""
        return sum(_vm_rss(pid) for pid in [self.pid, *_descendants(self.pid)])

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the process and its live descendants."""
        return sum(_cpu_seconds(pid) for pid in [self.pid, *_descendants(self.pid)])

    def stop(self) -> None:
        if self._process.poll() is None:
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self._process.wait(_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                _signal_group(self.pid, signal.SIGKILL)
                self._process.wait()
        _signal_group(self.pid, signal.SIGKILL)


def wait_http(url: str, process: Process) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_SECONDS
    while True:
        process.check_running()
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.name}: {url} did not answer 200 within {_START_TIMEOUT_SECONDS} s")
        time.sleep(0.1)


@contextmanager
def fhirauth_server(
    storage: str, *, workers: int, workdir: Path, source: Path, extra_env: Mapping[str, str] | None = None
) -> Iterator[tuple[str, Process]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = fhirauth_command("serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers))
    env = {**fhirauth_env(storage, url, source), **(extra_env or {})}
    process = Process("fhirauth", command, workdir=workdir, env=env)
    try:
        wait_http(f"{url}/health", process)
        yield url, process
    finally:
        process.stop()


@contextmanager
def minimal_server(*, workers: int, workdir: Path, one_write: bool = False) -> Iterator[tuple[str, Process]]:
    """The minimal app under uvicorn's defaults (uvloop and httptools when installed, as `fhirauth serve`
    has); with `one_write`, under fhirauth's HTTP protocol instead (httptools, one write a response)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "uvicorn", "minimal_app:app", "--app-dir", str(BENCH_DIR)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--no-access-log"]
    env = dict(os.environ)
    if one_write:
        command += ["--http", "fhirauth.http.serving.protocol:CoalescingHttpToolsProtocol"]
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    process = Process("minimal", command, workdir=workdir, env=env)
    try:
        wait_http(f"{url}/User/warmup", process)
        yield url, process
    finally:
        process.stop()


@contextmanager
def secantus_server(workdir: Path) -> Iterator[tuple[str, Process]]:
    """`secantusd-py` in its own process (embedded, it would share fhirauth's GIL)."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    port = free_port()
    daemon = Path(sys.executable).with_name("secantusd-py")
    command = [
        str(daemon),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--storage-path",
        str(workdir / "secantus"),
    ]
    process = Process("secantusd", command, workdir=workdir, env=os.environ)
    uri = f"mongodb://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        with MongoClient(uri, serverSelectionTimeoutMS=250) as client:
            while True:
                process.check_running()
                try:
                    client.admin.command("ping")
                    break
                except PyMongoError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("secantusd-py did not answer") from None
        yield uri, process
    finally:
        process.stop()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; the parent pid follows the last ')'.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def _cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # Fields 14 and 15 (utime, stime), counted from after the command name.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _vm_rss(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
