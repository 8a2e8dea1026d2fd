"""Two `fhirauth serve` processes (not workers of one server) on different ports, one MongoDB database.

What a load balancer in front of several hosts needs: every piece of security state lives in storage,
so a code, a TOTP step, a refresh token or a failure count used up through one instance is used up
for the other, and a signing key rotated while both run is published by both within the documented
bound. The servers run on the system clock, so TOTP codes are computed at time.time(); with
validPastTokensCount 1, a code computed just before a step boundary is still accepted just after it.
"""

from __future__ import annotations

import base64
import html
import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx2
import pytest
from support.mongo import drop_database, with_database
from support.server import ROOT_CLIENT_SECRET, LiveServer, fhirauth_command, fhirauth_environment

from fhirauth.auth.bruteforce import LOCK
from fhirauth.auth.keys import RELOAD_SECONDS
from fhirauth.clock import system_clock
from fhirauth.storage.backends import open_storage
from fhirauth.twofactor import totp

PASSWORD = "correct horse battery staple"
APP_SECRET = "app-secret"
REDIRECT = "http://127.0.0.1:9/callback"
TOTP_SECRETS = {
    "cat": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
    "eli": "MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43U",
    "dan": "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ",
}
MAX_TOTP_ATTEMPTS = 3
FAILURE_FACTOR = 3
# Both servers get the same settings, as the instances of one deployment do. The lockout schedule is
# shortened so that a handful of requests reach it.
SERVER_ENV = {"FHIRAUTH_BRUTE_FORCE_FAILURE_FACTOR": str(FAILURE_FACTOR)}
# docs/security-model.md: a Client change made through another worker applies within 2 seconds.
CLIENT_CACHE_SECONDS = 2.0
# The keys: a second of slack on the documented bound for the polling and the HTTP round trips.
_POLL_SECONDS = 0.1
_SLACK_SECONDS = 1.0
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_ACTION = re.compile(r'<form method="post" action="([^"]*)"')

INVALID_LOGIN = "Invalid username or password"
TOTP_INVALID = "Invalid two-factor authentication code"
TOTP_LOCKED = "Too many wrong two-factor codes; try again later"
REFRESH_REUSED = "Refresh token was already used; the tokens issued from it are revoked"
REFRESH_REVOKED = "Refresh token was revoked"
CODE_REUSED = "Authorization code was already used; the tokens issued from it are revoked"


def _seed_bundle(path: Path) -> Path:
    def put(resource_type: str, id: str, **fields: Any) -> dict[str, Any]:
        return {
            "request": {"method": "PUT", "url": f"/{resource_type}/{id}"},
            "resource": {"resourceType": resource_type, **fields},
        }

    def two_factor_user(id: str) -> dict[str, Any]:
        return put(
            "User",
            id,
            email=f"{id}@example.org",
            password=PASSWORD,
            twoFactor={"enabled": True, "secretKey": TOTP_SECRETS[id]},
        )

    entries = [
        put(
            "AuthConfig",
            "app",
            twoFactor={"validPastTokensCount": 1, "maxAttempts": MAX_TOTP_ATTEMPTS, "lockoutSeconds": 300},
        ),
        put(
            "Client",
            "app",
            first_party=True,
            secret=APP_SECRET,
            grant_types=["authorization_code", "password", "refresh_token"],
            auth={
                "authorization_code": {"redirect_uri": REDIRECT, "refresh_token": True},
                "password": {"refresh_token": True},
            },
        ),
        put(
            "Client",
            "m2m",
            secret=APP_SECRET,
            grant_types=["client_credentials"],
            auth={"client_credentials": {"token_format": "jwt", "access_token_expiration": 300}},
        ),
        put(
            "Client",
            "batch",
            secret=APP_SECRET,
            grant_types=["client_credentials"],
            auth={"client_credentials": {"access_token_expiration": 300}},
        ),
        put("User", "ann", email="ann@example.org", password=PASSWORD),
        put("User", "bob", email="bob@example.org", password=PASSWORD),
        *(two_factor_user(id) for id in TOTP_SECRETS),
    ]
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
    return path


