"""Background upkeep of a running server: removing expired records from storage."""

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
    """Forever: every `interval` seconds, delete records past their expiry.

    Reads already ignore expired records; this keeps rate-limit windows, used codes and pending
    sign-ins from piling up. Every worker runs it; the deletes are idempotent, so that is harmless.
    """
    while True:
        await sleep(interval)
        try:
            purged = await storage.purge_expired(clock())
        except StorageUnavailable:
            continue
        if purged:
            log.debug("purged %d expired records", purged)
