"""MongoDB commands per request: `fhirauth serve` under pymongo's command monitoring, for the bench only.

Run as a script, this module registers a `CommandListener` before fhirauth is imported and then runs
`fhirauth.cli` with its arguments. Every process that loads it (uvicorn's workers re-import the main
module) counts the commands its clients start and writes the counts by command name to
`$BENCH_MONGO_COMMANDS_DIR/<pid>.json` a few times a second. `counted_fhirauth_server` starts it;
`command_counts` sums the files.

The listener makes every command dearer (pymongo builds an event object for each), so the bench counts
in a run of its own and never in the run whose CPU it measures.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from pymongo import monitoring

DIRECTORY_ENV = "BENCH_MONGO_COMMANDS_DIR"
_WRITE_INTERVAL_SECONDS = 0.1


class _Counter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.counts[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _publish(counter: _Counter, directory: Path) -> None:
    path, written = directory / f"{os.getpid()}.json", None
    while True:
        counts = dict(counter.counts)
        if counts != written:
            partial = path.with_suffix(".partial")
            partial.write_text(json.dumps(counts))
            partial.replace(path)
            written = counts
        time.sleep(_WRITE_INTERVAL_SECONDS)


def _install() -> None:
    directory = os.environ.get(DIRECTORY_ENV)
    if directory is None:
        return
    counter = _Counter()
    monitoring.register(counter)
    threading.Thread(target=_publish, args=(counter, Path(directory)), daemon=True).start()


def command_counts(directory: Path) -> Counter[str]:
    """The commands started so far by every process of a counted server, by command name."""
    total: Counter[str] = Counter()
    for path in directory.glob("*.json"):
        total.update(json.loads(path.read_text()))
    return total


def settled_counts(directory: Path, timeout: float = 15.0) -> Counter[str]:
    """`command_counts` once they stop moving: the server has finished what a load run left in flight."""
    deadline = time.monotonic() + timeout
    before = command_counts(directory)
    while time.monotonic() < deadline:
        time.sleep(3 * _WRITE_INTERVAL_SECONDS)
        now = command_counts(directory)
        if now == before:
            return now
        before = now
    return before


@contextmanager
def counted_fhirauth_server(
    storage: str,
    *,
    workers: int,
    workdir: Path,
    source: Path,
    counts: Path,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[tuple[str, object]]:
    """`servers.fhirauth_server`, with every process counting its MongoDB commands into `counts`."""
    from servers import Process, fhirauth_env, free_port, wait_http

    counts.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, str(Path(__file__).resolve()), "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(workers)]
    env = {**fhirauth_env(storage, url, source), **(extra_env or {}), DIRECTORY_ENV: str(counts)}
    process = Process("fhirauth-counted", command, workdir=workdir, env=env)
    try:
        wait_http(f"{url}/health", process)
        yield url, process
    finally:
        process.stop()


_install()

if __name__ == "__main__":
    from fhirauth.cli import main

    sys.argv[0] = "fhirauth"
    sys.exit(main())
