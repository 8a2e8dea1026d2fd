"""TwoFactorService.verify in-process, on the store the HTTP scenarios used: the 2FA step without HTTP,
bearer authentication or the `disable` write. `python bench/totp_inprocess.py STORAGE_URL USERS_JSON FIRST`."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import orjson

from fhirauth.app import INDEXES, build_services
from fhirauth.clock import system_clock
from fhirauth.settings import Settings
from fhirauth.storage.backends import open_storage
from fhirauth.twofactor import totp


async def verify_each(storage_url: str, users: list[dict[str, str]]) -> tuple[int, float, float]:
    """(accepted, µs per verify call, µs of CPU per call): one current code per user, each user once."""
    settings = Settings(storage=storage_url, secret_key="benchmark-master-secret")
    storage = open_storage(settings.storage, system_clock)
    services = build_services(settings, storage, system_clock)
    await storage.start(INDEXES)
    try:
        step = totp.step_at(time.time())
        codes = [(user["id"], totp.code_at(user["secret"], step)) for user in users]
        accepted = 0
        cpu, started = time.process_time(), time.perf_counter()
        for user_id, code in codes:
            accepted += (await services.twofactor.verify(user_id, code)).accepted
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await services.twofactor.close()
        await storage.close()
    return accepted, 1e6 * elapsed / len(codes), 1e6 * cpu / len(codes)


def main() -> int:
    storage_url, users_file, first = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    users = orjson.loads(users_file.read_bytes())[first:]
    accepted, wall_us, cpu_us = asyncio.run(verify_each(storage_url, users))
    print(
        orjson.dumps(
            {"calls": len(users), "accepted": accepted, "wall_us": wall_us, "cpu_us": cpu_us}
        ).decode()
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
