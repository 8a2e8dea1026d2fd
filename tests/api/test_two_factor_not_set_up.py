"""A User whose `twoFactor.enabled` is true but who has no secret (an administrator's write, an import).

Such a user has 2FA on and no second factor to give: every sign-in is refused with a message that
says so, never let through on the password alone, until an administrator resets 2FA. Walked in order
for one user, on every backend.
"""

from __future__ import annotations

from typing import Any

import httpx2
from starlette.testclient import TestClient

from tests.api.conftest import NO_AUTH
from tests.api.pages_support import (
    PASSWORD,
    audit_detail,
    audit_events,
    call,
    create_user,
    csrf_from,
    login,
    services,
    set_cookies,
)

SETTINGS = "/auth/two-factor"
VERIFY = "/auth/two-factor/verify"
NOT_SET_UP = "2FA is enabled but not set up; an administrator must reset it"
NOT_SET_UP_PAGE = (
    "Two-factor authentication is on for your account but has not been set up. "
    "Ask an administrator to reset it."
)


def password_grant(api: TestClient, **extra: str) -> httpx2.Response:
    form = {
        "grant_type": "password",
        "username": "ann@example.org",
        "password": PASSWORD,
        "client_id": "app",
        "client_secret": "app-secret",
        **extra,
    }
    return api.post("/auth/token", data=form, headers=NO_AUTH)


def stored_user(api: TestClient) -> dict[str, Any]:
    stored = call(api, services(api).storage.get, "User", "ann")
    assert stored is not None
    document: dict[str, Any] = stored.document
    return document


def guard_state(api: TestClient) -> object:
    record = call(api, services(api).storage.record_get, "totp-step", "ann")
    return None if record is None else record.document


def refused_page(response: httpx2.Response) -> None:
    assert response.status_code == 403, response.text
    assert '<h1 id="page-title">Two-factor authentication not set up</h1>' in response.text
    assert NOT_SET_UP_PAGE in response.text
    assert "asid" not in set_cookies(response)


def test_enabled_without_a_secret_refuses_every_sign_in_until_reset(api: TestClient) -> None:
    # A webhook is configured: the verify step would send the current code through it.
    config = {"resourceType": "AuthConfig", "twoFactor": {"webhook": {"endpoint": "http://127.0.0.1:9/hook"}}}
    assert api.put("/AuthConfig/app", json=config).status_code == 201
    client = {
        "resourceType": "Client",
        "secret": "app-secret",
        "grant_types": ["password"],
        "first_party": True,
    }
    assert api.put("/Client/app", json=client).status_code == 201
    create_user(api, "ann")
    # 1. before the administrator's write: a bearer token and a browser session, on the password alone
    granted = password_grant(api)
    assert granted.status_code == 200
    bearer = {"Authorization": f"Bearer {granted.json()['access_token']}"}
    assert login(api, "ann@example.org").headers["location"] == SETTINGS

    # 2. the administrator turns 2FA on without a secret
    written = api.put(
        "/User/ann",
        json={"resourceType": "User", "email": "ann@example.org", "twoFactor": {"enabled": True}},
    )
    assert written.status_code == 200, written.text
    before = stored_user(api)
    assert before["twoFactor"] == {"enabled": True}

    # 3. the password grant: refused with the reason, with or without a code, never a token
    for extra in ({}, {"totp": "123456"}, {"otp": "abcde-fghij"}):
        res = password_grant(api, **extra)
        assert (res.status_code, res.json()) == (
            400,
            {"error": "invalid_grant", "error_description": NOT_SET_UP},
        ), extra

    # 4. the JSON operations with the token from before: a 422 that says why
    for operation in ("verify", "disable", "recovery-codes"):
        res = api.post(f"/app/auth/two-factor/{operation}", json={"token": "123456"}, headers=bearer)
        assert (res.status_code, res.json()) == (
            422,
            {"error": "not_set_up", "error_description": NOT_SET_UP},
        ), operation

    # 5. the pages, in the browser session from before: disable and new recovery codes say why
    assert "is <strong>on</strong>" in api.get(SETTINGS).text
    for action in ("disable", "recovery-codes"):
        form = api.get(f"{SETTINGS}/{action}")
        assert form.status_code == 200
        res = api.post(
            f"{SETTINGS}/{action}", data={"csrf": csrf_from(form), "code": "123456"}, follow_redirects=False
        )
        refused_page(res)

    # 6. a new password sign-in reaches the second step, which refuses and ends the pending login
    api.post("/auth/logout", data={"csrf": csrf_from(api.get("/auth/logout"))})
    assert "asid" not in api.cookies
    assert login(api, "ann@example.org").headers["location"] == VERIFY
    page = api.get(VERIFY)
    refused_page(page)
    assert 'fhirauth_pending=""' in set_cookies(page)["fhirauth_pending"]
    assert "fhirauth_pending" not in api.cookies

    # 7. the code form posted straight after the password: refused the same way
    step = login(api, "ann@example.org")
    assert step.headers["location"] == VERIFY
    posted = api.post(
        VERIFY, data={"csrf": csrf_from(api.get("/auth/login")), "code": "123456"}, follow_redirects=False
    )
    refused_page(posted)
    assert "asid" not in api.cookies

    # 8. nothing was written: the user as the administrator left it, no attempt counted, each page
    #    refusal audited with its reason
    assert stored_user(api) == before
    assert guard_state(api) is None
    reasons = [audit_detail(event).get("reason") for event in audit_events(api, "login")]
    assert reasons.count("two-factor-not-set-up") == 2

    # 9. the administrator's reset: the password alone signs in again, and the user can enrol
    assert api.patch("/User/ann", json={"twoFactor": {"enabled": False}}).status_code == 200
    again = password_grant(api)
    assert again.status_code == 200
    bearer = {"Authorization": f"Bearer {again.json()['access_token']}"}
    enrol = api.post("/app/auth/two-factor/request", json={}, headers=bearer)
    assert enrol.status_code == 200
    assert enrol.json()["uri"].startswith("otpauth://totp/")


def test_a_user_created_so_is_refused_by_the_grant_and_the_page_alike(api: TestClient) -> None:
    """Created with 2FA on and no secret: the password grant and the login page's second step read
    'enabled' through the same rule, so neither lets the password alone through."""
    client = {
        "resourceType": "Client",
        "secret": "app-secret",
        "grant_types": ["password"],
        "first_party": True,
    }
    assert api.put("/Client/app", json=client).status_code == 201
    create_user(api, "ann", twoFactor={"enabled": True})
    assert password_grant(api).json()["error_description"] == NOT_SET_UP
    assert login(api, "ann@example.org").headers["location"] == VERIFY
    refused_page(api.get(VERIFY))
