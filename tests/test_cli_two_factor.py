"""`fhirauth two-factor reset USER` against a real SQLite store, through the real command."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from fhirauth.clock import system_clock
from fhirauth.storage.backends import open_storage
from fhirauth.storage.base import Filter, Query


def _fhirauth(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "FHIRAUTH_STORAGE": f"sqlite:///{tmp_path}/store.db",
        "FHIRAUTH_SECRET_KEY": "cli-test-master-secret",
        "FHIRAUTH_ROOT_CLIENT_SECRET": "secret",
    }
    return subprocess.run(
        [sys.executable, "-m", "fhirauth.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


async def _read(tmp_path: Path) -> tuple[dict, list[dict]]:
    storage = open_storage(f"sqlite:///{tmp_path}/store.db", system_clock)
    await storage.start([])
    try:
        user = await storage.get("User", "lost")
        assert user is not None
        events = await storage.search("AuditEvent", Query(filters=(Filter("action", ("2fa-reset",)),)))
        return user.document, events.items
    finally:
        await storage.close()


def test_reset_turns_two_factor_off(tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "User",
                    "id": "lost",
                    "email": "lost@example.org",
                    "twoFactor": {"enabled": True, "secretKey": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"},
                }
            }
        ],
    }
    (tmp_path / "users.json").write_text(json.dumps(bundle))
    assert _fhirauth(tmp_path, "seed", str(tmp_path / "users.json")).returncode == 0

    result = _fhirauth(tmp_path, "two-factor", "reset", "lost@example.org")

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "two-factor authentication is off for User/lost: its authenticator-app secret, passkeys and "
        "trusted devices are removed; the next enrolment makes a new secret\n"
    )
    user, events = asyncio.run(_read(tmp_path))
    assert user["twoFactor"] == {"enabled": False}
    assert len(events) == 1
    assert events[0]["outcome"] == "success"


def test_reset_of_an_unknown_user_fails(tmp_path: Path) -> None:
    result = _fhirauth(tmp_path, "two-factor", "reset", "nobody@example.org")
    assert result.returncode == 1
    assert "no user with id, e-mail or userName 'nobody@example.org'" in result.stderr
