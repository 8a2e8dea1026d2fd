"""`fhirauth serve` runs the data migrations (fhirauth/migrations.py) before its workers start."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

from support.server import LiveServerFactory

from fhirauth.app import INDEXES
from fhirauth.clock import isoformat, system_clock
from fhirauth.storage.backends import open_storage
from fhirauth.storage.base import Create

LOCKED_UNTIL = isoformat(system_clock() + timedelta(days=1))


async def old_layout(url: str) -> None:
    store = open_storage(url, system_clock)
    await store.start(INDEXES)
    await store.write([Create({"resourceType": "User", "id": "ann", "meta": {"versionId": "1"}})])
    await store.record_set("2fa-lock", "ann", {"generation": 1, "lockedUntil": LOCKED_UNTIL, "failures": 5})
    await store.record_incr(
        "2fa-failures", "ann/1", expires_at=system_clock() + timedelta(days=365), amount=2
    )
    await store.close()


async def guard_records(url: str) -> dict[str, Any]:
    store = open_storage(url, system_clock)
    await store.start(INDEXES)
    found = {
        f"{kind}/{key}": record.document if record is not None else None
        for kind, key in (("totp-step", "ann"), ("2fa-lock", "ann"), ("2fa-failures", "ann/1"))
        for record in [await store.record_get(kind, key)]
    }
    await store.close()
    return found


def test_serve_converts_the_old_layout_once_before_its_workers_start(
    live_server_factory: LiveServerFactory, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    asyncio.run(old_layout(url))
    server = live_server_factory(storage=url, workers=2)
    server.stop()
    assert "2fa-guard-state: 1 of 1 users converted\n" in server.output()
    assert asyncio.run(guard_records(url)) == {
        "totp-step/ann": {"step": -1, "failures": 2, "earlierFailures": 5, "lockedUntil": LOCKED_UNTIL},
        "2fa-lock/ann": None,
        "2fa-failures/ann/1": None,
    }
    # Completed on this store: the next start does not look again.
    again = live_server_factory(storage=url)
    again.stop()
    assert "2fa-guard-state" not in again.output()
