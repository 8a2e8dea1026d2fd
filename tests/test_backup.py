"""`fhirauth export` and the restore side of `fhirauth seed`, in process on SQLite: what the file
carries, and every refusal (a wrong master secret, another pepper, a backup given to `serve --seed`)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from fhirauth.app import INDEXES, build_services
from fhirauth.auth import keys
from fhirauth.backup import export_bundle, restore_file
from fhirauth.clock import ManualClock
from fhirauth.seeding import RECORD_CONTENT_TYPE, SeedError, seed_file
from fhirauth.services import Services
from fhirauth.settings import Settings
from fhirauth.storage.backends import open_storage
from fhirauth.twofactor import pepper, totp
from fhirauth.twofactor.guard import Reason
from fhirauth.twofactor.pepper import RecoveryPepper

SECRET = "backup-test-master-secret"
PASSWORD = "a-password-for-the-backup"
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"

Factory = Callable[..., Any]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def server(clock: ManualClock) -> AsyncIterator[Factory]:
    """`await server(secret)`: services over a fresh in-memory SQLite store."""
    opened = []

    async def start(secret: str = SECRET) -> Services:
        storage = open_storage("sqlite://:memory:", clock)
        await storage.start(INDEXES)
        opened.append(storage)
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            storage="sqlite://:memory:",
            secret_key=SecretStr(secret),
            root_client_secret=SecretStr("secret"),
        )
        return build_services(settings, storage, clock)

    yield start
    for storage in opened:
        await storage.close()


async def _dataset(services: Services, clock: ManualClock) -> list[str]:
    await services.resources.create(
        "Client", {"id": "app", "secret": "app-secret", "grant_types": ["password"]}
    )
    await services.resources.create("User", {"id": "ann", "email": "ann@example.org", "password": PASSWORD})
    await services.resources.create("User", {"id": "bob", "password": PASSWORD})
    secret = (await services.twofactor.begin_enrollment("bob", sign_in="bob-session")).secret
    await services.keys.load()
    return await services.twofactor.confirm_enrollment(
        "bob", totp.code_at(secret, totp.step_at(clock().timestamp())), sign_in="bob-session"
    )


async def _export(services: Services, clock: ManualClock, path: Path) -> dict[str, Any]:
    bundle = await export_bundle(services.storage, clock)
    path.write_text(json.dumps(bundle))
    return bundle


def _by_type(bundle: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        entry["resource"]["id"]: entry["resource"]
        for entry in bundle["entry"]
        if entry["resource"]["resourceType"] == resource_type
    }


async def test_the_export_keeps_secrets_in_their_stored_form_and_carries_the_records(
    server: Factory, clock: ManualClock, tmp_path: Path
) -> None:
    source = await server()
    codes = await _dataset(source, clock)
    bundle = await _export(source, clock, tmp_path / "backup.json")
    assert (bundle["resourceType"], bundle["type"], bundle["timestamp"]) == (
        "Bundle",
        "collection",
        "2026-01-01T00:00:00.000Z",
    )
    users = _by_type(bundle, "User")
    assert users["ann"]["password"].startswith("$argon2id$")
    assert users["bob"]["twoFactor"]["secretKey"].startswith(f"fa1:{source.box.primary_kid}:")
    recovery = await RecoveryPepper(source.storage, source.box).codes()
    assert users["bob"]["twoFactor"]["recoveryCodes"] == [recovery.digest(code) for code in codes]
    assert _by_type(bundle, "Client")["app"]["secret"].startswith("$argon2id$")
    records = {}
    for binary in _by_type(bundle, "Binary").values():
        assert binary["contentType"] == RECORD_CONTENT_TYPE
        record = json.loads(base64.b64decode(binary["data"]))
        records[(record["kind"], record["key"])] = record["document"]
    assert set(records) == {(keys.KIND, keys.KEY), (pepper.KIND, pepper.KEY)}
    assert (await source.storage.record_get(keys.KIND, keys.KEY)).document == records[(keys.KIND, keys.KEY)]
    text = (tmp_path / "backup.json").read_text()
    for plain in (PASSWORD, "app-secret", *codes):
        assert plain not in text


async def test_a_restore_signs_in_and_a_second_restore_changes_nothing(
    server: Factory, clock: ManualClock, tmp_path: Path
) -> None:
    source = await server()
    codes = await _dataset(source, clock)
    bundle = await _export(source, clock, tmp_path / "backup.json")
    target = await server()
    await restore_file(target.bundles, target.box, tmp_path / "backup.json")
    assert (await target.twofactor.verify("bob", codes[0])).reason is Reason.ACCEPTED
    assert await target.logins.find_user("ann@example.org") is not None
    assert await target.keys.jwks() == await source.keys.jwks()
    before = {
        (d["resourceType"], d["id"]): d["meta"]["versionId"] for d in await target.storage.all_resources()
    }

    result = await restore_file(target.bundles, target.box, tmp_path / "backup.json")
    after = {
        (d["resourceType"], d["id"]): d["meta"]["versionId"] for d in await target.storage.all_resources()
    }
    # bob spent a recovery code after the first restore: the second one puts it back (a restore
    # returns the data to the backup's state), every other resource is left as it is.
    assert {key: version for key, version in after.items() if before[key] != version} == {
        ("User", "bob"): "3"
    }
    resources = [entry for entry in bundle["entry"] if entry["resource"]["resourceType"] != "Binary"]
    assert [entry["response"]["status"] for entry in result["entry"]] == ["200 OK"] * len(resources)


async def test_a_wrong_master_secret_writes_nothing(
    server: Factory, clock: ManualClock, tmp_path: Path
) -> None:
    source = await server()
    await _dataset(source, clock)
    await _export(source, clock, tmp_path / "backup.json")
    stranger = await server("someone-elses-master-secret")
    with pytest.raises(SeedError, match="1 encrypted values do not open .* User/bob twoFactor.secretKey"):
        await restore_file(stranger.bundles, stranger.box, tmp_path / "backup.json")
    assert await stranger.storage.all_resources() == []
    assert await stranger.storage.record_get(keys.KIND, keys.KEY) is None
    assert await stranger.storage.record_get(pepper.KIND, pepper.KEY) is None


async def test_a_store_with_another_pepper_refuses_the_backup(
    server: Factory, clock: ManualClock, tmp_path: Path
) -> None:
    source = await server()
    await _dataset(source, clock)
    await _export(source, clock, tmp_path / "backup.json")
    target = await server()
    await target.storage.record_put(
        pepper.KIND,
        pepper.KEY,
        {"pepper": target.box.encrypt("b3RoZXItcGVwcGVyLTAxMjM0NTY3", aad="recovery-code pepper")},
        expected_rev=None,
    )
    with pytest.raises(SeedError, match="another pepper; restore into an empty store"):
        await restore_file(target.bundles, target.box, tmp_path / "backup.json")
    assert await target.storage.all_resources() == []
    assert await target.storage.record_get(keys.KIND, keys.KEY) is None


async def test_a_store_with_its_own_signing_key_keeps_signing_and_publishes_the_backups(
    server: Factory, clock: ManualClock, tmp_path: Path
) -> None:
    source = await server()
    await _dataset(source, clock)
    await _export(source, clock, tmp_path / "backup.json")
    target = await server()
    own = [key["kid"] for key in (await target.keys.jwks())["keys"]]
    theirs = [key["kid"] for key in (await source.keys.jwks())["keys"]]
    await restore_file(target.bundles, target.box, tmp_path / "backup.json")
    clock.advance(keys.RELOAD_SECONDS)
    # Each algorithm's set: the store's own key, which keeps signing, then the backup's.
    assert [key["kid"] for key in (await target.keys.jwks())["keys"]] == [
        kid for pair in zip(own, theirs, strict=True) for kid in pair
    ]


async def test_serve_seed_and_broken_records_are_refused(
    server: Factory, clock: ManualClock, tmp_path: Path
) -> None:
    source = await server()
    await _dataset(source, clock)
    bundle = await _export(source, clock, tmp_path / "backup.json")
    target = await server()
    with pytest.raises(SeedError, match="a backup from `fhirauth export`; restore it with `fhirauth seed"):
        await seed_file(target.bundles, tmp_path / "backup.json")
    binary = next(entry for entry in bundle["entry"] if entry["resource"]["resourceType"] == "Binary")
    for data, message in (
        ("not base64!", "entry\\[0\\] is not a storage record"),
        (
            base64.b64encode(b'{"kind": "rate-limit", "key": "x", "document": {}}').decode(),
            "does not restore",
        ),
    ):
        binary["resource"]["data"] = data
        (tmp_path / "broken.json").write_text(json.dumps(bundle))
        with pytest.raises(SeedError, match=message):
            await restore_file(target.bundles, target.box, tmp_path / "broken.json")
    assert await target.storage.all_resources() == []
