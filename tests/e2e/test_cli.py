"""The `fhirauth` command as an operator runs it: seeding, serving with a seed, a database coming back."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from support.server import (
    REPO_ROOT,
    ROOT_CLIENT_SECRET,
    LiveServerFactory,
    fhirauth_command,
    fhirauth_environment,
    free_port,
    wait_for_status,
)

from fhirauth.app import INDEXES
from fhirauth.clock import system_clock
from fhirauth.resources.secrets import redact
from fhirauth.storage.backends import open_storage

DEMO = REPO_ROOT / "seed" / "demo.json"
ROOT_AUTH = ("root", ROOT_CLIENT_SECRET)


def fhirauth(storage: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        fhirauth_command(*args),
        cwd=cwd,
        env=fhirauth_environment(storage),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def stored_versions(storage_url: str) -> dict[str, str]:
    """`Type/id` → versionId of every live resource in the store."""
    storage = open_storage(storage_url, system_clock)
    await storage.start(INDEXES)
    try:
        docs = await storage.all_resources()
    finally:
        await storage.close()
    return {f"{doc['resourceType']}/{doc['id']}": doc["meta"]["versionId"] for doc in docs}


async def stored(storage_url: str, resource_type: str, id: str) -> dict[str, Any] | None:
    storage = open_storage(storage_url, system_clock)
    await storage.start(INDEXES)
    try:
        found = await storage.get(resource_type, id)
    finally:
        await storage.close()
    return None if found is None else found.document


async def test_seeding_the_demo_twice_changes_nothing(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'store.db'}"

    first = fhirauth(storage, tmp_path, "seed", str(DEMO))
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"seeded 1 file(s) into {storage}\n"
    expected = {
        "AuthConfig/app": "1",
        "Client/web": "1",
        "Client/demo-app": "1",
        "Client/two-factor-webhook": "1",
        "AidboxConfig/provider": "1",
        "User/demo": "1",
    }
    assert await stored_versions(storage) == expected

    # Conditional creates find their resource; PUTs of the same content write nothing.
    second = fhirauth(storage, tmp_path, "seed", str(DEMO))
    assert second.returncode == 0, second.stderr
    assert await stored_versions(storage) == expected


async def test_a_bad_entry_fails_the_seed_and_names_the_file_and_entry(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'store.db'}"
    bundle = tmp_path / "broken.json"
    bundle.write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "request": {"method": "PUT", "url": "/Client/fine"},
                        "resource": {"resourceType": "Client"},
                    },
                    {
                        "request": {"method": "PUT", "url": "/User/bad"},
                        "resource": {"resourceType": "User", "email": 42},
                    },
                ],
            }
        )
    )

    result = fhirauth(storage, tmp_path, "seed", str(bundle))

    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"fhirauth: seed failed: {bundle}: Bundle.entry[1]: User.email: expected string"
    )
    # A transaction is all or nothing: the good first entry was not written either.
    assert await stored_versions(storage) == {}


async def test_a_yaml_bundle_seeds(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'store.db'}"
    bundle = tmp_path / "users.yaml"
    bundle.write_text(
        "resourceType: Bundle\n"
        "type: transaction\n"
        "entry:\n"
        "  - request: {method: PUT, url: /User/yaml-user}\n"
        "    resource:\n"
        "      resourceType: User\n"
        "      email: yaml@example.com\n"
        "      name: {givenName: Yaml, familyName: User}\n"
    )

    result = fhirauth(storage, tmp_path, "seed", str(bundle))

    assert result.returncode == 0, result.stderr
    user = await stored(storage, "User", "yaml-user")
    assert user is not None
    assert {k: v for k, v in user.items() if k != "meta"} == {
        "resourceType": "User",
        "id": "yaml-user",
        "email": "yaml@example.com",
        "name": {"givenName": "Yaml", "familyName": "User"},
    }
    assert user["meta"]["versionId"] == "1"


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_with_a_seed_serves_the_demo_auth_config(
    workers: int, live_server_factory: LiveServerFactory
) -> None:
    # One worker seeds in its lifespan; several are seeded once by the parent before it forks.
    server = live_server_factory(seed=[DEMO], workers=workers)

    health = httpx2.get(f"{server.url}/health")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})

    response = httpx2.get(f"{server.url}/AuthConfig/app", auth=ROOT_AUTH)
    assert response.status_code == 200
    demo_entry = json.loads(DEMO.read_text())["entry"][0]
    assert demo_entry["request"] == {"method": "PUT", "url": "/AuthConfig/app"}
    body = response.json()
    assert body["meta"]["versionId"] == "1"
    # Secret fields (the webhook's headers) are stored but never read back.
    assert {k: v for k, v in body.items() if k != "meta"} == redact({**demo_entry["resource"], "id": "app"})


@contextmanager
def secantus_on(port: int, home: Path) -> Iterator[None]:
    home.mkdir()
    with (home / "secantusd.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(port)]
            + ["--storage-path", str(home / "data")],
            cwd=home,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_listener(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_unreachable_mongo_answers_503_until_it_comes_back(
    live_server_factory: LiveServerFactory, tmp_path: Path
) -> None:
    port = free_port()
    server = live_server_factory(storage=f"mongodb://127.0.0.1:{port}/recovery", ready_statuses=(503,))

    health = httpx2.get(f"{server.url}/health", timeout=10)
    assert (health.status_code, health.json()) == (503, {"status": "unavailable", "storage": "unreachable"})
    assert server.returncode is None

    with secantus_on(port, tmp_path / "secantus"):
        wait_for_listener(port, timeout=30)
        wait_for_status(f"{server.url}/health", {200}, timeout=5.0)

        # Start-up finished late but completely: indexes exist and writes go through.
        created = httpx2.put(
            f"{server.url}/User/back",
            json={"resourceType": "User", "email": "back@example.com"},
            auth=ROOT_AUTH,
        )
        assert created.status_code == 201
        found = httpx2.get(f"{server.url}/User", params={"email": "back@example.com"}, auth=ROOT_AUTH)
        assert [entry["resource"]["id"] for entry in found.json()["entry"]] == ["back"]
