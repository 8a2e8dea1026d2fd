"""Passkeys (WebAuthn): the ceremonies' rules on both backends, with a software authenticator.

Each refusal is checked by its wire error, by what stayed stored (the counter, the credential) and
by its AuditEvent. The clock is a ManualClock: a challenge expires with `clock.advance`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.mongo import drop_database, with_database
from support.webauthn_key import SoftKey, b64url

from fhirauth.app import INDEXES, build_services
from fhirauth.auth.oidc.amr import SignInMethods
from fhirauth.clock import ManualClock
from fhirauth.errors import BadRequest
from fhirauth.services import Services
from fhirauth.settings import Settings
from fhirauth.storage.backends import open_storage
from fhirauth.twofactor.passkeys.challenges import CHALLENGE_KIND, Ceremony, Purpose
from fhirauth.twofactor.passkeys.credentials import RESOURCE, passkey_id
from fhirauth.twofactor.passkeys.errors import PasskeyError
from fhirauth.twofactor.passkeys.relying_party import RelyingParty

ORIGIN = "https://auth.example.org"
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
SIGN_IN = "sign-in-1"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["sqlite", "mongo"])
async def services(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[Services]:
    if request.param == "sqlite":
        url = "sqlite://:memory:"
    else:
        url = with_database(request.getfixturevalue("mongo_uri"), f"passkey{uuid.uuid4().hex[:12]}")
    storage = open_storage(url, clock)
    await storage.start(INDEXES)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        storage=url,
        secret_key="passkey-test-master",
        root_client_secret="secret",
        base_url=ORIGIN,
    )
    services = build_services(settings, storage, clock)
    yield services
    await services.keys.close()
    await storage.close()
    if request.param == "mongo":
        drop_database(url)


async def make_user(services: Services, user_id: str = "ann", **fields: Any) -> dict[str, Any]:
    body = {"resourceType": "User", "email": f"{user_id}@example.org", "password": "pw-" + user_id, **fields}
    return (await services.resources.create("User", body, id=user_id, administrator=True)).resource


async def events(services: Services, action: str) -> list[dict[str, str]]:
    _, page = await services.resources.search("AuditEvent", [("action", action), ("_sort", "recorded")])
    return [
        {item["type"]: item["valueString"] for item in (event.get("entity") or [{}])[0].get("detail", [])}
        | {"outcome": event["outcome"], "user": (event.get("agent") or [{}])[0].get("who", {}).get("id", "")}
        for event in page.items
    ]


async def register(
    services: Services, key: SoftKey, user_id: str = "ann", name: str = "Laptop"
) -> dict[str, Any]:
    user = (await services.resources.find("User", user_id)).document  # type: ignore[union-attr]
    options = await services.passkeys.registration_options(user, binding=SIGN_IN)
    return await services.passkeys.register(user_id, key.create(options), name, binding=SIGN_IN)


async def stored(services: Services, key: SoftKey) -> dict[str, Any] | None:
    found = await services.resources.find(RESOURCE, passkey_id(key.credential_id))
    return found.document if found is not None else None


def second_factor(user_id: str = "ann", binding: str = "pending-1") -> Ceremony:
    return Ceremony(Purpose.AUTHENTICATE, binding, user_id)


async def refused(services: Services, call: Any) -> tuple[str, str]:
    with pytest.raises(PasskeyError) as caught:
        await call
    return caught.value.error, caught.value.description


def test_relying_party_from_the_base_url_and_its_overrides() -> None:
    assert RelyingParty.of("https://auth.example.org:8443/base") == RelyingParty(
        "auth.example.org", ("https://auth.example.org:8443",)
    )
    assert RelyingParty.of(
        "http://localhost:8080", "example.org", ["https://app.example.org"]
    ) == RelyingParty("example.org", ("https://app.example.org",))


async def test_registration_options_and_the_stored_credential(services: Services) -> None:
    user = await make_user(services)
    options = await services.passkeys.registration_options(user, binding=SIGN_IN)
    assert options["rp"] == {"id": "auth.example.org", "name": "fhirauth"}
    assert options["attestation"] == "none"
    assert options["authenticatorSelection"] == {
        "residentKey": "preferred",
        "requireResidentKey": False,
        "userVerification": "preferred",
    }
    assert options["user"]["name"] == "ann@example.org"
    assert options["excludeCredentials"] == []
    key = SoftKey(ORIGIN)
    created = await services.passkeys.register("ann", key.create(options), "  Laptop ", binding=SIGN_IN)
    assert created == await stored(services, key)
    assert {k: v for k, v in created.items() if k not in ("meta", "publicKey")} == {
        "resourceType": "WebAuthnCredential",
        "id": passkey_id(key.credential_id),
        "user": {"resourceType": "User", "id": "ann"},
        "name": "Laptop",
        "credentialId": key.id,
        "signCount": 0,
        "userHandle": options["user"]["id"],
        "transports": ["internal"],
        "aaguid": "00000000-0000-0000-0000-000000000000",
        "backupEligible": False,
        "backedUp": False,
        "userVerified": True,
        "attachment": "platform",
        "created": "2026-01-01T00:00:00.000Z",
    }
    assert await events(services, "passkey-registered") == [
        {"passkey": created["id"], "name": "Laptop", "outcome": "success", "user": "ann"}
    ]
    # A second registration excludes the first key and gives the same user handle, so an
    # authenticator keeps one passkey per account.
    again = await services.passkeys.registration_options(user, binding=SIGN_IN)
    assert again["excludeCredentials"] == [{"id": key.id, "type": "public-key", "transports": ["internal"]}]
    assert again["user"]["id"] == options["user"]["id"]
    assert again["challenge"] != options["challenge"]


async def test_registration_refusals_write_nothing(services: Services, clock: ManualClock) -> None:
    user = await make_user(services)
    await make_user(services, "bob")
    key = SoftKey(ORIGIN)
    options = await services.passkeys.registration_options(user, binding=SIGN_IN)
    response = key.create(options)
    # A name is checked before the challenge is spent.
    for bad in ("", "   ", "x" * 65, "tab\there", None, 7):
        with pytest.raises(BadRequest):
            await services.passkeys.register("ann", response, bad, binding=SIGN_IN)
    # Another sign-in, another user: the challenge is not theirs (and is spent by trying).
    assert (await refused(services, services.passkeys.register("ann", response, "k", binding="other")))[
        0
    ] == ("challenge_invalid")
    assert (await refused(services, services.passkeys.register("ann", response, "k", binding=SIGN_IN)))[
        0
    ] == ("challenge_invalid")
    options = await services.passkeys.registration_options(user, binding=SIGN_IN)
    assert (
        await refused(services, services.passkeys.register("bob", key.create(options), "k", binding=SIGN_IN))
    )[0] == "challenge_invalid"
    # Expired after five minutes.
    options = await services.passkeys.registration_options(user, binding=SIGN_IN)
    clock.advance(301)
    assert (
        await refused(services, services.passkeys.register("ann", key.create(options), "k", binding=SIGN_IN))
    )[0] == "challenge_invalid"
    # Another origin (a phishing page's) fails the library's check.
    options = await services.passkeys.registration_options(user, binding=SIGN_IN)
    phished = SoftKey("https://auth.example.org.evil.test").create(options)
    assert await refused(services, services.passkeys.register("ann", phished, "k", binding=SIGN_IN)) == (
        "passkey_refused",
        "The passkey's response could not be verified",
    )
    # Malformed responses: a 4xx refusal, never an exception of another kind.
    for junk in (
        "",
        "{",
        "[]",
        {},
        {"response": {"clientDataJSON": "%%%"}},
        {"response": {"clientDataJSON": b64url(b"[1]")}},
    ):
        assert (await refused(services, services.passkeys.register("ann", junk, "k", binding=SIGN_IN)))[
            0
        ] == ("passkey_refused")
    assert await services.passkeys.passkeys("ann") == []
    assert [e["reason"][:40] for e in await events(services, "passkey-registration-refused")] == [
        'Unexpected client data origin "https://a'
    ]


async def test_the_same_authenticator_cannot_register_twice(services: Services) -> None:
    user = await make_user(services)
    key = SoftKey(ORIGIN)
    await register(services, key)
    options = await services.passkeys.registration_options(user, binding=SIGN_IN)
    assert (
        await refused(
            services, services.passkeys.register("ann", key.create(options), "Again", binding=SIGN_IN)
        )
    )[0] == "already_registered"
    assert [c["name"] for c in await services.passkeys.passkeys("ann")] == ["Laptop"]


async def test_second_factor_hwk_counter_and_audit(services: Services, clock: ManualClock) -> None:
    await make_user(services)
    key = SoftKey(ORIGIN)
    created = await register(services, key)
    options = await services.passkeys.authentication_options(second_factor())
    assert options["rpId"] == "auth.example.org"
    assert options["userVerification"] == "preferred"
    assert options["allowCredentials"] == [{"id": key.id, "type": "public-key", "transports": ["internal"]}]
    clock.advance(10)
    use = await services.passkeys.authenticate(key.get(options), second_factor(), ip="192.0.2.1")
    assert (use.user_id, use.passkey_id, use.method, use.user_verified) == ("ann", created["id"], "hwk", True)
    after = await stored(services, key)
    assert after is not None
    assert (after["signCount"], after["lastUsed"], after["meta"]["versionId"]) == (
        1,
        "2026-01-01T00:00:10.000Z",
        "2",
    )
    assert await events(services, "passkey-used") == [
        {"passkey": created["id"], "purpose": "authenticate", "outcome": "success", "user": "ann"}
    ]
    # The sign-in's amr: a password and a device-bound key are two factors.
    assert SignInMethods.password(1).with_key(use.method, 2).amr == ("pwd", "hwk", "mfa")


async def test_replayed_and_expired_assertions_are_refused(services: Services, clock: ManualClock) -> None:
    await make_user(services)
    key = SoftKey(ORIGIN)
    await register(services, key)
    options = await services.passkeys.authentication_options(second_factor())
    assertion = key.get(options)
    await services.passkeys.authenticate(assertion, second_factor())
    assert await refused(services, services.passkeys.authenticate(assertion, second_factor())) == (
        "challenge_invalid",
        "The passkey request is unknown, used or expired; start again",
    )
    options = await services.passkeys.authentication_options(second_factor())
    clock.advance(300)
    assert (await refused(services, services.passkeys.authenticate(key.get(options), second_factor())))[
        0
    ] == ("challenge_invalid")
    # Bound to the pending login that asked for it, and to its user.
    options = await services.passkeys.authentication_options(second_factor())
    assert (
        await refused(
            services, services.passkeys.authenticate(key.get(options), second_factor(binding="pending-2"))
        )
    )[0] == "challenge_invalid"
    options = await services.passkeys.authentication_options(second_factor())
    assertion = key.get(options)
    passwordless = Ceremony(Purpose.PASSWORDLESS, "pending-1")
    assert (await refused(services, services.passkeys.authenticate(assertion, passwordless)))[
        0
    ] == "challenge_invalid"
    assert (await stored(services, key))["signCount"] == 1  # type: ignore[index]


async def test_unknown_and_other_users_credentials_are_refused(services: Services) -> None:
    await make_user(services)
    await make_user(services, "bob")
    ann_key, bob_key = SoftKey(ORIGIN), SoftKey(ORIGIN)
    await register(services, ann_key)
    await register(services, bob_key, "bob")
    options = await services.passkeys.authentication_options(second_factor())
    assert await refused(services, services.passkeys.authenticate(bob_key.get(options), second_factor())) == (
        "unknown_passkey",
        "This passkey is not registered for this account",
    )
    stranger = SoftKey(ORIGIN)
    stranger.rp_id, stranger.user_handle = "auth.example.org", None
    options = await services.passkeys.authentication_options(second_factor())
    assert (await refused(services, services.passkeys.authenticate(stranger.get(options), second_factor())))[
        0
    ] == ("unknown_passkey")
    assert [(e["reason"], e["user"]) for e in await events(services, "passkey-refused")] == [
        ("unknown-passkey", "ann"),
        ("unknown-passkey", "ann"),
    ]
    assert (await stored(services, bob_key))["signCount"] == 0  # type: ignore[index]
    # A user without passkeys gets no options at all.
    await make_user(services, "cy")
    assert (await refused(services, services.passkeys.authentication_options(second_factor("cy"))))[0] == (
        "unknown_passkey"
    )


async def test_a_counter_that_goes_backwards_is_refused_and_audited(
    services: Services, clock: ManualClock
) -> None:
    await make_user(services)
    key = SoftKey(ORIGIN)
    created = await register(services, key)
    for _ in range(3):
        options = await services.passkeys.authentication_options(second_factor())
        await services.passkeys.authenticate(key.get(options), second_factor())
    for count in (3, 2, 0):
        # Events of one instant have no order: each refusal gets its own second.
        clock.advance(1)
        options = await services.passkeys.authentication_options(second_factor())
        assert await refused(
            services, services.passkeys.authenticate(key.get(options, sign_count=count), second_factor())
        ) == ("passkey_refused", "The passkey's signature counter went backwards; it may have been copied")
    assert (await stored(services, key))["signCount"] == 3  # type: ignore[index]
    assert await events(services, "passkey-counter-rollback") == [
        {"passkey": created["id"], "stored": "3", "received": str(count), "outcome": "failure", "user": "ann"}
        for count in (3, 2, 0)
    ]
    options = await services.passkeys.authentication_options(second_factor())
    assert (
        await services.passkeys.authenticate(key.get(options, sign_count=9), second_factor())
    ).user_id == "ann"


async def test_an_authenticator_without_a_counter_is_accepted_every_time(services: Services) -> None:
    await make_user(services)
    key = SoftKey(ORIGIN, counter=False, backup_eligible=True)
    await register(services, key)
    for _ in range(2):
        options = await services.passkeys.authentication_options(second_factor())
        use = await services.passkeys.authenticate(key.get(options), second_factor())
        # A synced passkey: a software-secured key.
        assert use.method == "swk"
    assert (await stored(services, key))["signCount"] == 0  # type: ignore[index]


async def test_passwordless_needs_user_verification_and_the_owners_handle(services: Services) -> None:
    await make_user(services)
    key = SoftKey(ORIGIN)
    await register(services, key)
    ceremony = Ceremony(Purpose.PASSWORDLESS, "browser-1")
    options = await services.passkeys.authentication_options(ceremony)
    assert (options["allowCredentials"], options["userVerification"]) == ([], "required")
    use = await services.passkeys.authenticate(key.get(options), ceremony)
    assert (use.user_id, use.method, use.user_verified) == ("ann", "hwk", True)
    assert SignInMethods.passkey(use.method, 5).amr == ("hwk", "mfa")
    key.user_verified = False
    options = await services.passkeys.authentication_options(ceremony)
    assert (await refused(services, services.passkeys.authenticate(key.get(options), ceremony)))[
        0
    ] == "passkey_refused"
    key.user_verified = True
    key.user_handle = b64url(b"someone else")
    options = await services.passkeys.authentication_options(ceremony)
    assert (await refused(services, services.passkeys.authenticate(key.get(options), ceremony)))[
        0
    ] == "unknown_passkey"
    # The refused attempts did not move the counter.
    assert (await stored(services, key))["signCount"] == 1  # type: ignore[index]


async def test_remove_reset_and_user_deletion(services: Services, clock: ManualClock) -> None:
    await make_user(services, twoFactor={"enabled": True, "secretKey": SECRET})
    await make_user(services, "bob")
    laptop, phone, bobs = SoftKey(ORIGIN), SoftKey(ORIGIN), SoftKey(ORIGIN)
    first = await register(services, laptop)
    clock.advance(1)
    await register(services, phone, name="Phone")
    await register(services, bobs, "bob")
    assert [c["name"] for c in await services.passkeys.passkeys("ann")] == ["Laptop", "Phone"]
    # Not bob's to remove, nor a made-up id.
    for user_id, id in (("bob", first["id"]), ("ann", "0" * 64)):
        assert (await refused(services, services.passkeys.remove(user_id, id)))[0] == "unknown_passkey"
    await services.passkeys.remove("ann", first["id"], ip="192.0.2.1")
    assert [c["name"] for c in await services.passkeys.passkeys("ann")] == ["Phone"]
    # The administrator's reset takes the rest with the TOTP secret.
    await services.twofactor.reset("ann", actor="cli")
    assert await services.passkeys.passkeys("ann") == []
    # A deleted user's passkeys go too: a new User with her id does not inherit them.
    await services.resources.delete("User", "bob")
    assert await services.passkeys.passkeys("bob") == []
    assert sorted((e["by"], e["user"]) for e in await events(services, "passkey-removed")) == [
        ("cli", "ann"),
        ("user", "ann"),
        ("user-deleted", "bob"),
    ]


async def test_racing_finishes_of_one_ceremony_one_wins(services: Services) -> None:
    import asyncio

    await make_user(services)
    key = SoftKey(ORIGIN)
    await register(services, key)
    options = await services.passkeys.authentication_options(second_factor())
    assertion = key.get(options)
    results = await asyncio.gather(
        *(services.passkeys.authenticate(assertion, second_factor()) for _ in range(4)),
        return_exceptions=True,
    )
    assert sum(not isinstance(result, Exception) for result in results) == 1
    assert (
        sorted(result.error for result in results if isinstance(result, PasskeyError))
        == ["challenge_invalid"] * 3
    )
    assert await services.storage.record_get(CHALLENGE_KIND, "x") is None
