"""The driver's floor: CPU per call of bare pymongo asyncio calls beside fhirauth's storage calls.

`.venv/bin/python bench/mongo_driver_floor.py [--calls N] [--concurrency 1,64]` starts SecantusDB in its
own process (or uses --uri), seeds a few Users through MongoStorage, then times, in this process, each
pair of (bare driver call, MongoStorage call that sends it) with `time.process_time()` per call: the
CPU this process spends, the database's excluded. What MongoStorage adds over the bare call is ours;
the bare call is what any code on this driver pays.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient, ReadPreference, WriteConcern
from pymongo.read_concern import ReadConcern
from servers import secantus_server

from fhirauth.clock import system_clock
from fhirauth.storage.base import Create, Filter, Index, Query
from fhirauth.storage.mongo import _CLIENT_OPTIONS, MongoStorage

USERS = 200
Call = Callable[[int], Awaitable[Any]]


def user(n: int, prefix: str = "u") -> dict[str, Any]:
    return {
        "resourceType": "User",
        "id": f"{prefix}{n}",
        "meta": {"versionId": "1", "lastUpdated": "2026-12-06T00:00:00Z"},
        "email": f"{prefix}{n}@floor.example",
        "name": {"givenName": "Floor", "familyName": f"User {n}"},
    }


async def cpu_per_call(call: Call, calls: int, concurrency: int) -> float:
    """Microseconds of this process's CPU per call, `concurrency` calls in flight."""
    counter = itertools.count()

    async def worker() -> None:
        while (n := next(counter)) < calls:
            await call(n)

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return 1e6 * (time.process_time() - started) / calls


async def measure(uri: str, calls: int, concurrencies: list[int], repeats: int) -> None:
    url = f"{uri.rstrip('/')}/floor"
    storage = MongoStorage(url, system_clock)

    await storage.start([Index("User", "email", unique=True)])
    if await storage.get("User", "u0") is None:
        for n in range(USERS):
            await storage.write([Create(user(n))])
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, **_CLIENT_OPTIONS)
    db = client.get_default_database(
        read_preference=ReadPreference.PRIMARY,
        write_concern=WriteConcern("majority", j=True),
        read_concern=ReadConcern("majority"),
    )
    users, scratch = db["User"], db["Floor"]
    run = int(time.time())
    unique = itertools.count()

    async def bare_get(n: int) -> Any:
        return await users.find_one({"_id": f"u{n % USERS}"})

    async def our_get(n: int) -> Any:
        return await storage.get("User", f"u{n % USERS}")

    async def bare_search(n: int) -> Any:
        cursor = users.find({"_deleted": False, "resource.email": {"$in": [f"u{n % USERS}@floor.example"]}})
        return [row async for row in cursor]

    async def our_search(n: int) -> Any:
        query = Query(filters=(Filter("email", (f"u{n % USERS}@floor.example",)),))
        return await storage.search("User", query)

    async def bare_insert(n: int) -> Any:
        return await scratch.insert_one({"_id": f"{run}-{next(unique)}", **user(n)})

    async def bare_two_inserts(n: int) -> Any:
        key = f"{run}-{next(unique)}"
        await scratch.insert_one({"_id": f"h{key}", **user(n)})
        return await scratch.insert_one({"_id": key, **user(n)})

    async def our_create(n: int) -> Any:
        return await storage.write([Create(user(n, prefix=f"c{run}-{next(unique)}-"))])

    pairs: list[tuple[str, Call, Call]] = [
        ("read by id: find_one / MongoStorage.get", bare_get, our_get),
        ("search by email: find / MongoStorage.search", bare_search, our_search),
        ("create: 2 × insert_one / MongoStorage.write([Create])", bare_two_inserts, our_create),
        ("one insert_one (for scale)", bare_insert, bare_insert),
    ]
    print("| call | concurrency | bare driver, µs CPU/call | MongoStorage, µs CPU/call | ratio |")
    print("|---|---:|---:|---:|---:|")
    for (name, bare, ours), asked in itertools.product(pairs, concurrencies):
        # SecantusDB under 64 concurrent inserts times some out, and pymongo's retry of a landed insert
        # is then refused as a duplicate: writes run at most 8 at a time.
        concurrency = asked if name.startswith(("read", "search")) else min(asked, 8)
        await cpu_per_call(bare, min(calls, 200), concurrency)
        await cpu_per_call(ours, min(calls, 200), concurrency)
        bare_us, our_us = [], []
        for _ in range(repeats):
            bare_us.append(await cpu_per_call(bare, calls, concurrency))
            our_us.append(await cpu_per_call(ours, calls, concurrency))
        b, o = statistics.median(bare_us), statistics.median(our_us)
        print(
            f"| {name} | {concurrency} | {b:.0f} ({min(bare_us):.0f}–{max(bare_us):.0f}) "
            f"| {o:.0f} ({min(our_us):.0f}–{max(our_us):.0f}) | {o / b:.2f} |",
            flush=True,
        )
    await client.close()
    await storage.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", help="a running MongoDB (default: a SecantusDB started for the run)")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=lambda v: [int(c) for c in v.split(",")], default=[1, 64])
    args = parser.parse_args()
    with ExitStack() as stack:
        uri = args.uri
        if uri is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mongo-floor-")))
            uri, _process = stack.enter_context(secantus_server(work))
        asyncio.run(measure(uri, args.calls, args.concurrency, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
