"""The real `fhirauth serve` in its own process group, for tests that need a live uvicorn server."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx2

REPO_ROOT = Path(__file__).resolve().parents[2]
ROOT_CLIENT_SECRET = "secret"
SECRET_KEY = "live-server-master-secret"

_START_TIMEOUT_SECONDS = 20.0
_STOP_TIMEOUT_SECONDS = 10.0
_POLL_INTERVAL_SECONDS = 0.05


class ServerError(RuntimeError):
    """The server did not come up (or did not reach the awaited state); the message holds its output."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_status(
    url: str, statuses: Collection[int], timeout: float, *, alive: subprocess.Popen[bytes] | None = None
) -> int:
    """Poll GET `url` until it answers one of `statuses`; return that status.

    Raises ServerError on timeout, or as soon as the `alive` process has exited.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx2.Client(timeout=2.0) as client:
        while True:
            if alive is not None and alive.poll() is not None:
                raise ServerError(f"the server exited with status {alive.returncode}")
            try:
                status = client.get(url).status_code
            except httpx2.TransportError as error:
                last = f"{type(error).__name__}: {error}"
            else:
                if status in statuses:
                    return status
                last = f"HTTP {status}"
            if time.monotonic() > deadline:
                raise ServerError(f"GET {url} did not answer {sorted(statuses)} within {timeout} s ({last})")
            time.sleep(_POLL_INTERVAL_SECONDS)


def fhirauth_command(*args: str) -> list[str]:
    """The `fhirauth` CLI as run by this interpreter, whether or not the package is installed."""
    return [sys.executable, "-m", "fhirauth.cli", *args]


def fhirauth_environment(
    storage: str, *, base_url: str = "http://127.0.0.1", extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """This process's environment without its FHIRAUTH_* settings, plus the test ones."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("FHIRAUTH_")}
    python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {
        **inherited,
        "PYTHONPATH": python_path,
        "FHIRAUTH_STORAGE": storage,
        "FHIRAUTH_SECRET_KEY": SECRET_KEY,
        "FHIRAUTH_ROOT_CLIENT_SECRET": ROOT_CLIENT_SECRET,
        "FHIRAUTH_BASE_URL": base_url,
        **(extra or {}),
    }


class LiveServer:
    """`python -m fhirauth.cli serve` on a free loopback port.

    The child gets a clean FHIRAUTH_* environment (storage, master secret, root secret `secret`,
    base URL) plus `env`, runs in its own working directory (so no stray `.env` or key file is read),
    and writes stdout/stderr to files there; `output()` reads them, also after `stop()`.
    """

    def __init__(
        self,
        *,
        storage: str | None = None,
        workers: int = 1,
        seed: Sequence[str | os.PathLike[str]] = (),
        env: Mapping[str, str] | None = None,
        workdir: Path | None = None,
        ready_statuses: Collection[int] = (200,),
        start_timeout: float = _START_TIMEOUT_SECONDS,
    ) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="fhirauth-live-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.storage = storage or f"sqlite:///{self.workdir / 'fhirauth.db'}"
        self.workers = workers
        self.seed = [Path(path).resolve() for path in seed]
        self.extra_env = dict(env or {})
        self.ready_statuses = ready_statuses
        self.start_timeout = start_timeout
        self.stdout_path = self.workdir / "stdout.log"
        self.stderr_path = self.workdir / "stderr.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._final_output: str | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "the server was not started"
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        assert self._process is not None, "the server was not started"
        return self._process.poll()

    def environment(self) -> dict[str, str]:
        return fhirauth_environment(self.storage, base_url=self.url, extra=self.extra_env)

    def command(self) -> list[str]:
        command = fhirauth_command("serve", "--host", "127.0.0.1", "--port", str(self.port))
        command += ["--workers", str(self.workers)]
        for path in self.seed:
            command += ["--seed", str(path)]
        return command

    def start(self) -> LiveServer:
        with self.stdout_path.open("wb") as stdout, self.stderr_path.open("wb") as stderr:
            # A session of its own: stop() signals the whole group, so uvicorn's workers go too.
            self._process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        try:
            wait_for_status(
                f"{self.url}/health", self.ready_statuses, self.start_timeout, alive=self._process
            )
        except ServerError as error:
            self.stop()
            raise ServerError(f"{error}\n--- server output ---\n{self.output()}") from None
        return self

    def stop(self) -> None:
        process = self._process
        if process is None or self._final_output is not None:
            return
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        # Workers left behind by a master that died first.
        _signal_group(process.pid, signal.SIGKILL)
        self._final_output = self._read_output()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def output(self) -> str:
        """Everything the server printed so far: stdout, then stderr."""
        if self._final_output is not None:
            return self._final_output
        return self._read_output()

    def _read_output(self) -> str:
        parts = []
        for path in (self.stdout_path, self.stderr_path):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


# What tests/e2e/conftest.py hands out: `live_server_factory(**LiveServer options)` and
# `storage_for("sqlite" | "mongo")` (None means the server's own SQLite file).
LiveServerFactory = Callable[..., LiveServer]
StorageFor = Callable[[str], "str | None"]
