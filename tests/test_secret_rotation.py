"""Master-secret rotation on both backends: seal under the old secret, rotate with both configured,
then run on the new one alone. TOTP, recovery codes, signing keys and CSRF fields keep working."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr
from support.mongo import drop_database, with_database

from fhirauth.app import INDEXES, build_services
from fhirauth.clock import ManualClock
from fhirauth.http.csrf import Csrf, CsrfRefused
from fhirauth.secret_rotation import Resealed, rotate_secrets
from fhirauth.secretbox import SecretBox, SecretBoxError
from fhirauth.services import Services
from fhirauth.settings import Settings
from fhirauth.storage.backends import open_storage
from fhirauth.storage.base import Storage
from fhirauth.twofactor import totp
from fhirauth.twofactor.guard import Reason
from fhirauth.twofactor.pepper import RecoveryPepper

OLD = "old-master-secret-for-rotation"
NEW = "new-master-secret-for-rotation"
IMPORTED_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def _settings(url: str, secret: str, previous: list[str]) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        storage=url,
        secret_key=SecretStr(secret),
        previous_secret_keys=[SecretStr(each) for each in previous],
        root_client_secret=SecretStr("secret"),
        base_url="http://issuer.test",
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["sqlite", "mongo"])
async def store(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[tuple[str, Storage]]:
    if request.param == "sqlite":
        url = "sqlite://:memory:"
    else:
        url = with_database(request.getfixturevalue("mongo_uri"), f"rotate{uuid.uuid4().hex[:12]}")
    storage = open_storage(url, clock)
    await storage.start(INDEXES)
    yield url, storage
    await storage.close()
    if request.param == "mongo":
        drop_database(url)


def _server(store: tuple[str, Storage], clock: ManualClock, secret: str, *previous: str) -> Services:
    url, storage = store
    return build_services(_settings(url, secret, list(previous)), storage, clock)


def _code(secret: str, clock: ManualClock) -> str:
    return totp.code_at(secret, totp.step_at(clock().timestamp()))


async def _sealed(services: Services, user_id: str) -> str:
    stored = await services.storage.get("User", user_id)
    assert stored is not None
    value: str = stored.document["twoFactor"]["secretKey"]
    return value


def _counts(results: list[Resealed]) -> list[tuple[str, int, int, list[str], list[str]]]:
    return [(r.what, r.resealed, r.current, r.unreadable, r.changing) for r in results]


async def _rotate(services: Services) -> list[Resealed]:
    return await rotate_secrets(
        services.resources, services.keys, RecoveryPepper(services.storage, services.box)
    )


async def test_rotation_moves_every_secret_to_the_new_master_secret(
    store: tuple[str, Storage], clock: ManualClock
) -> None:
    old = _server(store, clock, OLD)
    enrolled: dict[str, str] = {}
    recovery: dict[str, list[str]] = {}
    for user_id in ("ann", "bob"):
        await old.resources.create("User", {"id": user_id, "email": f"{user_id}@example.org"})
        enrolled[user_id] = (await old.twofactor.begin_enrollment(user_id, sign_in=user_id)).secret
        recovery[user_id] = await old.twofactor.confirm_enrollment(
            user_id, _code(enrolled[user_id], clock), sign_in=user_id
        )
    # An imported Aidbox secret, a pending enrolment, and a user without 2FA.
    await old.resources.create(
        "User",
        {"id": "cat", "twoFactor": {"enabled": True, "secretKey": IMPORTED_SECRET}},
        administrator=True,
    )
    await old.resources.create("User", {"id": "dan"})
    pending = (await old.twofactor.begin_enrollment("dan", sign_in="dan")).secret
    await old.resources.create("User", {"id": "eve"})
    jwks = await old.keys.jwks()
    old_kid = old.box.primary_kid
    csrf_cookie = Csrf.new_cookie()
    old_form_field = Csrf.from_box(old.box).field_for(csrf_cookie)

    # The deploy: new master secret first, the old one still readable.
    both = _server(store, clock, NEW, OLD)
    new_kid = both.box.primary_kid
    Csrf.from_box(both.box).check(csrf_cookie, old_form_field)
    clock.advance(30)
    assert (await both.twofactor.verify("ann", _code(enrolled["ann"], clock))).reason is Reason.ACCEPTED

    assert _counts(await _rotate(both)) == [
        ("User twoFactor.secretKey", 4, 0, [], []),
        # One key of each algorithm.
        ("signing keys", 3, 0, [], []),
        ("recovery-code pepper", 1, 0, [], []),
    ]
    for user_id in ("ann", "bob", "cat", "dan"):
        sealed = await _sealed(both, user_id)
        assert sealed.startswith(f"fa1:{new_kid}:")
        with pytest.raises(SecretBoxError, match="key id"):
            SecretBox([OLD]).decrypt(sealed, aad=user_id)
    assert old_kid != new_kid
    # Idempotent: a second run finds everything current.
    assert _counts(await _rotate(both)) == [
        ("User twoFactor.secretKey", 0, 4, [], []),
        ("signing keys", 0, 3, [], []),
        ("recovery-code pepper", 0, 1, [], []),
    ]

    # The old master secret is dropped.
    new = _server(store, clock, NEW)
    clock.advance(30)
    for user_id, secret in (*enrolled.items(), ("cat", IMPORTED_SECRET)):
        assert (await new.twofactor.verify(user_id, _code(secret, clock))).reason is Reason.ACCEPTED
    assert (await new.twofactor.verify("bob", recovery["bob"][0])).reason is Reason.ACCEPTED
    assert (await new.twofactor.verify("ann", recovery["ann"][9])).reason is Reason.ACCEPTED
    assert await new.twofactor.confirm_enrollment("dan", _code(pending, clock), sign_in="dan") != []
    assert await new.keys.jwks() == jwks
    new_form_field = Csrf.from_box(both.box).field_for(csrf_cookie)
    Csrf.from_box(new.box).check(csrf_cookie, new_form_field)
    with pytest.raises(CsrfRefused):
        Csrf.from_box(new.box).check(csrf_cookie, old_form_field)


async def test_a_user_changed_during_the_rotation_is_read_again_and_keeps_the_change(
    store: tuple[str, Storage], clock: ManualClock
) -> None:
    old = _server(store, clock, OLD)
    user_ids = [f"user{n}" for n in range(4)]
    for user_id in user_ids:
        await old.resources.create(
            "User",
            {"id": user_id, "twoFactor": {"enabled": True, "secretKey": IMPORTED_SECRET}},
            administrator=True,
        )
    both = _server(store, clock, NEW, OLD)
    renamed: list[str] = []

    async def someone_else_edits_the_others(before: Any, after: Any) -> None:
        # A server's write landing between the rotation's read of every user and its writes.
        if renamed:
            return
        for user_id in user_ids:
            stored = await old.storage.get("User", user_id)
            assert stored is not None
            if both.box.needs_rotation(stored.document["twoFactor"]["secretKey"]):
                await old.resources.save({**stored.document, "displayName": "changed"}, stored.version)
                renamed.append(user_id)

    both.resources.on_change("User", someone_else_edits_the_others)
    assert _counts(await _rotate(both))[0] == ("User twoFactor.secretKey", 4, 0, [], [])
    assert len(renamed) == 3
    for user_id in renamed:
        stored = await both.storage.get("User", user_id)
        assert stored is not None
        assert stored.document["displayName"] == "changed"
        assert stored.document["twoFactor"]["secretKey"].startswith(f"fa1:{both.box.primary_kid}:")


async def test_a_secret_under_an_unknown_master_secret_is_reported_not_lost(
    store: tuple[str, Storage], clock: ManualClock
) -> None:
    stranger = _server(store, clock, "a-master-secret-nobody-kept")
    await stranger.resources.create(
        "User",
        {"id": "lost", "twoFactor": {"enabled": True, "secretKey": IMPORTED_SECRET}},
        administrator=True,
    )
    before = await _sealed(stranger, "lost")
    new = _server(store, clock, NEW, OLD)
    assert _counts(await _rotate(new))[0] == ("User twoFactor.secretKey", 0, 0, ["lost"], [])
    assert await _sealed(new, "lost") == before
