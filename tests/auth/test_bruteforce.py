"""Password brute-force protection: Keycloak's "multiple" schedule, the NIST cap, no oracle, no race.

Driven through Logins.check_password (the one check behind the login page and the password grant)
on both backends. The parallel bursts run on SQLite only, made to yield at every record call so that
gathered attempts interleave as they do against a networked backend: the SecantusDB test server
sometimes answers a concurrent upserting findAndModify with no document (the increment is applied,
its reply is lost), which a real MongoDB never does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from pydantic import SecretStr
from support.interleaving import InterleavingSQLite
from support.mongo import drop_database, with_database

from fhirauth.app import INDEXES, build_services
from fhirauth.auth.bruteforce import BruteForcePolicy, PasswordLockout
from fhirauth.auth.login import LoginRefused, Logins
from fhirauth.clock import ManualClock
from fhirauth.ratelimit import Limit, Rate, RateLimited
from fhirauth.services import Services
from fhirauth.settings import Settings
from fhirauth.storage.backends import open_storage
from fhirauth.storage.base import Document, Storage
from fhirauth.twofactor.guard import AttemptGuard, LockoutPolicy, Reason, Verdict
from fhirauth.twofactor.totp import code_at, step_at
from tests.auth.oauth_helpers import CountingHasher

START = datetime.fromisoformat("2026-01-01T00:00:00+00:00")
RIGHT = "correct horse battery staple"
WRONG = "Tr0ub4dor&3"
SMALL = BruteForcePolicy(failure_factor=3, wait_increment_seconds=60, max_wait_seconds=150, max_failures=100)
NO_ACCOUNT_LIMIT = Limit("login-account", None)


@dataclass
class World:
    services: Services
    storage: Storage
    clock: ManualClock
    hasher: CountingHasher

    def logins(self, policy: BruteForcePolicy | None = SMALL, limit: Limit = NO_ACCOUNT_LIMIT) -> Logins:
        lockout = PasswordLockout(self.storage, self.clock, policy) if policy is not None else None
        return Logins(self.services.resources, self.hasher, self.services.rate_limiter, limit, lockout)

    async def user(self, id: str = "alice", *, with_password: bool = True) -> Document:
        body: Document = {"email": f"{id}@example.org"}
        if with_password:
            # Stored as the hash it already is: verifying it costs test-sized Argon2 work.
            body["password"] = self.hasher.hash(RIGHT)
        return (await self.services.resources.create("User", body, id=id)).resource


@pytest.fixture(params=["sqlite", "mongo"])
async def world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    clock = ManualClock(START)
    if request.param == "sqlite":
        url = "sqlite://:memory:"
        storage: Storage = InterleavingSQLite(":memory:", clock)
    else:
        url = with_database(request.getfixturevalue("mongo_uri"), f"brute{uuid.uuid4().hex[:12]}")
        storage = open_storage(url, clock)
    await storage.start(INDEXES)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        storage=url,
        secret_key=SecretStr("brute-force-tests"),
        root_client_secret=SecretStr("secret"),
    )
    yield World(build_services(settings, storage, clock), storage, clock, CountingHasher())
    await storage.close()
    if request.param == "mongo":
        drop_database(url)


async def outcome(
    logins: Logins, password: str, username: str = "alice@example.org"
) -> tuple[str, datetime | None]:
    """("ok", None) or (refusal reason, locked_until)."""
    try:
        await logins.check_password(username, password)
    except LoginRefused as refused:
        return refused.reason, refused.locked_until
    return "ok", None


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


# The schedule


def test_multiple_strategy_matches_keycloaks_table() -> None:
    # Keycloak's brute-force.adoc, "By multiples": Max Login Failures 5, Wait Increment 30 s.
    policy = BruteForcePolicy(failure_factor=5, wait_increment_seconds=30, max_wait_seconds=900)
    assert [policy.wait_after(n) for n in range(1, 11)] == [0, 0, 0, 0, 30, 30, 30, 30, 30, 60]


def test_default_policy_is_keycloaks_with_nist_cap() -> None:
    policy = BruteForcePolicy()
    assert (policy.failure_factor, policy.wait_increment_seconds, policy.max_wait_seconds) == (30, 60, 900)
    assert [policy.wait_after(n) for n in (29, 30, 59, 60, 89, 90, 449, 450, 1000)] == [
        0, 60, 60, 120, 120, 180, 840, 900, 900,
    ]  # fmt: skip
    assert [policy.attempts_after(n) for n in (0, 1, 29, 30, 31, 99, 100)] == [30, 29, 1, 1, 1, 1, 0]


def test_policy_refuses_more_than_nist_allows() -> None:
    with pytest.raises(ValueError):
        BruteForcePolicy(max_failures=101)
    with pytest.raises(ValueError):
        BruteForcePolicy(failure_factor=0)


async def test_exact_lockout_schedule(world: World) -> None:
    await world.user()
    logins, clock = world.logins(), world.clock
    assert [await outcome(logins, WRONG) for _ in range(2)] == [("wrong-password", None)] * 2
    # The third failure locks for increment × ⌊3/3⌋ = 60 s.
    assert await outcome(logins, WRONG) == ("wrong-password", at(60))
    assert await outcome(logins, RIGHT) == ("locked", at(60))
    # From now on every failure locks again: 60 s for the 4th and 5th, 120 s from the 6th (⌊6/3⌋ = 2),
    # and 180 s from the 9th, cut to the 150 s max wait.
    until = at(60)
    for failures, wait in {4: 60, 5: 60, 6: 120, 7: 120, 8: 120, 9: 150, 10: 150}.items():
        clock.now = until - timedelta(milliseconds=1)
        assert await outcome(logins, RIGHT) == ("locked", until)
        clock.now = until
        until += timedelta(seconds=wait)
        assert await outcome(logins, WRONG) == ("wrong-password", until), failures


async def test_a_success_forgets_every_failure(world: World) -> None:
    await world.user()
    logins, clock = world.logins(), world.clock
    for _ in range(3):
        await outcome(logins, WRONG)
    clock.advance(60)
    assert await outcome(logins, WRONG) == ("wrong-password", at(120))
    clock.advance(60)
    assert await outcome(logins, RIGHT) == ("ok", None)
    # A fresh run: two free failures, then the first lock of 60 s again.
    assert [await outcome(logins, WRONG) for _ in range(3)] == [
        ("wrong-password", None),
        ("wrong-password", None),
        ("wrong-password", at(180)),
    ]


async def test_lockout_is_per_account(world: World) -> None:
    await world.user("alice")
    await world.user("bob")
    logins = world.logins()
    for _ in range(3):
        await outcome(logins, WRONG)
    assert await outcome(logins, RIGHT) == ("locked", at(60))
    assert await outcome(logins, RIGHT, "bob@example.org") == ("ok", None)
    # Every spelling of the account shares its lock: e-mail, any case, and the id.
    assert await outcome(logins, RIGHT, "ALICE@example.org") == ("locked", at(60))
    assert await outcome(logins, RIGHT, "alice") == ("locked", at(60))


async def test_nist_cap_of_100_consecutive_failures(world: World) -> None:
    await world.user()
    logins, clock = world.logins(BruteForcePolicy()), world.clock
    evaluated = 0
    for _ in range(1000):  # bounded: without a cap this would never stop
        reason, until = await outcome(logins, WRONG)
        if reason == "wrong-password":
            evaluated += 1
        elif until is None:
            break
        else:
            clock.now = until
    assert evaluated == 100
    # No end to this lock: not after the longest wait, not after a month.
    for seconds in (900, 30 * 86400):
        clock.advance(seconds)
        assert await outcome(logins, RIGHT) == ("locked", None)
    # An administrator's new password lifts it.
    user = await world.services.resources.read("User", "alice")
    await world.services.resources.update("User", "alice", {**user, "password": "a brand new password"})
    assert await outcome(logins, "a brand new password") == ("ok", None)


async def test_cap_below_the_factor_locks_for_good(world: World) -> None:
    await world.user()
    logins = world.logins(BruteForcePolicy(failure_factor=30, max_failures=4))
    assert [await outcome(logins, WRONG) for _ in range(5)] == [("wrong-password", None)] * 3 + [
        ("wrong-password", None),
        ("locked", None),
    ]
    world.clock.advance(86400)
    assert await outcome(logins, RIGHT) == ("locked", None)


async def test_a_password_change_by_an_administrator_lifts_a_lock(world: World) -> None:
    await world.user()
    logins = world.logins()
    for _ in range(3):
        await outcome(logins, WRONG)
    user = await world.services.resources.read("User", "alice")
    # Other changes leave the lock alone; a new password lifts it.
    await world.services.resources.update("User", "alice", {**user, "userName": "al"})
    assert await outcome(logins, RIGHT) == ("locked", at(60))
    await world.services.resources.update("User", "alice", {**user, "password": "another password"})
    assert await outcome(logins, "another password") == ("ok", None)


# No oracle: the same refusal, the same work


async def test_every_refusal_costs_exactly_one_argon2_verification(world: World) -> None:
    await world.user("alice")
    await world.user("nohash", with_password=False)
    logins = world.logins(BruteForcePolicy(failure_factor=3, max_failures=6))

    async def cost(username: str, password: str) -> tuple[str, int]:
        before = world.hasher.verifications
        reason, _ = await outcome(logins, password, username)
        return reason, world.hasher.verifications - before

    assert await cost("nobody@example.org", WRONG) == ("unknown-user", 1)
    assert await cost("nohash@example.org", WRONG) == ("unknown-user", 1)
    assert await cost("alice@example.org", WRONG) == ("wrong-password", 1)
    assert await cost("alice@example.org", RIGHT) == ("ok", 1)
    for _ in range(3):
        await cost("alice@example.org", WRONG)
    assert await cost("alice@example.org", RIGHT) == ("locked", 1)
    for _ in range(3):
        world.clock.advance(900)
        await cost("alice@example.org", WRONG)
    assert await cost("alice@example.org", RIGHT) == ("locked", 1)  # at the cap
    assert await cost("alice@example.org", "") == ("malformed", 0)


async def test_protection_off_still_hashes_once(world: World) -> None:
    await world.user()
    logins = world.logins(policy=None)
    for _ in range(40):
        assert await outcome(logins, WRONG) == ("wrong-password", None)
    assert await outcome(logins, RIGHT) == ("ok", None)
    assert world.hasher.verifications == 41


# The per-account rate limit


async def test_account_limit_counts_every_attempt_for_known_and_unknown_names(world: World) -> None:
    await world.user()
    logins = world.logins(policy=None, limit=Limit("login-account", Rate(3, 60)))
    for username in ("alice@example.org", "nobody@example.org"):
        for _ in range(3):
            await outcome(logins, WRONG, username)
        with pytest.raises(RateLimited) as refused:
            await logins.check_password(username.upper(), RIGHT)
        assert refused.value.retry_after == 60
    world.clock.advance(59)
    with pytest.raises(RateLimited) as refused:
        await logins.check_password("alice@example.org", RIGHT)
    assert refused.value.retry_after == 1
    world.clock.advance(1)
    assert await outcome(logins, RIGHT) == ("ok", None)


# Parallel bursts

sqlite_only = pytest.mark.parametrize("world", ["sqlite"], indirect=True)


@sqlite_only
async def test_a_parallel_burst_cannot_evaluate_more_than_the_schedule(world: World) -> None:
    await world.user()
    logins = world.logins()
    results = await asyncio.gather(*(outcome(logins, WRONG) for _ in range(60)))
    assert Counter(reason for reason, _ in results) == {"wrong-password": 3, "locked": 57}
    # 60 attempts, one Argon2 verification each; only 3 of them on alice's hash.
    assert world.hasher.verifications == 60
    assert {until for reason, until in results if reason == "locked"} == {at(60)}
    assert await outcome(logins, RIGHT) == ("locked", at(60))
    # After the lock, a burst gets exactly one more evaluation.
    world.clock.advance(60)
    results = await asyncio.gather(*(outcome(logins, WRONG) for _ in range(30)))
    assert Counter(reason for reason, _ in results) == {"wrong-password": 1, "locked": 29}
    assert await outcome(logins, RIGHT) == ("locked", at(120))


@sqlite_only
async def test_a_burst_with_the_right_password_in_it(world: World) -> None:
    await world.user()
    logins = world.logins(BruteForcePolicy(failure_factor=5))
    attempts = [WRONG] * 10 + [RIGHT] + [WRONG] * 10
    before = world.hasher.verifications
    results = await asyncio.gather(*(outcome(logins, password) for password in attempts))
    reasons = Counter(reason for reason, _ in results)
    # Five passwords are looked at, the right one among them or refused unseen; nothing else.
    assert reasons["wrong-password"] + reasons["ok"] == 5
    assert reasons["locked"] == 16
    assert world.hasher.verifications - before == 21


# The same cap on the second factor (the TOTP guard keeps its own lockout, under NIST's cap too)

TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def wrong_totp(clock: ManualClock) -> str:
    current = step_at(clock().timestamp())
    window = {code_at(TOTP_SECRET, current + offset) for offset in range(-3, 4)}
    return next(code for code in (f"{n:06d}" for n in range(1_000_000)) if code not in window)


async def totp(guard: AttemptGuard, code: str, policy: LockoutPolicy) -> Verdict:
    return await guard.verify_totp("alice", TOTP_SECRET, code, past=1, future=0, policy=policy)


async def test_totp_failures_add_up_across_lockouts_to_the_cap(world: World) -> None:
    guard, clock = AttemptGuard(world.storage, world.clock), world.clock
    policy = LockoutPolicy(max_attempts=5, lockout_seconds=300)
    evaluated = 0
    for _ in range(1000):  # bounded: without a cap this would never stop
        verdict = await totp(guard, wrong_totp(clock), policy)
        if verdict.reason is Reason.INVALID:
            evaluated += 1
        elif verdict.locked_until is None:
            break
        else:
            clock.now = verdict.locked_until
    assert evaluated == 100
    clock.advance(30 * 86400)
    right = code_at(TOTP_SECRET, step_at(clock().timestamp()))
    assert await totp(guard, right, policy) == Verdict(Reason.LOCKED)
    await guard.reset("alice")
    assert (await totp(guard, right, policy)).accepted


async def test_a_totp_success_forgets_failures_of_earlier_lockouts(world: World) -> None:
    guard, clock = AttemptGuard(world.storage, world.clock), world.clock
    policy = LockoutPolicy(max_attempts=50, lockout_seconds=300)
    for _ in range(50):
        await totp(guard, wrong_totp(clock), policy)
    clock.advance(300)
    assert (await totp(guard, code_at(TOTP_SECRET, step_at(clock().timestamp())), policy)).accepted
    # A fresh run gets its full 50, where 50 more after the first would have hit the cap of 100.
    verdicts = [await totp(guard, wrong_totp(clock), policy) for _ in range(50)]
    assert [v.reason for v in verdicts] == [Reason.INVALID] * 50
    assert verdicts[-1].locked_until == clock.now + timedelta(seconds=300)


@sqlite_only
async def test_a_totp_burst_cannot_pass_the_cap_whatever_max_attempts_says(world: World) -> None:
    guard = AttemptGuard(world.storage, world.clock)
    roomy = LockoutPolicy(max_attempts=1000, lockout_seconds=300)
    wrong = wrong_totp(world.clock)
    verdicts = await asyncio.gather(*(totp(guard, wrong, roomy) for _ in range(150)))
    assert Counter(v.reason for v in verdicts) == {Reason.INVALID: 100, Reason.LOCKED: 50}
    assert {v.locked_until for v in verdicts} == {None}
