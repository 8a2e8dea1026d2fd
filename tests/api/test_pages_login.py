"""The login and logout pages: credentials, the session cookie, CSRF, continuation, bad input."""

from __future__ import annotations

import base64
import statistics
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient

from fhirauth.app import create_app
from tests.api.conftest import settings_for
from tests.api.pages_support import (
    PASSWORD,
    alert,
    audit_detail,
    audit_events,
    call,
    cookie_attributes,
    create_user,
    csrf_from,
    login,
    services,
    set_cookies,
)

REFUSED = "Wrong e-mail, username or password."


def browser_sessions(api: TestClient, user_id: str) -> list[dict[str, Any]]:
    bundle = api.get("/Session", params={"type": "browser", "user.id": user_id}).json()
    return [entry["resource"] for entry in bundle["entry"]]


def test_login_page_is_themed_and_carries_csrf(api: TestClient) -> None:
    api.put(
        "/AuthConfig/app",
        json={
            "resourceType": "AuthConfig",
            "theme": {
                "title": "ACME <Portal>",
                "brand": "ACME",
                "styleUrl": "https://cdn.example.org/acme.css",
            },
        },
    )
    page = api.get("/auth/login")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>Sign in · ACME &lt;Portal&gt;</title>" in page.text
    assert '<p class="brand">ACME</p>' in page.text
    assert '<link rel="stylesheet" href="/static/fhirauth.css">' in page.text
    assert '<link rel="stylesheet" href="https://cdn.example.org/acme.css">' in page.text
    assert "<script" not in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    csrf_cookie = set_cookies(page)["fhirauth_csrf"]
    _, attributes = cookie_attributes(csrf_cookie)
    assert "httponly" in attributes
    assert attributes["samesite"] == "Lax"
    assert len(csrf_from(page)) == 64


