"""TwoFactorService.verify in-process, on the store the HTTP scenarios used: the 2FA step without HTTP,
bearer authentication or the `disable` write. `python bench/totp_inprocess.py STORAGE_URL USERS_JSON FIRST`.

Two rounds over the same users: each user's first check (its guard state is created, after looking
once for a lock of the guard's earlier layout) with the current step's code; then, once the next step
has begun, a check with its code, as every later sign-in is. Each round has its step and the next
(the default window accepts one past step) to finish in, whatever the backend's speed.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import orjson

from fhirauth.app import INDEXES, build_services
from fhirauth.clock import system_clock
from fhirauth.services import Services
from fhirauth.settings import Settings
from fhirauth.storage.backends import open_storage
from fhirauth.twofactor import totp


async def verify_each(storage_url: str, users: list[dict[str, str]]) -> dict[str, float]:
    """Per round: accepted calls, µs per verify call and µs of CPU per call."""
    settings = Settings(storage=storage_url, secret_key="benchmark-master-secret")
    storage = open_storage(settings.storage, system_clock)
    services = build_services(settings, storage, system_clock)
    await storage.start(INDEXES)
    try:
        step = totp.step_at(time.time())
        first = await _round(services, [(user["id"], totp.code_at(user["secret"], step)) for user in users])
        await asyncio.sleep(max(0.0, (step + 1) * totp.PERIOD - time.time()))
        step = totp.step_at(time.time())
        again = await _round(services, [(user["id"], totp.code_at(user["secret"], step)) for user in users])
    finally:
        await services.twofactor.close()
        await storage.close()
    return {
        "calls": len(users),
        **first,
        **{f"again_{name}": value for name, value in again.items()},
    }


async def _round(services: Services, codes: list[tuple[str, str]]) -> dict[str, float]:
    accepted = 0
    cpu, started = time.process_time(), time.perf_counter()
    for user_id, code in codes:
        accepted += (await services.twofactor.verify(user_id, code)).accepted
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"accepted": accepted, "wall_us": 1e6 * elapsed / len(codes), "cpu_us": 1e6 * cpu / len(codes)}


def main() -> int:
    storage_url, users_file, first = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    users = orjson.loads(users_file.read_bytes())[first:]
    print(orjson.dumps(asyncio.run(verify_each(storage_url, users))).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