class Pair:
    """Instance A (which seeded the database) and instance B, started after A on its own port."""

    def __init__(self, storage: str, a: LiveServer, b: LiveServer) -> None:
        self.storage = storage
        self.a = httpx2.Client(base_url=a.url, timeout=30.0, follow_redirects=False)
        self.b = httpx2.Client(base_url=b.url, timeout=30.0, follow_redirects=False)

    def close(self) -> None:
        self.a.close()
        self.b.close()


@pytest.fixture(scope="module")
def pair(mongo_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    storage = with_database(mongo_uri, f"two{uuid.uuid4().hex[:12]}")
    home = tmp_path_factory.mktemp("two-instances")
    seed = _seed_bundle(home / "seed.json")
    a = LiveServer(storage=storage, seed=[seed], env=SERVER_ENV, workdir=home / "a")
    b = LiveServer(storage=storage, env=SERVER_ENV, workdir=home / "b")
    try:
        with a, b:
            assert a.port != b.port
            servers = Pair(storage, a, b)
            yield servers
            servers.close()
    finally:
        drop_database(storage)


def _token(http: httpx2.Client, client_id: str = "app", **form: str) -> httpx2.Response:
    return http.post("/auth/token", data={"client_id": client_id, "client_secret": APP_SECRET, **form})


def _password_grant(
    http: httpx2.Client, user: str, password: str = PASSWORD, **extra: str
) -> httpx2.Response:
    return _token(http, grant_type="password", username=f"{user}@example.org", password=password, **extra)


def _error(response: httpx2.Response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body.get("error", ""), body.get("error_description", "")


def _userinfo_status(http: httpx2.Client, access_token: str) -> int:
    return http.get("/auth/userinfo", headers={"Authorization": f"Bearer {access_token}"}).status_code


def _authorization_code(instance: httpx2.Client) -> str:
    """What a browser with no session yet does through one instance: authorize, sign in on its login
    form, come back."""
    with httpx2.Client(base_url=instance.base_url, follow_redirects=False) as browser:
        query = urlencode(
            {"response_type": "code", "client_id": "app", "redirect_uri": REDIRECT, "state": "s1"}
        )
        to_login = browser.get(f"/auth/authorize?{query}")
        assert to_login.status_code == 302, to_login.text
        login_url = urljoin(str(browser.base_url), to_login.headers["location"])
        form = browser.get(login_url)
        assert form.status_code == 200
        (csrf,) = _CSRF.findall(form.text)
        (action,) = _ACTION.findall(form.text)
        signed_in = browser.post(
            urljoin(login_url, html.unescape(action)),
            data={"csrf": csrf, "username": "ann@example.org", "password": PASSWORD},
        )
        assert signed_in.status_code == 302, signed_in.text
        back = browser.get(urljoin(str(browser.base_url), signed_in.headers["location"]))
    assert back.status_code == 302, back.text
    location = back.headers["location"]
    assert location.startswith(REDIRECT + "?")
    params = parse_qs(urlsplit(location).query)
    assert params["state"] == ["s1"]
    (code,) = params["code"]
    return code


def _wrong_codes(secret: str, n: int) -> list[str]:
    step = totp.step_at(time.time())
    near = {totp.code_at(secret, s) for s in range(step - 3, step + 4)}
    candidates = (f"{k * 7919 % 1_000_000:06d}" for k in range(1, n + 20))
    return [code for code in candidates if code not in near][:n]


def _code_now(user: str) -> str:
    return totp.code_at(TOTP_SECRETS[user], totp.step_at(time.time()))


async def _lock_record(storage_url: str, user_id: str) -> dict[str, Any] | None:
    storage = open_storage(storage_url, system_clock)
    try:
        record = await storage.record_get(LOCK, user_id)
    finally:
        await storage.close()
    return None if record is None else record.document


def test_a_code_issued_and_exchanged_through_one_is_refused_by_the_other(pair: Pair) -> None:
    # The code comes from A's browser flow and is exchanged at B: the instances share the code.
    code = _authorization_code(pair.a)
    exchanged = _token(pair.b, grant_type="authorization_code", code=code, redirect_uri=REDIRECT)
    assert exchanged.status_code == 200, exchanged.text
    tokens = exchanged.json()
    assert _userinfo_status(pair.a, tokens["access_token"]) == 200

    # Reused at A: refused, and the tokens B issued from it are revoked on both instances.
    reused = _token(pair.a, grant_type="authorization_code", code=code, redirect_uri=REDIRECT)
    assert _error(reused) == (400, "invalid_grant", CODE_REUSED)
    assert _userinfo_status(pair.b, tokens["access_token"]) == 401
    assert _userinfo_status(pair.a, tokens["access_token"]) == 401
    refreshed = _token(pair.b, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert _error(refreshed) == (400, "invalid_grant", REFRESH_REVOKED)

    # A second code, exchanged at A, is refused at B.
    second = _authorization_code(pair.a)
    assert (
        _token(pair.a, grant_type="authorization_code", code=second, redirect_uri=REDIRECT).status_code == 200
    )
    again = _token(pair.b, grant_type="authorization_code", code=second, redirect_uri=REDIRECT)
    assert _error(again) == (400, "invalid_grant", CODE_REUSED)


def test_a_refresh_rotated_through_one_and_reused_through_the_other_revokes_the_family(pair: Pair) -> None:
    first = _password_grant(pair.a, "ann")
    assert first.status_code == 200, first.text
    rotated = _token(pair.a, grant_type="refresh_token", refresh_token=first.json()["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["refresh_token"] != first.json()["refresh_token"]
    assert _userinfo_status(pair.b, new["access_token"]) == 200

    reused = _token(pair.b, grant_type="refresh_token", refresh_token=first.json()["refresh_token"])
    assert _error(reused) == (400, "invalid_grant", REFRESH_REUSED)
    # The family, the tokens A issued by the rotation included, is revoked on both instances.
    assert _userinfo_status(pair.a, new["access_token"]) == 401
    assert _userinfo_status(pair.b, new["access_token"]) == 401
    after = _token(pair.a, grant_type="refresh_token", refresh_token=new["refresh_token"])
    assert _error(after) == (400, "invalid_grant", REFRESH_REVOKED)


async def test_a_password_lockout_reached_through_both_holds_on_both(pair: Pair) -> None:
    # The failures are counted in one place: two through A and the third, the one that locks, through B.
    for http in (pair.a, pair.a, pair.b):
        assert _error(_password_grant(http, "bob", "wrong password")) == (400, "invalid_grant", INVALID_LOGIN)
    lock = await _lock_record(pair.storage, "bob")
    assert lock is not None
    assert lock["failures"] == FAILURE_FACTOR
    assert lock["lockedUntil"] is not None

    # Locked: the right password is refused through either instance, in the same words as a wrong one.
    for http in (pair.a, pair.b):
        assert _error(_password_grant(http, "bob")) == (400, "invalid_grant", INVALID_LOGIN)
    # The login page of A says why in its AuditEvent.
    form = pair.a.get("/auth/login")
    (csrf,) = _CSRF.findall(form.text)
    page = pair.a.post(
        "/auth/login", data={"csrf": csrf, "username": "bob@example.org", "password": PASSWORD}
    )
    assert page.status_code == 400
    events = pair.b.get(
        "/AuditEvent", params={"action": "login", "_count": "100"}, auth=("root", ROOT_CLIENT_SECRET)
    ).json()
    reasons = [
        {detail["type"]: detail.get("valueString") for detail in event["entity"][0]["detail"]}
        for event in (entry["resource"] for entry in events.get("entry", []))
        if event["outcome"] != "success"
    ]
    assert {"reason": "locked", "username": "bob@example.org", "lockedUntil": lock["lockedUntil"]} in reasons
    assert (await _lock_record(pair.storage, "bob")) == lock


@pytest.mark.parametrize(("user", "first", "second"), [("cat", "a", "b"), ("eli", "b", "a")])
def test_a_totp_code_accepted_through_one_is_refused_by_the_other(
    pair: Pair, user: str, first: str, second: str
) -> None:
    code = _code_now(user)
    accepted = _password_grant(getattr(pair, first), user, totp=code)
    assert accepted.status_code == 200, accepted.text
    replayed = _password_grant(getattr(pair, second), user, totp=code)
    assert _error(replayed) == (400, "invalid_grant", TOTP_INVALID)


def test_a_totp_attempt_limit_reached_through_both_holds_on_both(pair: Pair) -> None:
    wrong = _wrong_codes(TOTP_SECRETS["dan"], MAX_TOTP_ATTEMPTS)
    answers = [
        _error(_password_grant(http, "dan", totp=guess))
        for http, guess in zip((pair.a, pair.b, pair.a), wrong, strict=True)
    ]
    assert answers[:-1] == [(400, "invalid_grant", TOTP_INVALID)] * (MAX_TOTP_ATTEMPTS - 1)
    # Locked now: the right code is refused through both instances.
    for http in (pair.b, pair.a):
        assert _error(_password_grant(http, "dan", totp=_code_now("dan"))) == (
            400,
            "invalid_grant",
            TOTP_LOCKED,
        )


def _kid(jwt: str) -> str:
    header = jwt.split(".", 1)[0]
    kid: str = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
    return kid


def _rs256_kids(http: httpx2.Client) -> list[str]:
    return [key["kid"] for key in http.get("/.well-known/jwks.json").json()["keys"] if key["alg"] == "RS256"]


def test_a_key_rotation_is_published_by_both_within_the_documented_bound(pair: Pair) -> None:
    (old,) = _rs256_kids(pair.b)
    assert _rs256_kids(pair.a) == [old]
    assert _kid(_token(pair.b, "m2m", grant_type="client_credentials").json()["access_token"]) == old

    rotated = subprocess.run(
        fhirauth_command("keys", "rotate", "--alg", "RS256"),
        env=fhirauth_environment(pair.storage),
        capture_output=True,
        text=True,
        timeout=120,
    )
    rotated_at = time.monotonic()
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.split()[3].rstrip(":")
    assert rotated.stdout.startswith(f"new signing key {new}: RS256, in the JWKS of every server within 10 s")
    assert RELOAD_SECONDS == 10

    published: dict[str, float] = {}
    while len(published) < 2 and time.monotonic() - rotated_at <= RELOAD_SECONDS + _SLACK_SECONDS:
        for name, http in (("a", pair.a), ("b", pair.b)):
            if name not in published and _rs256_kids(http) == [new, old]:
                published[name] = time.monotonic() - rotated_at
        time.sleep(_POLL_SECONDS)
    assert set(published) == {"a", "b"}, f"published after {published} s"
    # Published ahead of use: neither instance signs with the new key yet.
    for http in (pair.a, pair.b):
        assert _kid(_token(http, "m2m", grant_type="client_credentials").json()["access_token"]) == old


def test_a_token_revoked_through_one_is_refused_by_the_other(pair: Pair) -> None:
    tokens = _password_grant(pair.a, "ann").json()
    assert _userinfo_status(pair.b, tokens["access_token"]) == 200
    revoked = pair.b.post("/auth/revoke", data={"token": tokens["access_token"]}, auth=("app", APP_SECRET))
    assert revoked.status_code == 200
    assert _userinfo_status(pair.a, tokens["access_token"]) == 401
    introspected = pair.a.post(
        "/auth/introspect", data={"token": tokens["access_token"]}, auth=("app", APP_SECRET)
    )
    assert introspected.json() == {"active": False}


def test_a_client_deactivated_through_one_is_refused_by_the_other_within_the_documented_bound(
    pair: Pair,
) -> None:
    # B has the client in its cache, as a busy instance would.
    assert _token(pair.b, "batch", grant_type="client_credentials").status_code == 200
    stored = pair.a.get("/Client/batch", auth=("root", ROOT_CLIENT_SECRET)).json()
    stored.pop("meta")
    changed = pair.a.put("/Client/batch", json={**stored, "active": False}, auth=("root", ROOT_CLIENT_SECRET))
    assert changed.status_code == 200, changed.text
    changed_at = time.monotonic()
    # Through A at once: the write cleared its own cache.
    assert _error(_token(pair.a, "batch", grant_type="client_credentials"))[:2] == (401, "invalid_client")
    while True:
        answer = _token(pair.b, "batch", grant_type="client_credentials")
        elapsed = time.monotonic() - changed_at
        if answer.status_code != 200:
            break
        assert elapsed <= CLIENT_CACHE_SECONDS + _SLACK_SECONDS, "B still issues tokens to the client"
        time.sleep(_POLL_SECONDS)
    assert _error(answer)[:2] == (401, "invalid_client")