def test_default_theme_and_stylesheet(api: TestClient) -> None:
    page = api.get("/auth/login")
    assert "<title>Sign in · fhirauth</title>" in page.text
    assert '<p class="brand">fhirauth</p>' in page.text
    css = api.get("/static/fhirauth.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert ".card" in css.text


def test_a_theme_url_that_is_not_http_is_dropped(api: TestClient) -> None:
    api.put(
        "/AuthConfig/app",
        json={"resourceType": "AuthConfig", "theme": {"styleUrl": "javascript:alert(1)"}},
    )
    assert "javascript:" not in api.get("/auth/login").text


def test_login_by_email_username_or_id(api: TestClient) -> None:
    create_user(api, "ann", userName="ann.l")
    for username in ("ann@example.org", "ann.l", "ann"):
        api.cookies.clear()
        response = login(api, username)
        assert response.status_code == 302, username
        assert response.headers["location"] == "/auth/two-factor"
        assert "asid" in set_cookies(response)


def test_session_cookie_attributes_and_session_resource(api: TestClient) -> None:
    create_user(api, "ann")
    response = login(api, "ann@example.org")
    value, attributes = cookie_attributes(set_cookies(response)["asid"])
    assert "httponly" in attributes
    assert attributes["samesite"] == "Lax"
    assert attributes["path"] == "/"
    assert attributes["max-age"] == "432000"
    assert "secure" not in attributes
    [session] = browser_sessions(api, "ann")
    assert session["active"] is True
    assert session["user"] == {"resourceType": "User", "id": "ann"}
    assert session["exp"] == int(services(api).clock().timestamp()) + 432000
    # The cookie is the token; storage has only its hash, and the API never shows it.
    assert "access_token" not in session
    assert value not in api.get(f"/Session/{session['id']}").text


def test_cookie_max_age_follows_auth_config(api: TestClient) -> None:
    api.put("/AuthConfig/app", json={"resourceType": "AuthConfig", "asidCookieMaxAge": 600})
    create_user(api, "ann")
    _, attributes = cookie_attributes(set_cookies(login(api, "ann"))["asid"])
    assert attributes["max-age"] == "600"


@pytest.fixture
def https_api(storage_url: str, clock: object) -> Iterator[TestClient]:
    app = create_app(settings_for(storage_url, base_url="https://auth.example.org"), clock=clock)  # type: ignore[arg-type]
    with TestClient(
        app, base_url="https://auth.example.org", raise_server_exceptions=False, headers={"Authorization": ""}
    ) as client:
        yield client


def test_cookies_are_secure_when_the_base_url_is_https(https_api: TestClient) -> None:
    call(
        https_api,
        services(https_api).resources.create,
        "User",
        {"email": "ann@example.org", "password": PASSWORD},
    )
    page = https_api.get("/auth/login")
    assert "secure" in cookie_attributes(set_cookies(page)["fhirauth_csrf"])[1]
    response = login(https_api, "ann@example.org")
    assert response.status_code == 302
    assert "secure" in cookie_attributes(set_cookies(response)["asid"])[1]


def test_each_login_gets_a_new_session_and_ends_the_previous_one(api: TestClient) -> None:
    create_user(api, "ann")
    first, _ = cookie_attributes(set_cookies(login(api, "ann"))["asid"])
    second, _ = cookie_attributes(set_cookies(login(api, "ann"))["asid"])
    assert first != second
    assert api.cookies["asid"] == second
    sessions = browser_sessions(api, "ann")
    assert sorted(s["active"] for s in sessions) == [False, True]


def test_unknown_user_and_wrong_password_look_the_same(api: TestClient) -> None:
    create_user(api, "ann")
    wrong = login(api, "ann@example.org", "not the password")
    unknown = login(api, "nobody@example.org", "not the password")
    assert wrong.status_code == unknown.status_code == 400
    assert alert(wrong) == alert(unknown) == REFUSED
    assert "asid" not in set_cookies(wrong)
    assert "asid" not in set_cookies(unknown)
    # The form keeps the username, so the page differs only by what was typed.
    assert wrong.text.replace("ann@example.org", "X") == unknown.text.replace("nobody@example.org", "X")
    failures = [(audit_detail(e)["reason"], audit_detail(e)["username"]) for e in audit_events(api, "login")]
    assert sorted(failures) == [("unknown-user", "nobody@example.org"), ("wrong-password", "ann@example.org")]
    for event in audit_events(api, "login"):
        assert event["outcome"] == "failure"
        assert "not the password" not in str(event)


def test_unknown_user_costs_a_password_verification(api: TestClient) -> None:
    create_user(api, "ann")
    token = csrf_from(api.get("/auth/login"))

    def seconds(username: str) -> float:
        started = time.perf_counter()
        api.post("/auth/login", data={"csrf": token, "username": username, "password": "wrong password"})
        return time.perf_counter() - started

    # Taking turns keeps a change in the machine's load from falling on one side only.
    pairs = [(seconds("ann@example.org"), seconds("nobody@example.org")) for _ in range(7)]
    wrong_password = statistics.median(p[0] for p in pairs)
    unknown_user = statistics.median(p[1] for p in pairs)
    # Without the dummy Argon2 verification an unknown user answers in a small fraction of the time.
    assert unknown_user > 0.5 * wrong_password, (unknown_user, wrong_password)


def test_inactive_user_cannot_sign_in(api: TestClient) -> None:
    create_user(api, "ann", inactive=True)
    response = login(api, "ann@example.org")
    assert response.status_code == 400
    assert alert(response) == "This account is disabled. Contact the administrator."
    assert "asid" not in set_cookies(response)
    assert browser_sessions(api, "ann") == []
    [event] = audit_events(api, "login")
    assert (event["outcome"], audit_detail(event)["reason"]) == ("failure", "inactive")


def test_missing_and_oversized_fields_never_fail_the_server(api: TestClient) -> None:
    create_user(api, "ann")
    token = csrf_from(api.get("/auth/login"))
    missing = api.post("/auth/login", data={"csrf": token, "username": "ann"})
    assert missing.status_code == 400
    assert alert(missing) == "Enter your e-mail (or username) and your password."
    empty = api.post("/auth/login", data={"csrf": token})
    assert empty.status_code == 400
    long_password = api.post("/auth/login", data={"csrf": token, "username": "ann", "password": "x" * 5000})
    assert long_password.status_code == 400
    huge = api.post("/auth/login", data={"csrf": token, "username": "ann", "password": "x" * 200_000})
    assert huge.status_code == 413
    assert "The form is too large." in huge.text
    as_json = api.post("/auth/login", json={"csrf": token, "username": "ann", "password": PASSWORD})
    assert as_json.status_code == 415
    with_file = api.post(
        "/auth/login", data={"csrf": token, "username": "ann"}, files={"password": ("p.txt", b"secret")}
    )
    assert with_file.status_code == 400
    not_utf8 = api.post(
        "/auth/login",
        content=b"csrf=" + token.encode() + b"&username=%ff%fe&password=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert not_utf8.status_code == 400
    multipart = api.post(
        "/auth/login",
        data={"csrf": token, "username": "ann", "password": PASSWORD},
        files={"unused": (None, b"")},
        follow_redirects=False,
    )
    assert multipart.status_code == 302
    assert browser_sessions(api, "ann")[0]["active"] is True


def test_csrf_missing_or_wrong_is_refused_and_nothing_is_written(api: TestClient) -> None:
    create_user(api, "ann")
    good = csrf_from(api.get("/auth/login"))
    form = {"username": "ann", "password": PASSWORD}
    for data in (
        form,
        {**form, "csrf": ""},
        {**form, "csrf": "0" * 64},
        {**form, "csrf": good[:-1] + ("1" if good.endswith("0") else "0")},
    ):
        response = api.post("/auth/login", data=data, follow_redirects=False)
        assert response.status_code == 403
        assert "The form expired; reload and try again." in response.text
        assert "asid" not in set_cookies(response)
    # The right field without its cookie (another browser) is refused too.
    api.cookies.clear()
    response = api.post("/auth/login", data={**form, "csrf": good}, follow_redirects=False)
    assert response.status_code == 403
    assert browser_sessions(api, "ann") == []
    assert audit_events(api, "login") == []


def test_redirect_to_accepts_local_paths_only(api: TestClient) -> None:
    create_user(api, "ann")
    encoded = base64.urlsafe_b64encode(b"/app/page?x=1").decode()
    accepted = {
        "/app/page?x=1": "/app/page?x=1",
        encoded: "/app/page?x=1",
        "http://testserver/ui/console": "/ui/console",
        base64.b64encode(b"http://testserver/ui").decode(): "/ui",
    }
    refused = [
        "//evil.com",
        "https://evil.com",
        "/\\evil.com",
        "\\\\evil.com",
        "/\t/evil.com",
        "http://testserver@evil.com/",
        "javascript:alert(1)",
        base64.urlsafe_b64encode(b"//evil.com").decode(),
        base64.urlsafe_b64encode(b"https://evil.com/x").decode(),
    ]
    for value, expected in accepted.items():
        response = login(api, "ann", query=f"redirect_to={quote(value, safe='')}")
        assert response.headers["location"] == expected, value
    for value in refused:
        response = login(api, "ann", query=f"redirect_to={quote(value, safe='')}")
        assert response.headers["location"] == "/auth/two-factor", value


def test_a_user_with_two_factor_goes_to_the_verify_step(api: TestClient) -> None:
    create_user(api, "ann", twoFactor={"enabled": True, "secretKey": "JBSWY3DPEHPK3PXP"})
    response = login(api, "ann@example.org", query="redirect_to=%2Fapp")
    assert response.status_code == 302
    assert response.headers["location"] == "/auth/two-factor/verify"
    cookies = set_cookies(response)
    assert "asid" not in cookies
    pending_id, attributes = cookie_attributes(cookies["fhirauth_pending"])
    assert (attributes["path"], attributes["max-age"], attributes["samesite"]) == ("/auth", "300", "Lax")
    assert "httponly" in attributes
    pending = call(api, services(api).pending_logins.get, pending_id)
    assert pending is not None
    assert (pending.user_id, pending.continuation, pending.document["webhookSent"]) == ("ann", "/app", False)
    assert browser_sessions(api, "ann") == []


def test_logout_ends_the_session_and_clears_the_cookie(api: TestClient) -> None:
    create_user(api, "ann")
    login(api, "ann")
    [session] = browser_sessions(api, "ann")
    page = api.get("/auth/logout")
    assert page.status_code == 200
    assert 'as <span class="who">ann@example.org</span>' in page.text
    refused = api.post("/auth/logout", data={}, follow_redirects=False)
    assert refused.status_code == 403
    assert browser_sessions(api, "ann")[0]["active"] is True
    response = api.post("/auth/logout", data={"csrf": csrf_from(page)}, follow_redirects=False)
    assert response.status_code == 200
    assert "You are signed out." in response.text
    _, attributes = cookie_attributes(set_cookies(response)["asid"])
    assert attributes["max-age"] == "0"
    assert browser_sessions(api, "ann")[0]["active"] is False
    [event] = audit_events(api, "logout")
    assert (event["outcome"], audit_detail(event)["session"]) == ("success", session["id"])
    assert "You are signed out." in api.get("/auth/logout").text


def test_logout_goes_to_a_local_redirect_to_only(api: TestClient) -> None:
    create_user(api, "ann")
    login(api, "ann")
    token = csrf_from(api.get("/auth/logout"))
    evil = api.post(
        "/auth/logout?redirect_to=https%3A%2F%2Fevil.com", data={"csrf": token}, follow_redirects=False
    )
    assert evil.status_code == 200
    login(api, "ann")
    local = api.post("/auth/logout?redirect_to=%2Fauth%2Flogin", data={"csrf": token}, follow_redirects=False)
    assert (local.status_code, local.headers["location"]) == (302, "/auth/login")


def test_login_success_is_audited(api: TestClient) -> None:
    create_user(api, "ann")
    login(api, "ann")
    [session] = browser_sessions(api, "ann")
    [event] = audit_events(api, "login")
    assert event["outcome"] == "success"
    assert event["agent"][0]["who"] == {"resourceType": "User", "id": "ann"}
    assert audit_detail(event) == {"session": session["id"]}
