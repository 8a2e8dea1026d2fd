"""Storage faults against the real server: MongoDB stopped and restarted under load, SQLite workers
killed in the middle of transaction bundles, a read-only and a full disk.

The measured numbers (outage latency, recovery time, bundle counts) are printed; run with `-s`.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, closing
from pathlib import Path

import httpx2
import pytest
from support.faults import (
    Answer,
    MixedLoad,
    SecantusDaemon,
    audit_bundles,
    fill,
    make_writable,
    mount_unavailable_reason,
    read_only_view,
    sigkill_group,
    tmpfs,
    transaction,
    visible_users,
)
from support.mongo import with_database
from support.server import ROOT_CLIENT_SECRET, LiveServerFactory, wait_for_status

pytestmark = pytest.mark.e2e

CLIENT_ID = "faults"
CLIENT_SECRET = "faults-client-secret"
READERS = 5
OUTAGE_SECONDS = 3.0
# The bounds: a 503 within 2 s during the outage, 2xx again within 5 s of the database.
MAX_OUTAGE_LATENCY = 2.0
MAX_RECOVERY = 5.0
_POLL_SECONDS = 0.02
# All the load comes from one address: per-address limits high enough never to refuse it, while the
# limiter still counts every request in storage (and so must fail with the storage, as a 503).
UNLIMITED = {"FHIRAUTH_RATE_LIMIT_TOKEN_IP": "1000000/minute"}


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[SecantusDaemon]:
    daemon = SecantusDaemon(tmp_path / "secantus")
    daemon.start()
    yield daemon
    daemon.close()


@pytest.fixture(scope="module")
def can_mount(tmp_path_factory: pytest.TempPathFactory) -> None:
    reason = mount_unavailable_reason(tmp_path_factory.mktemp("mount-probe") / "probe")
    if reason is not None:
        pytest.skip(f"needs a tmpfs or read-only bind mount: {reason}")


@asynccontextmanager
async def clients(url: str) -> AsyncIterator[tuple[httpx2.AsyncClient, httpx2.AsyncClient]]:
    # Long timeouts: a hang must show up as a measured latency, not as a client-side timeout.
    limits = httpx2.Limits(max_connections=64)
    async with (
        httpx2.AsyncClient(
            base_url=url, auth=("root", ROOT_CLIENT_SECRET), timeout=30.0, limits=limits
        ) as root,
        httpx2.AsyncClient(base_url=url, timeout=30.0, limits=limits) as plain,
    ):
        yield root, plain


async def prepare(root: httpx2.AsyncClient) -> None:
    client = {"resourceType": "Client", "secret": CLIENT_SECRET, "grant_types": ["client_credentials"]}
    assert (await root.put(f"/Client/{CLIENT_ID}", json=client)).status_code == 201
    for n in range(READERS):
        user = {"resourceType": "User", "email": f"reader{n}@faults.example"}
        assert (await root.put(f"/User/reader{n}", json=user)).status_code == 201


async def until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `condition()` until true; return the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(_POLL_SECONDS)
    return time.monotonic()


def truncate_wal(database: Path, timeout: float = 5.0) -> None:
    """Checkpoint the whole WAL of `database` into the file and cut the WAL to zero bytes.

    Once every frame of the WAL is copied into the database file, SQLite's next writer starts again
    from the beginning of the WAL file, over frames already allocated, and the server's checkpointer
    copies the WAL every 0.25 s: a commit that fits in the file's old length needs no new disk space
    and succeeds on a full disk. With the WAL at zero bytes, every commit must grow it.
    """
    wal = database.with_name(database.name + "-wal")
    deadline = time.monotonic() + timeout
    with closing(sqlite3.connect(database, timeout=timeout, isolation_level=None)) as db:
        # Busy (1) while the server's checkpointer holds the checkpoint lock: try again shortly.
        while db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] != 0:
            assert time.monotonic() < deadline, f"could not checkpoint {database} within {timeout} s"
            time.sleep(0.01)
    assert wal.stat().st_size == 0, f"{wal} is {wal.stat().st_size} bytes after a TRUNCATE checkpoint"


def statuses(answers: list[Answer]) -> dict[int | None, int]:
    counted: dict[int | None, int] = {}
    for answer in answers:
        counted[answer.status] = counted.get(answer.status, 0) + 1
    return counted


@pytest.mark.parametrize(
    ("workers", "sig"),
    [(1, signal.SIGKILL), (2, signal.SIGTERM)],
    ids=["1worker-SIGKILL", "2workers-SIGTERM"],
)
async def test_mongo_outage_under_load_answers_503_then_recovers_without_restart(
    workers: int, sig: signal.Signals, daemon: SecantusDaemon, live_server_factory: LiveServerFactory
) -> None:
    server = live_server_factory(storage=with_database(daemon.uri, "faults"), workers=workers, env=UNLIMITED)
    async with clients(server.url) as (root, plain):
        await prepare(root)
        load = MixedLoad(root, plain, CLIENT_ID, CLIENT_SECRET, READERS)
        everything = set(load.operations)
        running = asyncio.create_task(load.run())
        try:
            healthy_from = time.monotonic()
            await until(lambda: load.successes_since(healthy_from) == everything, 10, "every operation 2xx")
            signalled_at, down_at = await asyncio.to_thread(daemon.stop, sig)
            # Real time is what is measured here: the load runs against the dead database meanwhile.
            await asyncio.sleep(OUTAGE_SECONDS)
            restart_at = time.monotonic()
            up_at = await asyncio.to_thread(daemon.start)
            recovered_at = await until(
                lambda: load.successes_since(up_at) == everything, MAX_RECOVERY, "every operation 2xx again"
            )
            steady_from = time.monotonic()
            await until(lambda: load.successes_since(steady_from) == everything, 10, "steady after recovery")
        finally:
            load.stop.set()
            await running
        answers = load.answers

        # Every request that overlapped the outage (signal to the database answering again), with how
        # long it waited on the failed database: from its start, or from the signal if it was in flight.
        overlapping = [a for a in answers if a.finished >= signalled_at and a.started <= up_at]
        waits = [a.finished - max(a.started, signalled_at) for a in overlapping]
        inside = [a for a in answers if a.started >= down_at and a.finished <= restart_at]
        after = [a for a in answers if a.started >= steady_from]
        recovery = recovered_at - up_at
        audit = await audit_bundles(root, answers)
        creates = [a for a in answers if a.operation == "create" and a.marker is not None]
        visible_creates = await visible_users(root, [a.marker or "" for a in creates])
        print(
            f"\n[mongo outage, {workers} worker(s), {sig.name}] requests {len(answers)}; overlapping the "
            f"outage {len(overlapping)} {statuses(overlapping)}, max wait {max(waits):.3f} s (database "
            f"stopped {down_at - signalled_at:.2f} s after the signal, restarted in {up_at - restart_at:.2f} s); "
            f"2xx for every operation {recovery:.3f} s after the database answered; bundles: "
            f"{audit.committed} committed, {audit.uncertain} failed or in flight of which "
            f"{audit.uncertain_visible} fully visible, {len(audit.partial)} partial"
        )

        assert {a.status for a in answers} <= {200, 201, 503}, statuses(answers)
        assert len(inside) >= 10
        assert {(a.status, a.outcome_code) for a in inside} == {(503, "transient")}
        assert all(a.outcome_code == "transient" for a in answers if a.status == 503)
        assert max(waits) < MAX_OUTAGE_LATENCY
        assert recovery < MAX_RECOVERY
        assert {a.status for a in after} <= {200, 201}
        assert audit.partial == []
        assert audit.lost == []
        assert audit.committed > 0 and audit.uncertain > 0
        assert server.returncode is None
        # A single-resource write is its current version plus its history entry: never one alone.
        assert {a.marker for a in creates if a.status == 201} <= visible_creates
        for id in sorted(visible_creates):
            history = await root.get(f"/User/{id}/_history")
            assert history.status_code == 200, f"User/{id} is visible, its history: {history.text}"
            assert [e["response"]["etag"] for e in history.json()["entry"]] == ['W/"1"'], id


async def test_sqlite_workers_killed_mid_transaction_leave_every_bundle_whole(
    tmp_path: Path, live_server_factory: LiveServerFactory
) -> None:
    database = tmp_path / "crash.db"
    storage = f"sqlite:///{database}"
    server = live_server_factory(storage=storage, workers=2)
    async with clients(server.url) as (root, plain):
        load = MixedLoad(
            root, plain, CLIENT_ID, CLIENT_SECRET, READERS, concurrency=32, operations=("bundle",)
        )
        running = asyncio.create_task(load.run())
        await until(lambda: sum(a.status == 200 for a in load.answers) >= 100, 20, "100 bundles committed")
        sigkill_group(server.pid)
        killed_at = time.monotonic()
        load.stop.set()
        await running
        answers = load.answers
    server.stop()
    in_flight = sum(a.status is None and a.started < killed_at for a in answers)

    with sqlite3.connect(database) as check:
        integrity = check.execute("PRAGMA integrity_check").fetchall()
    restarted = live_server_factory(storage=storage, workers=1)
    async with clients(restarted.url) as (root, _plain):
        audit = await audit_bundles(root, answers)
        after = await root.post("/", json=transaction("after-restart"))
    print(
        f"\n[sqlite SIGKILL, 2 workers] bundles sent {len(answers)}: {audit.committed} committed, "
        f"{in_flight} in flight when killed, of which {audit.uncertain_visible} fully visible, "
        f"{len(audit.partial)} partial; integrity_check {integrity[0][0]}"
    )

    assert {a.status for a in answers} <= {200, None}
    assert in_flight > 0
    assert integrity == [("ok",)]
    assert audit.partial == []
    assert audit.lost == []
    assert after.status_code == 200
    assert "Traceback" not in restarted.output()


async def test_sqlite_on_a_full_disk_refuses_writes_with_503_and_keeps_reading(
    can_mount: None, tmp_path: Path, live_server_factory: LiveServerFactory
) -> None:
    # A 2 MB tmpfs (`mount -t tmpfs -o size=2m`) holds the database; a filler file then takes the rest.
    # The WAL is cut to zero bytes first: a WAL that was fully checkpointed (the server's checkpointer
    # runs every 0.25 s) is written again from its start, and writes that fit in its old length need
    # no new space, so they rightly succeed on a full disk. Without it, this test failed about 1 run in
    # 15 with the PUT and the bundle answering 201 and 200 (and kept, as they should be).
    with tmpfs(tmp_path / "disk", "2m") as disk:
        database = disk / "full.db"
        server = live_server_factory(storage=f"sqlite:///{database}")
        async with clients(server.url) as (root, plain):
            await prepare(root)
            truncate_wal(database)
            filler = fill(disk)
            put = await root.put("/User/during", json={"resourceType": "User", "email": "d@faults.example"})
            bundle = await root.post("/", json=transaction("full"))
            token = await plain.post(
                "/auth/token", data={"grant_type": "client_credentials"}, auth=(CLIENT_ID, CLIENT_SECRET)
            )
            read = await root.get("/User/reader0")
            search = await root.get("/User", params={"email": "reader1@faults.example"})
            health = await root.get("/health")
            filler.unlink()
            again = await root.put("/User/after", json={"resourceType": "User", "email": "a@faults.example"})
            visible = await visible_users(root, ["during", "full-0", "full-1", "full-2", "after"])
        server.stop()
    print(
        f"\n[sqlite full disk] PUT {put.status_code}, bundle {bundle.status_code}, token {token.status_code}, "
        f"read {read.status_code}, search {search.status_code}, /health {health.status_code}; "
        f"space freed: PUT {again.status_code}"
    )

    for refused in (put, bundle, token):
        assert refused.status_code == 503, refused.text
        assert refused.json()["issue"][0]["code"] == "transient"
        assert refused.headers["retry-after"] == "1"
    assert (read.status_code, read.json()["id"]) == (200, "reader0")
    assert (search.status_code, search.json()["total"]) == (200, 1)
    assert health.status_code == 200
    assert again.status_code == 201
    assert visible == {"after"}
    assert "Traceback" not in server.output()


async def test_sqlite_on_a_read_only_disk_serves_reads_and_refuses_writes_with_503(
    can_mount: None, tmp_path: Path, live_server_factory: LiveServerFactory
) -> None:
    # A second instance on a read-only view (`mount --bind` + `remount,bind,ro`, which binds root too)
    # of a database that the first instance keeps open, so SQLite's WAL index exists for readers.
    volume = tmp_path / "volume"
    volume.mkdir()
    writer = live_server_factory(storage=f"sqlite:///{volume / 'shared.db'}")
    async with clients(writer.url) as (root, _plain):
        await prepare(root)
    with read_only_view(volume, tmp_path / "read-only") as view:
        reader = live_server_factory(storage=f"sqlite:///{view / 'shared.db'}")
        async with clients(reader.url) as (root, plain):
            read = await root.get("/User/reader0")
            search = await root.get("/User", params={"email": "reader1@faults.example"})
            put = await root.put("/User/ro", json={"resourceType": "User", "email": "ro@faults.example"})
            bundle = await root.post("/", json=transaction("ro"))
            token = await plain.post(
                "/auth/token", data={"grant_type": "client_credentials"}, auth=(CLIENT_ID, CLIENT_SECRET)
            )
        reader.stop()
    print(
        f"\n[sqlite read-only view] read {read.status_code}, search {search.status_code}; "
        f"PUT {put.status_code}, bundle {bundle.status_code}, token {token.status_code}"
    )

    assert (read.status_code, read.json()["id"]) == (200, "reader0")
    assert (search.status_code, search.json()["total"]) == (200, 1)
    for refused in (put, bundle, token):
        assert refused.status_code == 503, refused.text
        assert refused.json()["issue"][0]["code"] == "transient"
    assert "Traceback" not in reader.output()


async def test_sqlite_database_on_a_read_only_volume_at_start_answers_503_until_writable(
    can_mount: None, tmp_path: Path, live_server_factory: LiveServerFactory
) -> None:
    # Closed cleanly, a WAL database leaves no -wal/-shm files, and SQLite cannot open it read-only
    # without them: every request is a 503 (reads too) until the volume is writable again.
    volume = tmp_path / "volume"
    volume.mkdir()
    first = live_server_factory(storage=f"sqlite:///{volume / 'fhirauth.db'}")
    async with clients(first.url) as (root, _plain):
        await prepare(root)
    first.stop()
    assert sorted(path.name for path in volume.iterdir()) == ["fhirauth.db"]

    with read_only_view(volume, tmp_path / "mounted") as view:
        server = live_server_factory(storage=f"sqlite:///{view / 'fhirauth.db'}", ready_statuses=(503,))
        async with clients(server.url) as (root, _plain):
            read = await root.get("/User/reader0")
            put = await root.put("/User/ro", json={"resourceType": "User", "email": "ro@faults.example"})
            make_writable(view)
            started = time.monotonic()
            await asyncio.to_thread(wait_for_status, f"{server.url}/health", (200,), MAX_RECOVERY)
            recovery = time.monotonic() - started
            again = await root.put("/User/ro", json={"resourceType": "User", "email": "ro@faults.example"})
        server.stop()
    print(f"\n[sqlite read-only volume at start] writable again → /health 200 in {recovery:.2f} s")

    for refused in (read, put):
        assert refused.status_code == 503, refused.text
        assert refused.json()["issue"][0]["code"] == "transient"
    assert again.status_code == 201
    assert "Traceback" not in server.output()
