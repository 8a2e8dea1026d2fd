"""A SecantusDB daemon in its own process, for tests that need a MongoDB wire-protocol server."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pymongo import MongoClient
from pymongo.errors import PyMongoError

_START_TIMEOUT_SECONDS = 30.0
# The data directory is thrown away, so a slow clean shutdown (2–7 s) is not worth waiting for.
_STOP_TIMEOUT_SECONDS = 3.0


@contextmanager
def secantus_server() -> Iterator[str]:
    """Start `secantusd-py` on a free port with a throw-away storage directory; yield its URI."""
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="secantus-") as home:
        log_path = Path(home) / "secantusd.log"
        with log_path.open("wb") as log:
            # `python -m secantus` is the `secantusd-py` daemon run by this interpreter, so the venv's
            # copy is used whatever PATH says. cwd=home keeps it from finding a stray ./secantusd.toml.
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "secantus",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--storage-path",
                    str(Path(home) / "data"),
                ],
                cwd=home,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                uri = f"mongodb://127.0.0.1:{port}/"
                _wait_for_ping(uri, process, log_path)
                yield uri
            finally:
                process.terminate()
                try:
                    process.wait(_STOP_TIMEOUT_SECONDS)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def with_database(uri: str, database: str) -> str:
    """`uri` with its path (the default database) replaced by `database`, query options kept."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(path=f"/{database}"))


def drop_database(uri: str) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=5000)
    with client:
        client.drop_database(client.get_default_database().name)


def _wait_for_ping(uri: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_SECONDS
    client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=250, connectTimeoutMS=250)
    with client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"secantusd-py exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                client.admin.command("ping")
                return
            except PyMongoError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"secantusd-py did not answer within {_START_TIMEOUT_SECONDS} s"
                    ) from None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
