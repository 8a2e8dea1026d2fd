"""Failed client authentication over HTTP, on both backends: counted per address and per client id in
storage, refused past either limit with 429 and no Argon2id run, on the OAuth endpoints and the REST
API alike; a full hashing queue answers 503 at once, in each face's own format.

The apps trust X-Forwarded-For (as behind a reverse proxy), so each request can come from an address
of its own; the limits are 3 a minute so that few requests reach them, and the other limits are off.
Argon2id runs are counted on the app's real PasswordHasher (`GatedHasher`, test-sized cost).
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.testclient import TestClient

from fhirauth.app import create_app
from fhirauth.auth.bruteforce import FAILURES, LOCK
from fhirauth.clock import ManualClock
from fhirauth.ratelimit import RATE_KIND, _record_key
from tests.api.conftest import NO_AUTH, ROOT, settings_for
from tests.api.pages_support import alert, call, csrf_from, services
from tests.auth.hashers import GatedHasher

SECRET = "app-secret"
PASSWORD = "correct horse battery staple"
LIMITS = {
    "rate_limit_client_auth_ip": "3/minute",
    "rate_limit_client_auth_client": "3/minute",
    "rate_limit_login_ip": "off",
    "rate_limit_login_account": "off",
    "rate_limit_token_ip": "off",
    "rate_limit_signup_ip": "off",
    "rate_limit_signup_email": "off",
    "rate_limit_two_factor_ip": "off",
}
TOO_MANY_JSON = {
    "error": "invalid_request",
    "error_description": "Too many requests; try again in 60 seconds",
}
TOO_MANY_OUTCOME = {
    "resourceType": "OperationOutcome",
    "issue": [
        {
            "severity": "error",
            "code": "throttled",
            "diagnostics": "Too many requests; try again in 60 seconds",
        }
    ],
}
INVALID_CLIENT = {"error": "invalid_client", "error_description": "Invalid client credentials"}
NOT_AUTHENTICATED = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "login", "diagnostics": "Invalid client credentials"}],
}


@contextmanager
def client(storage: str, clock: ManualClock, hasher: GatedHasher, **settings: Any) -> Iterator[TestClient]:
    app_settings = settings_for(storage, trust_proxy_headers=True, **{**LIMITS, **settings})
    app = create_app(app_settings, clock=clock, passwords=hasher)
    with TestClient(app, raise_server_exceptions=False, headers={"Authorization": ROOT}) as test_client:
        yield test_client


@pytest.fixture
def hasher() -> GatedHasher:
    return GatedHasher()


@pytest.fixture
def api(storage_url: str, clock: ManualClock, hasher: GatedHasher) -> Iterator[TestClient]:
    with client(storage_url, clock, hasher) as test_client:
        put_client(test_client)
        yield test_client


def put_client(api: TestClient, id: str = "app") -> None:
    body = {
        "resourceType": "Client",
        "secret": SECRET,
        "grant_types": ["client_credentials", "basic", "password"],
    }
    assert api.put(f"/Client/{id}", json=body).status_code in (200, 201)


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def grant(api: TestClient, address: str, client_id: str = "app", secret: str = "wrong") -> httpx2.Response:
    headers = {"Authorization": basic(client_id, secret), "X-Forwarded-For": address}
    return api.post("/auth/token", data={"grant_type": "client_credentials"}, headers=headers)


def read(api: TestClient, address: str, client_id: str = "app", secret: str = "wrong") -> httpx2.Response:
    return api.get("/User", headers={"Authorization": basic(client_id, secret), "X-Forwarded-For": address})


def counters(api: TestClient, *addresses: str) -> bool:
    """Whether a failure is stored for the client `app` or for any of `addresses`."""
    storage = services(api).storage
    names = [("client-auth-client", "app"), *(("client-auth-ip", address) for address in addresses)]
    keys = [_record_key(limit, key) for limit, key in names]
    return any(call(api, storage.record_get, RATE_KIND, key) is not None for key in keys)


def assert_json_429(response: httpx2.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == "60"
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == TOO_MANY_JSON


def assert_outcome_429(response: httpx2.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == "60"
    assert response.json() == TOO_MANY_OUTCOME


# Per client id


def test_wrong_secrets_past_the_client_limit_are_refused_without_hashing(
    api: TestClient, hasher: GatedHasher, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    assert grant(api, "192.0.2.1", secret=SECRET).status_code == 200
    assert hasher.verifications == 1
    assert not counters(api, "192.0.2.1")
    # Each from an address of its own: only the client's count can reach its limit.
    for n in range(3):
        response = grant(api, f"198.51.100.{n}")
        assert (response.status_code, response.json()) == (401, INVALID_CLIENT)
    assert hasher.verifications == 4
    assert counters(api)
    with caplog.at_level(logging.WARNING, logger="fhirauth.limits"):
        assert_json_429(grant(api, "198.51.100.0"))
        assert_json_429(grant(api, "198.51.100.1", secret="another wrong one"))
        # The same count, whichever way the secret comes.
        form = {"grant_type": "client_credentials", "client_id": "app", "client_secret": "wrong"}
        assert_json_429(
            api.post("/auth/token", data=form, headers={**NO_AUTH, "X-Forwarded-For": "198.51.100.2"})
        )
        assert_outcome_429(read(api, "198.51.100.0"))
    assert hasher.verifications == 4
    # Logged once a window, not once a refusal.
    assert [r.getMessage() for r in caplog.records if r.name == "fhirauth.limits"] == [
        "rate limit client-auth-client reached (client 198.51.100.0); refusing for 60 s"
    ]
    # The secret verified before the flood still passes: these limits spare what costs no hashing.
    assert grant(api, "192.0.2.1", secret=SECRET).status_code == 200
    clock.advance(59)
    assert grant(api, "198.51.100.0").headers["retry-after"] == "1"
    clock.advance(1)
    assert grant(api, "198.51.100.0").status_code == 401
    assert hasher.verifications == 5


def test_past_the_client_limit_only_addresses_that_failed_are_refused(
    api: TestClient, hasher: GatedHasher
) -> None:
    for n in range(3):
        assert grant(api, f"198.51.100.{n}").status_code == 401
    assert_json_429(grant(api, "198.51.100.0"))
    assert hasher.verifications == 3
    # Where the client authenticates from nothing has failed: its secret, not yet verified in this
    # process, is heard and accepted. A flood naming the client does not lock it out.
    assert grant(api, "192.0.2.1", secret=SECRET).status_code == 200
    assert hasher.verifications == 4
    # A new address is heard once; having failed, it is refused like the others.
    assert grant(api, "198.51.100.9").status_code == 401
    assert_json_429(grant(api, "198.51.100.9"))
    assert hasher.verifications == 5


# Per address


def test_failures_from_one_address_are_refused_past_the_address_limit(
    api: TestClient, hasher: GatedHasher
) -> None:
    assert read(api, "203.0.113.7", "nobody-1").json() == NOT_AUTHENTICATED
    assert read(api, "203.0.113.7", "nobody-2").status_code == 401
    assert read(api, "203.0.113.7").status_code == 401
    assert hasher.verifications == 1
    assert_outcome_429(read(api, "203.0.113.7", "nobody-3"))
    assert_json_429(grant(api, "203.0.113.7"))
    assert hasher.verifications == 1
    # Another address is counted on its own (the client's own count is at 1 of 3).
    assert read(api, "203.0.113.8").status_code == 401
    assert hasher.verifications == 2
    # The root client's secret too, right as it is: refused before it is compared; elsewhere, answered.
    assert_outcome_429(api.get("/User", headers={"X-Forwarded-For": "203.0.113.7"}))
    assert api.get("/User", headers={"X-Forwarded-For": "203.0.113.8"}).status_code == 200


def test_unknown_client_ids_cost_no_verification(api: TestClient, hasher: GatedHasher) -> None:
    for _ in range(3):
        response = grant(api, "203.0.113.9", f"random-{uuid.uuid4().hex}")
        assert (response.status_code, response.json()) == (401, INVALID_CLIENT)
    assert_json_429(grant(api, "203.0.113.9", "random-again"))
    assert hasher.verifications == 0


# Across workers: two apps on one storage are two workers, each with its own process state.


@pytest.fixture
def shared_storage(storage_url: str, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'shared.db'}" if storage_url.startswith("sqlite") else storage_url


def test_failures_are_counted_across_workers(shared_storage: str, clock: ManualClock) -> None:
    first_hasher, second_hasher = GatedHasher(), GatedHasher()
    with (
        client(shared_storage, clock, first_hasher) as first,
        client(shared_storage, clock, second_hasher) as second,
    ):
        put_client(first)
        assert [grant(first, f"198.51.100.{n}").status_code for n in range(3)] == [401, 401, 401]
        assert_json_429(grant(first, "198.51.100.0"))
        # The second worker has seen no failure yet: it spends one verification, whose counts tell it
        # that the client is past its limit and this address has failed, and refuses from then on.
        assert grant(second, "198.51.100.1").status_code == 401
        assert_json_429(grant(second, "198.51.100.1"))
        assert_outcome_429(read(second, "198.51.100.1"))
        assert (first_hasher.verifications, second_hasher.verifications) == (3, 1)


# The hashing queue


@pytest.fixture
def busy(storage_url: str, clock: ManualClock) -> Iterator[tuple[TestClient, GatedHasher]]:
    """An app whose one hashing thread is taken by a held verification, with no room to queue."""
    hasher = GatedHasher(threads=1, queue=0)
    with client(storage_url, clock, hasher) as test_client, ThreadPoolExecutor(1) as pool:
        put_client(test_client)
        # The requests refused below name another client: one client's secrets wait for their turn.
        put_client(test_client, "other")
        assert (
            test_client.put("/User/ann", json={"email": "ann@example.org", "password": PASSWORD}).status_code
            == 201
        )
        hasher.hold()
        held = pool.submit(grant, test_client, "192.0.2.1", "app", SECRET)
        assert hasher.entered.wait(5)
        try:
            yield test_client, hasher
        finally:
            hasher.release()
        assert held.result().status_code == 200


def test_a_full_queue_refuses_hashing_at_once(busy: tuple[TestClient, GatedHasher]) -> None:
    api, hasher = busy
    # The token endpoint: RFC 6749 §4.1.2.1's temporarily_unavailable.
    response = api.post(
        "/auth/token",
        data={"grant_type": "password", "username": "ann@example.org", "password": PASSWORD},
        headers={"Authorization": basic("other", SECRET), "X-Forwarded-For": "192.0.2.2"},
    )
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {
        "error": "temporarily_unavailable",
        "error_description": "The server is busy; try again in 1 second",
    }
    # The REST API: a password to hash on write, and Basic credentials to verify.
    busy_outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "fatal",
                "code": "transient",
                "diagnostics": "The server is busy; try again in 1 second",
            }
        ],
    }
    written = api.put("/User/bob", json={"email": "bob@example.org", "password": PASSWORD})
    assert (written.status_code, written.headers["retry-after"], written.json()) == (503, "1", busy_outcome)
    assert api.get("/User/bob").status_code == 404
    checked = read(api, "192.0.2.3", "other", SECRET)
    assert (checked.status_code, checked.headers["retry-after"], checked.json()) == (503, "1", busy_outcome)
    # The login page.
    token = csrf_from(api.get("/auth/login"))
    form = {"csrf": token, "username": "ann@example.org", "password": PASSWORD}
    page = api.post(
        "/auth/login", data=form, headers={"X-Forwarded-For": "192.0.2.4"}, follow_redirects=False
    )
    assert (page.status_code, page.headers["retry-after"]) == (503, "1")
    assert page.headers["content-type"].startswith("text/html")
    assert alert(page) == "The server is busy. Try again in 1 second."
    # None of them ran a verification, or counted as a failed client authentication.
    assert hasher.verifications == 1
    assert not counters(api, "192.0.2.2", "192.0.2.3", "192.0.2.4")


def test_sign_ins_refused_by_a_full_queue_spend_no_lockout_attempt(
    busy: tuple[TestClient, GatedHasher],
) -> None:
    """A 503 checked no password: it must not bring the account closer to its lockout."""
    api, hasher = busy
    storage = services(api).storage
    # The login page: no client to authenticate first, so the password is what would be hashed.
    for address in ("192.0.2.5", "192.0.2.6", "192.0.2.7"):
        form = {"csrf": csrf_from(api.get("/auth/login")), "username": "ann@example.org", "password": "wrong"}
        page = api.post(
            "/auth/login", data=form, headers={"X-Forwarded-For": address}, follow_redirects=False
        )
        assert page.status_code == 503, page.text
    assert call(api, storage.record_get, FAILURES, "ann/0") is None
    assert call(api, storage.record_get, LOCK, "ann") is None
    assert hasher.verifications == 1


def test_a_full_queue_refuses_a_batch_entry_alone(busy: tuple[TestClient, GatedHasher]) -> None:
    api, _ = busy
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "PUT", "url": "/User/carol"}, "resource": {"resourceType": "User"}},
            {
                "request": {"method": "PUT", "url": "/User/dave"},
                "resource": {"resourceType": "User", "password": PASSWORD},
            },
        ],
    }
    response = api.post("/", json=batch)
    # The first entry was written: the whole batch answering 503 would have the client send it again.
    assert response.status_code == 200, response.text
    first, second = response.json()["entry"]
    assert first["response"]["status"] == "201 Created"
    assert second["response"] == {
        "status": "503",
        "outcome": {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "fatal",
                    "code": "transient",
                    "diagnostics": "Bundle.entry[1]: The server is busy; try again in 1 second",
                }
            ],
        },
    }
    assert (api.get("/User/carol").status_code, api.get("/User/dave").status_code) == (200, 404)
