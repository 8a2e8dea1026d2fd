"""/auth/authorize and the sign-in it asks for: prompt (none, login, consent), max_age, login_hint.

Core §3.1.2.1, §3.1.2.3, §3.1.2.6. Each story reads the browser Session, the pending 2FA login or
the Grant from storage, so it runs on both backends.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
from starlette.testclient import TestClient

from fhirauth.clock import ManualClock
from fhirauth.twofactor import totp
from tests.api.oidc_support import (
    CB,
    NONCE,
    THIRD_CB,
    answer,
    authorize,
    browser_session_id,
    id_token_claims,
    rp_request,
    setup_clients,
    sign_in,
)
from tests.api.pages_support import PASSWORD, csrf_from, login

SIGNED_IN_AT = 1767225600  # the ManualClock's start, 2026-01-01T00:00:00Z


@pytest.fixture
def clients(api: TestClient) -> None:
    setup_clients(api)


def issued_sessions(api: TestClient) -> list[str]:
    bundle = api.get("/Session").json()
    return sorted(e["resource"]["type"] for e in bundle["entry"] if e["resource"]["type"] != "browser")


def browser_sessions(api: TestClient) -> list[dict[str, Any]]:
    bundle = api.get("/Session", params={"type": "browser", "_sort": "start"}).json()
    return [entry["resource"] for entry in bundle["entry"]]


def to_login(response: httpx2.Response, params: dict[str, str]) -> None:
    assert response.status_code == 302, response.text
    assert response.headers["location"] == f"/auth/login?{urlencode(params)}"


def id_token_of(
    api: TestClient, response: httpx2.Response, clock: ManualClock, **params: str
) -> dict[str, Any]:
    values = answer(response.headers["location"], CB, "fragment")
    return id_token_claims(api, values["id_token"], kind="implicit", now=clock(), nonce=NONCE, **params)


def sign_in_again(api: TestClient, params: dict[str, str]) -> str:
    """The login page the request was sent to, submitted: where the browser goes next."""
    query = urlencode(params)
    page = api.get(f"/auth/login?{query}")
    response = api.post(
        f"/auth/login?{query}",
        data={"csrf": csrf_from(page), "username": "ann@example.org", "password": PASSWORD},
        follow_redirects=False,
    )
    assert response.status_code == 302, response.text
    location: str = response.headers["location"]
    return location


# prompt=none: never a page, always an answer to the client


@pytest.mark.parametrize(("response_type", "where"), [("code", "query"), ("id_token", "fragment")])
def test_prompt_none_without_a_session_is_login_required(
    api: TestClient, clients: None, response_type: str, where: str
) -> None:
    response = authorize(api, **rp_request(response_type, prompt="none"))
    assert response.status_code == 302
    assert answer(response.headers["location"], CB, where) == {
        "error": "login_required",
        "error_description": "The user is not signed in",
        "state": "st-1",
    }
    assert issued_sessions(api) == []


def test_prompt_none_while_the_second_factor_is_pending_is_interaction_required(
    api: TestClient, clients: None, clock: ManualClock
) -> None:
    secret = totp.new_secret()
    patched = api.patch("/User/ann", json={"twoFactor": {"enabled": True, "secretKey": secret}})
    assert patched.status_code == 200, patched.text
    # 1. the password is right: the browser now holds a pending login, and no session
    password = login(api, "ann")
    assert (password.status_code, password.headers["location"]) == (302, "/auth/two-factor/verify")
    # 2. a silent request cannot finish that sign-in: interaction_required, not login_required
    response = authorize(api, **rp_request("id_token", prompt="none"))
    assert answer(response.headers["location"], CB, "fragment") == {
        "error": "interaction_required",
        "error_description": "The user's sign-in waits for the second factor",
        "state": "st-1",
    }
    # 3. once the pending login has expired (300 s), it is login_required again
    clock.advance(301)
    response = authorize(api, **rp_request("id_token", prompt="none"))
    assert answer(response.headers["location"], CB, "fragment")["error"] == "login_required"
    assert issued_sessions(api) == []


def test_prompt_none_when_consent_is_needed_is_consent_required(api: TestClient, clients: None) -> None:
    sign_in(api)
    params = {**rp_request("code", prompt="none"), "client_id": "third", "redirect_uri": THIRD_CB}
    response = authorize(api, **params)
    assert answer(response.headers["location"], THIRD_CB, "query") == {
        "error": "consent_required",
        "error_description": "The user has not consented to this client's request",
        "state": "st-1",
    }
    assert api.get("/Grant").json()["total"] == 0
    assert issued_sessions(api) == []
    # After consent, the same silent request succeeds.
    page = authorize(api, **{**params, "prompt": "consent"})
    assert page.status_code == 200
    approved = api.post(
        "/auth/consent",
        data={
            "csrf": csrf_from(page),
            "query": urlencode({**params, "prompt": "consent"}),
            "decision": "approve",
        },
        follow_redirects=False,
    )
    assert set(answer(approved.headers["location"], THIRD_CB, "query")) == {"code", "state"}
    silent = authorize(api, **params)
    assert set(answer(silent.headers["location"], THIRD_CB, "query")) == {"code", "state"}


def test_prompt_none_with_a_session_answers_at_once(
    api: TestClient, clients: None, clock: ManualClock
) -> None:
    browser = sign_in(api)
    clock.advance(120)
    claims = id_token_of(api, authorize(api, **rp_request("id_token", prompt="none")), clock)
    assert (claims["sub"], claims["auth_time"], claims["sid"]) == ("ann", SIGNED_IN_AT, browser)


@pytest.mark.parametrize("prompt", ["none login", "consent none", "none none"])
def test_prompt_none_with_another_value_is_invalid_request(
    api: TestClient, clients: None, prompt: str
) -> None:
    sign_in(api)
    response = authorize(api, **rp_request("id_token", prompt=prompt))
    assert answer(response.headers["location"], CB, "fragment") == {
        "error": "invalid_request",
        "error_description": "'prompt=none' cannot be combined with other values",
        "state": "st-1",
    }


@pytest.mark.parametrize("prompt", ["select_account", "login bogus", "", " "])
def test_unsupported_prompt_values_are_invalid_request(api: TestClient, clients: None, prompt: str) -> None:
    sign_in(api)
    response = authorize(api, **rp_request("id_token", prompt=prompt))
    values = answer(response.headers["location"], CB, "fragment")
    if prompt == "":
        # RFC 6749 §3.1: an empty parameter counts as left out.
        assert set(values) == {"id_token", "state"}
        return
    shown = prompt.split()[-1] if prompt.strip() else ""
    assert values == {
        "error": "invalid_request",
        "error_description": f"Unsupported 'prompt' value '{shown}'; use none, login or consent",
        "state": "st-1",
    }


# prompt=login and max_age: a fresh sign-in, and the auth_time that says so


def test_prompt_login_signs_in_again_and_the_id_token_says_when(
    api: TestClient, clients: None, clock: ManualClock
) -> None:
    first = sign_in(api)
    clock.advance(600)
    params = rp_request("id_token", prompt="login")
    # 1. with a session, the request still goes to the login page
    to_login(authorize(api, **params), params)
    assert issued_sessions(api) == []
    # 2. after the password, back to /auth/authorize without prompt=login (that sign-in answered it)
    after = {name: value for name, value in params.items() if name != "prompt"}
    assert sign_in_again(api, params) == f"/auth/authorize?{urlencode(after)}"
    # 3. the ID token tells the new sign-in's time and session; the old sign-in has ended
    second = browser_session_id(api)
    assert second != first
    claims = id_token_of(api, api.get(f"/auth/authorize?{urlencode(after)}", follow_redirects=False), clock)
    assert (claims["auth_time"], claims["sid"]) == (SIGNED_IN_AT + 600, second)
    assert [(s["id"], s["active"]) for s in browser_sessions(api)] == [(first, False), (second, True)]


def test_prompt_login_keeps_the_other_prompt_values(api: TestClient, clients: None) -> None:
    sign_in(api)
    params = {**rp_request("code", prompt="login consent"), "client_id": "third", "redirect_uri": THIRD_CB}
    to_login(authorize(api, **params), params)
    location = sign_in_again(api, params)
    assert parse_qs(urlsplit(location).query)["prompt"] == ["consent"]
    assert "max_age" not in parse_qs(urlsplit(location).query)
    consent = api.get(location, follow_redirects=False)
    assert consent.status_code == 200
    assert "asks to access your account" in consent.text


def test_max_age_zero_forces_a_sign_in(api: TestClient, clients: None, clock: ManualClock) -> None:
    sign_in(api)
    params = rp_request("id_token", max_age="0")
    to_login(authorize(api, **params), params)
    clock.advance(5)
    location = sign_in_again(api, params)
    after = {name: value for name, value in params.items() if name != "max_age"}
    assert location == f"/auth/authorize?{urlencode(after)}"
    # The sign-in and the answer five seconds apart: max_age=0 does not send the user round again.
    clock.advance(5)
    claims = id_token_of(api, api.get(location, follow_redirects=False), clock)
    assert claims["auth_time"] == SIGNED_IN_AT + 5


def test_max_age_counts_from_the_sign_in(api: TestClient, clients: None, clock: ManualClock) -> None:
    sign_in(api)
    params = rp_request("id_token", max_age="600")
    clock.advance(600)
    # Exactly max_age ago is still recent enough; auth_time is in the ID token (REQUIRED with max_age).
    claims = id_token_of(api, authorize(api, **params), clock, max_age="600")
    assert claims["auth_time"] == SIGNED_IN_AT
    clock.advance(1)
    to_login(authorize(api, **params), params)
    silent = authorize(api, **{**params, "prompt": "none"})
    assert answer(silent.headers["location"], CB, "fragment") == {
        "error": "login_required",
        "error_description": "The user signed in longer ago than 'max_age' allows",
        "state": "st-1",
    }


@pytest.mark.parametrize("max_age", ["-1", "1.5", "abc", "1e3", "99999999999", " 5"])
def test_a_malformed_max_age_is_invalid_request(api: TestClient, clients: None, max_age: str) -> None:
    sign_in(api)
    response = authorize(api, **rp_request("id_token", max_age=max_age))
    assert answer(response.headers["location"], CB, "fragment") == {
        "error": "invalid_request",
        "error_description": "'max_age' must be a whole number of seconds from 0 to 9999999999",
        "state": "st-1",
    }
    assert issued_sessions(api) == []


# prompt=consent, login_hint


def test_prompt_consent_asks_again_even_when_granted(api: TestClient, clients: None) -> None:
    sign_in(api)
    params = {**rp_request("code"), "client_id": "third", "redirect_uri": THIRD_CB}
    page = authorize(api, **params)
    api.post(
        "/auth/consent",
        data={"csrf": csrf_from(page), "query": urlencode(params), "decision": "approve"},
        follow_redirects=False,
    )
    assert authorize(api, **params).status_code == 302
    again = authorize(api, **params, prompt="consent")
    assert again.status_code == 200
    assert "asks to access your account" in again.text
    # Even a first-party client, which is never asked otherwise.
    first_party = authorize(api, **rp_request("id_token", prompt="consent"))
    assert first_party.status_code == 200
    assert "asks to access your account" in first_party.text


def test_login_hint_fills_in_the_login_page(api: TestClient, clients: None) -> None:
    params = rp_request("id_token", login_hint="ann@example.org")
    response = authorize(api, **params)
    to_login(response, params)
    page = api.get(response.headers["location"])
    assert 'value="ann@example.org"' in page.text
