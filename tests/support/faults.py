"""Fault injection for the storage-fault tests: a SecantusDB daemon that can be killed and restarted
on the same port and data, a mixed HTTP load that records every answer, the all-or-nothing check of
transaction bundles, and tmpfs / read-only bind mounts."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from support.server import free_port

_DAEMON_START_TIMEOUT_SECONDS = 30.0
_DAEMON_STOP_TIMEOUT_SECONDS = 15.0
BUNDLE_ENTRIES = 3


class SecantusDaemon:
    """`secantusd-py` on a fixed port with its data in `home`, so a restart finds the same data.

    `--sync-on-commit` fsyncs the journal at every commit: an acknowledged write survives SIGKILL, as
    on a production replica set with `w: majority` (journaled). Without it SecantusDB, like mongod
    with `w: 1, j: false`, loses the last acknowledged writes when killed.
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.uri = f"mongodb://127.0.0.1:{self.port}/"
        self.log_path = home / "secantusd.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start the daemon and return the monotonic time at which it first answered a ping."""
        command = [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--storage-path", str(self.home / "data"), "--sync-on-commit"]
        with self.log_path.open("ab") as log:
            # cwd=home keeps it from reading a stray ./secantusd.toml.
            self._process = subprocess.Popen(command, cwd=self.home, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + _DAEMON_START_TIMEOUT_SECONDS
        client: MongoClient[dict[str, Any]] = MongoClient(
            self.uri, serverSelectionTimeoutMS=100, connectTimeoutMS=100
        )
        with client:
            while True:
                if self._process.poll() is not None:
                    raise RuntimeError(f"secantusd-py exited:\n{self.log_path.read_text()[-3000:]}")
                with contextlib.suppress(PyMongoError):
                    client.admin.command("ping")
                    return time.monotonic()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"secantusd-py did not answer:\n{self.log_path.read_text()[-3000:]}")

    def stop(self, sig: signal.Signals) -> tuple[float, float]:
        """Send `sig` and wait for the process to end; return the monotonic times of the signal and
        of the end (a SIGTERM drains connections for a while first)."""
        process = self._process
        assert process is not None, "the daemon is not running"
        signalled = time.monotonic()
        process.send_signal(sig)
        try:
            process.wait(_DAEMON_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._process = None
        return signalled, time.monotonic()

    def close(self) -> None:
        if self._process is not None:
            self.stop(signal.SIGKILL)


@dataclass(frozen=True)
class Answer:
    """One request of the load: monotonic start and end, the status (None: no HTTP answer)."""

    operation: str
    started: float
    finished: float
    status: int | None
    outcome_code: str | None = None
    marker: str | None = None

    @property
    def seconds(self) -> float:
        return self.finished - self.started


def bundle_ids(marker: str) -> list[str]:
    return [f"{marker}-{n}" for n in range(BUNDLE_ENTRIES)]


def transaction(marker: str) -> dict[str, Any]:
    """A transaction Bundle of BUNDLE_ENTRIES new Users whose ids all start with `marker`."""
    entries = [
        {
            "request": {"method": "PUT", "url": f"/User/{id}"},
            "resource": {"resourceType": "User", "email": f"{id}@faults.example", "data": {"bundle": marker}},
        }
        for id in bundle_ids(marker)
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _outcome_code(response: httpx2.Response) -> str | None:
    if not response.headers.get("content-type", "").startswith(("application/json", "application/fhir+json")):
        return None
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
            return str(body["issue"][0]["code"])
    return None


@dataclass
class MixedLoad:
    """`concurrency` loops that each cycle through creates, reads, searches, transaction bundles and
    client_credentials tokens until `stop` is set; every answer lands in `answers`.

    Creates and bundles use fresh ids with a unique marker, so their effect can be checked afterwards.
    Resources are sent as root (HTTP Basic); tokens ask as `client_id`/`client_secret`.
    """

    root: httpx2.AsyncClient
    plain: httpx2.AsyncClient
    client_id: str
    client_secret: str
    readers: int
    concurrency: int = 12
    operations: tuple[str, ...] = ("create", "read", "search", "bundle", "token")
    answers: list[Answer] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    _serial: Iterator[int] = field(default_factory=itertools.count)

    async def run(self) -> None:
        await asyncio.gather(*(self._loop(offset) for offset in range(self.concurrency)))

    def successes_since(self, moment: float) -> set[str]:
        """The operations that answered 2xx for a request started at or after `moment`."""
        return {
            a.operation
            for a in self.answers
            if a.started >= moment and a.status is not None and 200 <= a.status < 300
        }

    async def _loop(self, offset: int) -> None:
        for n in itertools.count(offset):
            if self.stop.is_set():
                return
            await self._send(self.operations[n % len(self.operations)])

    async def _send(self, operation: str) -> None:
        marker = None
        started = time.monotonic()
        try:
            if operation == "create":
                marker = f"c{next(self._serial)}"
                user = {"resourceType": "User", "email": f"{marker}@faults.example"}
                response = await self.root.put(f"/User/{marker}", json=user)
            elif operation == "read":
                response = await self.root.get(f"/User/reader{next(self._serial) % self.readers}")
            elif operation == "search":
                email = f"reader{next(self._serial) % self.readers}@faults.example"
                response = await self.root.get("/User", params={"email": email})
            elif operation == "bundle":
                marker = f"b{next(self._serial)}"
                response = await self.root.post("/", json=transaction(marker))
            else:
                form = {"grant_type": "client_credentials"}
                response = await self.plain.post(
                    "/auth/token", data=form, auth=(self.client_id, self.client_secret)
                )
        except httpx2.TransportError:
            self.answers.append(Answer(operation, started, time.monotonic(), None, marker=marker))
            return
        finished = time.monotonic()
        self.answers.append(
            Answer(operation, started, finished, response.status_code, _outcome_code(response), marker)
        )


async def visible_users(root: httpx2.AsyncClient, ids: list[str]) -> set[str]:
    """Which of the User ids can be read now (one search per 100 ids)."""
    found: set[str] = set()
    for start in range(0, len(ids), 100):
        chunk = ids[start : start + 100]
        response = await root.get("/User", params={"_id": ",".join(chunk), "_count": "100"})
        assert response.status_code == 200, response.text
        found.update(entry["resource"]["id"] for entry in response.json().get("entry", []))
    return found


@dataclass(frozen=True)
class BundleAudit:
    """What became of every transaction bundle: answered 200, or failed / in flight."""

    committed: int
    uncertain: int
    uncertain_visible: int
    partial: list[str]
    lost: list[str]


async def audit_bundles(root: httpx2.AsyncClient, answers: list[Answer]) -> BundleAudit:
    """Every bundle that answered 200 must be fully visible; every other one fully or not at all."""
    bundles = [a for a in answers if a.operation == "bundle" and a.marker is not None]
    everything = [id for a in bundles for id in bundle_ids(a.marker or "")]
    seen = await visible_users(root, everything)
    partial, lost, uncertain_visible = [], [], 0
    for answer in bundles:
        count = sum(id in seen for id in bundle_ids(answer.marker or ""))
        if count not in (0, BUNDLE_ENTRIES):
            partial.append(f"{answer.marker}: {count} of {BUNDLE_ENTRIES} (answered {answer.status})")
        if answer.status == 200 and count != BUNDLE_ENTRIES:
            lost.append(f"{answer.marker}: {count} of {BUNDLE_ENTRIES}")
        if answer.status != 200 and count == BUNDLE_ENTRIES:
            uncertain_visible += 1
    committed = sum(a.status == 200 for a in bundles)
    return BundleAudit(committed, len(bundles) - committed, uncertain_visible, partial, lost)


def fill(directory: Path) -> Path:
    """Write a file into `directory` until its filesystem is full; return the file."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as out:
        # Large chunks first, then single bytes, so no block is left free.
        for size in (65536, 4096, 1):
            try:
                while True:
                    out.write(chunk[:size])
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
    return filler


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


def unmount(target: Path) -> None:
    # Lazy: the server under test may still hold files there when a test fails half-way.
    subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


def mount_unavailable_reason(probe_dir: Path) -> str | None:
    """None when this process may mount a tmpfs (root with CAP_SYS_ADMIN); else why not."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    probe_dir.mkdir(parents=True, exist_ok=True)
    try:
        mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe_dir))
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or str(error)
        return f"mount -t tmpfs failed here: {detail.strip()}"
    unmount(probe_dir)
    return None


@contextlib.contextmanager
def tmpfs(target: Path, size: str) -> Iterator[Path]:
    target.mkdir(parents=True, exist_ok=True)
    mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target))
    try:
        yield target
    finally:
        unmount(target)


@contextlib.contextmanager
def read_only_view(source: Path, target: Path) -> Iterator[Path]:
    """`source` seen read-only at `target` (a bind mount remounted ro): root cannot write there."""
    target.mkdir(parents=True, exist_ok=True)
    mount("--bind", str(source), str(target))
    try:
        mount("-o", "remount,bind,ro", str(target))
        yield target
    finally:
        unmount(target)


def make_writable(target: Path) -> None:
    mount("-o", "remount,bind,rw", str(target))


def sigkill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
