"""Background upkeep of a running server: removing expired records and history orphans from storage."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fhirauth.clock import Clock
from fhirauth.storage.base import Storage, StorageUnavailable

log = logging.getLogger("fhirauth.maintenance")

PURGE_INTERVAL_SECONDS = 60.0
Sleep = Callable[[float], Awaitable[None]]


async def purge_expired_records(
    storage: Storage,
    clock: Clock,
    *,
    interval: float = PURGE_INTERVAL_SECONDS,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """Forever: every `interval` seconds, delete records past their expiry and history orphans.

    Reads already ignore expired records and orphans; this keeps rate-limit windows, used codes, pending
    sign-ins and the entries of writes that stopped halfway from piling up. Every worker runs it; the
    deletes are idempotent, so that is harmless.
    """
    while True:
        await sleep(interval)
        try:
            purged = await storage.purge_expired(clock())
            orphans = await storage.purge_orphans(clock())
        except StorageUnavailable:
            continue
        if purged:
            log.debug("purged %d expired records", purged)
        if orphans:
            log.info("purged %d history entries of writes that never completed", orphans)
