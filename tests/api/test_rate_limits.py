"""Abuse limits over HTTP on both backends: 429 with Retry-After per address and per account, the window
passing when the clock moves, and a locked account that reads exactly like a wrong password.

The apps here trust X-Forwarded-For (as behind a reverse proxy), so each request can come from an
address of its own; the limits are small so that few requests reach them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import pytest
from starlette.testclient import TestClient

from fhirauth.app import create_app
from fhirauth.clock import ManualClock
from tests.api.conftest import NO_AUTH, ROOT, settings_for
from tests.api.pages_support import alert, audit_detail, audit_events, call, create_user, csrf_from, services

PASSWORD = "correct horse battery staple"
REFUSED = "Wrong e-mail, username or password."
TOO_MANY_JSON = {
    "error": "invalid_request",
    "error_description": "Too many requests; try again in 60 seconds",
}
SMALL_LIMITS = {
    "rate_limit_login_ip": "3/minute",
    "rate_limit_login_account": "2/minute",
    "rate_limit_token_ip": "3/minute",
    "rate_limit_signup_ip": "3/minute",
    "rate_limit_signup_email": "2/hour",
    "rate_limit_two_factor_ip": "3/minute",
}
NO_LIMITS = {name: "off" for name in SMALL_LIMITS}


@contextmanager
def client(storage_url: str, clock: ManualClock, **settings: Any) -> Iterator[TestClient]:
    app = create_app(settings_for(storage_url, **{"trust_proxy_headers": True, **settings}), clock=clock)
    with TestClient(app, raise_server_exceptions=False, headers={"Authorization": ROOT}) as test_client:
        yield test_client


@pytest.fixture
def limited(storage_url: str, clock: ManualClock) -> Iterator[TestClient]:
    with client(storage_url, clock, **SMALL_LIMITS) as test_client:
        yield test_client


def source(address: str) -> dict[str, str]:
    # A client may write anything on the left; the proxy appends the address it saw.
    return {"X-Forwarded-For": f"10.9.8.7, {address}"}


def login(api: TestClient, username: str, password: str, address: str) -> httpx2.Response:
    token = csrf_from(api.get("/auth/login"))
    form = {"csrf": token, "username": username, "password": password}
    return api.post("/auth/login", data=form, headers=source(address), follow_redirects=False)


def token(api: TestClient, address: str, **form: str) -> httpx2.Response:
    return api.post("/auth/token", data=form, headers={**NO_AUTH, **source(address)})


def password_grant(api: TestClient, address: str, password: str = PASSWORD) -> httpx2.Response:
    form = {"client_id": "app", "client_secret": "app-secret", "grant_type": "password"}
    return token(api, address, username="ann@example.org", password=password, **form)


def signup(api: TestClient, email: str, address: str) -> httpx2.Response:
    token = csrf_from(api.get("/auth/signup"))
    return api.post("/auth/signup", data={"csrf": token, "email": email}, headers=source(address))


def assert_page_429(response: httpx2.Response, retry_after: str, message: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == retry_after
    assert response.headers["content-type"].startswith("text/html")
    assert alert(response) == message


def assert_json_429(response: httpx2.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == "60"
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == TOO_MANY_JSON


def setup_password_client(api: TestClient) -> None:
    body = {
        "resourceType": "Client",
        "secret": "app-secret",
        "grant_types": ["password", "client_credentials"],
    }
    assert api.put("/Client/app", json=body).status_code in (200, 201)
    create_user(api, "ann")


# Per address


def test_login_per_address(limited: TestClient, clock: ManualClock) -> None:
    statuses = [login(limited, f"user{n}@example.org", "x", "203.0.113.1").status_code for n in range(3)]
    assert statuses == [400, 400, 400]
    assert_page_429(
        login(limited, "user9@example.org", "x", "203.0.113.1"),
        "60",
        "Too many attempts. Try again in 60 seconds.",
    )
    # Another address is counted on its own.
    assert login(limited, "user9@example.org", "x", "203.0.113.2").status_code == 400
    clock.advance(59)
    assert login(limited, "user9@example.org", "x", "203.0.113.1").headers["retry-after"] == "1"
    clock.advance(1)
    assert login(limited, "user9@example.org", "x", "203.0.113.1").status_code == 400


def test_an_ipv6_subscriber_is_counted_by_its_slash_64(limited: TestClient) -> None:
    for n in range(3):
        assert login(limited, f"u{n}@example.org", "x", f"2001:db8:1:2::{n + 1}").status_code == 400
    assert login(limited, "u9@example.org", "x", "2001:db8:1:2:ffff::9").status_code == 429
    assert login(limited, "u9@example.org", "x", "2001:db8:1:3::1").status_code == 400


def test_forwarded_for_is_ignored_unless_trusted(storage_url: str, clock: ManualClock) -> None:
    with client(storage_url, clock, trust_proxy_headers=False, rate_limit_token_ip="2/minute") as api:
        assert [token(api, f"203.0.113.{n}").status_code for n in range(2)] == [400, 400]
        # Every request comes from the one socket peer, whatever the header says.
        assert_json_429(token(api, "203.0.113.77"))


def test_token_per_address(limited: TestClient, clock: ManualClock) -> None:
    assert [token(limited, "198.51.100.1").status_code for _ in range(3)] == [400, 400, 400]
    assert_json_429(token(limited, "198.51.100.1", grant_type="client_credentials"))
    assert token(limited, "198.51.100.2").status_code == 400
    clock.advance(60)
    assert token(limited, "198.51.100.1").status_code == 400


def test_signup_per_address(limited: TestClient) -> None:
    assert [signup(limited, f"new{n}@example.org", "192.0.2.1").status_code for n in range(3)] == [200] * 3
    assert_page_429(
        signup(limited, "new9@example.org", "192.0.2.1"), "60", "Too many attempts. Try again in 60 seconds."
    )
    assert signup(limited, "new9@example.org", "192.0.2.2").status_code == 200


def test_two_factor_step_per_address(limited: TestClient, clock: ManualClock) -> None:
    # The page form and the JSON operations share one count per address.
    token = csrf_from(limited.get("/auth/login"))
    verify = limited.post(
        "/auth/two-factor/verify", data={"csrf": token, "code": "123456"}, headers=source("192.0.2.9")
    )
    assert verify.status_code == 400  # no sign-in in progress
    for _ in range(2):
        response = limited.post(
            "/app/auth/two-factor/confirm",
            json={"token": "123456"},
            headers={**NO_AUTH, **source("192.0.2.9")},
        )
        assert response.status_code == 401
    assert_json_429(
        limited.post(
            "/app/auth/two-factor/confirm", json={"token": "1"}, headers={**NO_AUTH, **source("192.0.2.9")}
        )
    )
    refused = limited.post(
        "/auth/two-factor/verify", data={"csrf": token, "code": "123456"}, headers=source("192.0.2.9")
    )
    assert_page_429(refused, "60", "Too many attempts. Try again in 60 seconds.")
    clock.advance(60)
    again = limited.post(
        "/auth/two-factor/verify", data={"csrf": token, "code": "1"}, headers=source("192.0.2.9")
    )
    assert again.status_code == 400


def test_one_log_line_per_window_however_long_the_flood(
    limited: TestClient, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="fhirauth.limits"):
        for _ in range(10):
            token(limited, "198.51.100.9")
        clock.advance(60)
        for _ in range(5):
            token(limited, "198.51.100.9")
    assert [record.getMessage() for record in caplog.records if record.name == "fhirauth.limits"] == [
        "rate limit token-ip reached (client 198.51.100.9); refusing for 60 s",
        "rate limit token-ip reached (client 198.51.100.9); refusing for 60 s",
    ]


def test_reads_and_other_routes_are_not_limited(limited: TestClient) -> None:
    for _ in range(10):
        assert limited.get("/auth/login", headers=source("192.0.2.50")).status_code == 200
        assert limited.get("/health", headers=source("192.0.2.50")).status_code == 200


def test_default_limits(api: TestClient) -> None:
    # 30 sign-in posts and 60 token requests a minute per address, however malformed.
    assert {api.post("/auth/login", data={}).status_code for _ in range(30)} == {403}
    assert api.post("/auth/login", data={}).status_code == 429
    assert {api.post("/auth/token", data={}, headers=NO_AUTH).status_code for _ in range(60)} == {400}
    assert_json_429(api.post("/auth/token", data={}, headers=NO_AUTH))


def test_storage_down_at_the_edge_is_a_503(storage_url: str, clock: ManualClock) -> None:
    if not storage_url.startswith("sqlite"):
        pytest.skip("closing the store by hand is how SQLite goes away; MongoDB outages are tested elsewhere")
    with client(storage_url, clock) as api:
        call(api, services(api).storage.close)
        response = api.post("/auth/login", data={})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["issue"][0]["code"] == "transient"


# Per account


def test_login_per_account_from_any_address(limited: TestClient, clock: ManualClock) -> None:
    create_user(limited, "ann")
    assert login(limited, "ann@example.org", "wrong", "203.0.113.1").status_code == 400
    assert login(limited, "ann@example.org", PASSWORD, "203.0.113.2").status_code == 302
    assert_page_429(
        login(limited, "ANN@example.org", PASSWORD, "203.0.113.3"),
        "60",
        "Too many attempts. Try again in 60 seconds.",
    )
    # A name nobody has is limited the same way: the 429 tells nothing about which accounts exist.
    for address in ("203.0.113.4", "203.0.113.5"):
        assert login(limited, "nobody@example.org", "wrong", address).status_code == 400
    assert login(limited, "nobody@example.org", "wrong", "203.0.113.6").status_code == 429
    clock.advance(60)
    assert login(limited, "ann@example.org", PASSWORD, "203.0.113.3").status_code == 302


def test_the_password_grant_shares_the_account_count_with_the_page(limited: TestClient) -> None:
    setup_password_client(limited)
    assert login(limited, "ann@example.org", PASSWORD, "198.51.100.1").status_code == 302
    assert password_grant(limited, "198.51.100.2").status_code == 200
    assert_json_429(password_grant(limited, "198.51.100.3"))
    # Other grants of the same client are not counted against ann.
    ok = token(
        limited, "198.51.100.3", grant_type="client_credentials", client_id="app", client_secret="app-secret"
    )
    assert ok.status_code == 200


def test_signup_per_email(limited: TestClient, clock: ManualClock) -> None:
    create_user(limited, "ann")
    for address in ("192.0.2.1", "192.0.2.2"):
        assert signup(limited, "Ann@Example.org", address).status_code == 200
    assert_page_429(
        signup(limited, "ann@example.org", "192.0.2.3"), "3600", "Too many attempts. Try again in 60 minutes."
    )
    # Addresses without an account are limited alike.
    for address in ("192.0.2.1", "192.0.2.2"):
        assert signup(limited, "fresh@example.org", address).status_code == 200
    assert signup(limited, "fresh@example.org", "192.0.2.3").status_code == 429
    clock.advance(3600)
    assert signup(limited, "ann@example.org", "192.0.2.3").status_code == 200


def test_two_factor_per_account_is_the_code_lockout(limited: TestClient, clock: ManualClock) -> None:
    auth_config = {"resourceType": "AuthConfig", "twoFactor": {"maxAttempts": 2, "lockoutSeconds": 90}}
    assert limited.put("/AuthConfig/app", json=auth_config).status_code == 201
    create_user(limited, "ann", twoFactor={"enabled": True, "secretKey": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"})
    assert (
        login(limited, "ann@example.org", PASSWORD, "203.0.113.1").headers["location"]
        == "/auth/two-factor/verify"
    )
    token = csrf_from(limited.get("/auth/two-factor/verify"))
    statuses = []
    for n, code in enumerate(("000000", "000001", "000002")):
        response = limited.post(
            "/auth/two-factor/verify",
            data={"csrf": token, "code": code},
            headers=source(f"203.0.113.{10 + n}"),
        )
        statuses.append(response.status_code)
    assert statuses == [400, 400, 429]
    assert response.headers["retry-after"] == "90"
    assert alert(response) == "Too many wrong codes. Try again in 2 minutes."


# The brute-force lock behind both faces


@pytest.fixture
def guarded(storage_url: str, clock: ManualClock) -> Iterator[TestClient]:
    with client(storage_url, clock, **NO_LIMITS, brute_force_failure_factor=3) as test_client:
        yield test_client


def test_a_locked_account_reads_exactly_like_a_wrong_password(
    guarded: TestClient, clock: ManualClock
) -> None:
    setup_password_client(guarded)
    wrong_page = login(guarded, "ann@example.org", "wrong", "203.0.113.1")
    wrong_grant = password_grant(guarded, "203.0.113.1", "wrong")
    assert login(guarded, "ann@example.org", "wrong", "203.0.113.1").status_code == 400
    # Three failures: locked for 60 s. The right password now gets the wrong password's answers.
    locked_page = login(guarded, "ann@example.org", PASSWORD, "203.0.113.2")
    locked_grant = password_grant(guarded, "203.0.113.2")
    assert (
        (locked_page.status_code, alert(locked_page))
        == (wrong_page.status_code, alert(wrong_page))
        == (400, REFUSED)
    )
    assert (locked_grant.status_code, locked_grant.json()) == (wrong_grant.status_code, wrong_grant.json())
    assert locked_grant.json() == {
        "error": "invalid_grant",
        "error_description": "Invalid username or password",
    }
    assert "retry-after" not in locked_page.headers and "retry-after" not in locked_grant.headers
    # The clock stands still, so the events are compared as a set: reason and lock of each.
    failures = sorted(
        (detail["reason"], detail.get("lockedUntil", ""))
        for detail in map(audit_detail, audit_events(guarded, "login"))
    )
    assert failures == [
        ("locked", "2026-01-01T00:01:00.000Z"),
        ("wrong-password", ""),
        ("wrong-password", "2026-01-01T00:01:00.000Z"),
    ]
    clock.advance(60)
    assert password_grant(guarded, "203.0.113.3").status_code == 200
