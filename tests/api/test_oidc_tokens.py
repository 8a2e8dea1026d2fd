"""The token endpoint's ID tokens: the code grant with `openid`, and its refreshes (Core §3.1.3.3,
§3.3.3.6, §12.2). What the code and the token Session remember of the sign-in is stored, so both
backends.
"""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from starlette.testclient import TestClient

from fhirauth.clock import ManualClock
from fhirauth.security import token_hash
from tests.api.oidc_support import (
    CB,
    ISSUER,
    NONCE,
    RP_SECRET,
    answer,
    authorize,
    half_hash,
    id_token_claims,
    rp_request,
    setup_clients,
    sign_in,
)

SIGNED_IN_AT = 1767225600  # the ManualClock's start, 2026-01-01T00:00:00Z


@pytest.fixture
def clients(api: TestClient) -> None:
    setup_clients(api)


def code_for(api: TestClient, response_type: str = "code", **params: str) -> dict[str, str]:
    response = authorize(api, **rp_request(response_type, **params))
    assert response.status_code == 302, response.text
    return answer(response.headers["location"], CB, "query" if response_type == "code" else "fragment")


def exchange(api: TestClient, code: str) -> httpx2.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CB}
    return api.post("/auth/token", data=form, auth=("rp", RP_SECRET))


def refresh(api: TestClient, refresh_token: str, **extra: str) -> httpx2.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}
    return api.post("/auth/token", data=form, auth=("rp", RP_SECRET))


def token_session(api: TestClient) -> dict[str, Any]:
    bundle = api.get("/Session", params={"type": "authorization_code"}).json()
    (entry,) = bundle["entry"]
    session: dict[str, Any] = entry["resource"]
    return session


def test_the_code_grant_with_openid_returns_an_id_token(
    api: TestClient, clients: None, clock: ManualClock
) -> None:
    browser = sign_in(api)
    clock.advance(20)
    code = code_for(api)["code"]
    clock.advance(5)
    response = exchange(api, code)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "scope",
        "userinfo",
        "id_token",
    }
    assert (body["expires_in"], body["scope"]) == (900, "openid")
    claims = id_token_claims(
        api, body["id_token"], kind="code", now=clock(), nonce=NONCE, access_token=body["access_token"]
    )
    assert claims == {
        "iss": ISSUER,
        "sub": "ann",
        "aud": "rp",
        "iat": SIGNED_IN_AT + 25,
        "exp": SIGNED_IN_AT + 25 + 900,
        "auth_time": SIGNED_IN_AT,
        "nonce": NONCE,
        "sid": browser,
        "at_hash": half_hash(body["access_token"]),
        "amr": ["pwd"],
        "acr": "urn:fhirauth:acr:pwd",
    }
    # The token Session remembers the sign-in's time for the refreshes; the nonce was for this answer only.
    session = token_session(api)
    assert (session["auth_time"], session["parent"]["id"]) == (SIGNED_IN_AT, browser)
    assert NONCE not in str(session)


def test_without_a_nonce_the_id_token_has_none(api: TestClient, clients: None, clock: ManualClock) -> None:
    sign_in(api)
    params = rp_request("code")
    del params["nonce"]
    response = authorize(api, **params)
    code = answer(response.headers["location"], CB, "query")["code"]
    body = exchange(api, code).json()
    claims = id_token_claims(api, body["id_token"], kind="code", now=clock())
    assert "nonce" not in claims


@pytest.mark.parametrize("scope", [None, "profile email"])
def test_the_code_grant_without_openid_is_plain_oauth(
    api: TestClient, clients: None, scope: str | None
) -> None:
    sign_in(api)
    params = rp_request("code")
    del params["nonce"]
    if scope is None:
        del params["scope"]
    else:
        params["scope"] = scope
    response = authorize(api, **params)
    code = answer(response.headers["location"], CB, "query")["code"]
    body = exchange(api, code).json()
    assert "id_token" not in body
    assert "auth_time" not in token_session(api)
    refreshed = refresh(api, body["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert "id_token" not in refreshed.json()


def test_a_refresh_keeps_the_subject_and_the_sign_in_time(
    api: TestClient, clients: None, clock: ManualClock
) -> None:
    browser = sign_in(api)
    first = exchange(api, code_for(api)["code"]).json()
    clock.advance(1000)
    response = refresh(api, first["refresh_token"])
    assert response.status_code == 200, response.text
    body = response.json()
    claims = id_token_claims(
        api, body["id_token"], kind="code", now=clock(), access_token=body["access_token"]
    )
    # Core §12.2: same iss, sub, aud and auth_time; a new iat; no nonce.
    assert claims == {
        "iss": ISSUER,
        "sub": "ann",
        "aud": "rp",
        "iat": SIGNED_IN_AT + 1000,
        "exp": SIGNED_IN_AT + 1000 + 900,
        "auth_time": SIGNED_IN_AT,
        "sid": browser,
        "at_hash": half_hash(body["access_token"]),
        "amr": ["pwd"],
        "acr": "urn:fhirauth:acr:pwd",
    }
    # And again, from the rotated refresh token.
    clock.advance(10)
    again = refresh(api, body["refresh_token"]).json()
    claims = id_token_claims(
        api, again["id_token"], kind="code", now=clock(), access_token=again["access_token"]
    )
    assert (claims["sub"], claims["auth_time"], claims["iat"]) == ("ann", SIGNED_IN_AT, SIGNED_IN_AT + 1010)


def test_a_refresh_narrowed_to_leave_out_openid_returns_no_id_token(api: TestClient, clients: None) -> None:
    sign_in(api)
    first = exchange(api, code_for(api, scope="openid profile")["code"]).json()
    response = refresh(api, first["refresh_token"], scope="profile")
    assert response.status_code == 200, response.text
    assert (response.json()["scope"], "id_token" in response.json()) == ("profile", False)


def test_the_hybrid_codes_id_token_matches_the_front_channels(
    api: TestClient, clients: None, clock: ManualClock
) -> None:
    # Core §3.3.3.6: both ID tokens name the same iss and sub; the nonce is in both.
    browser = sign_in(api)
    front = code_for(api, "code id_token")
    front_claims = id_token_claims(
        api, front["id_token"], kind="hybrid", now=clock(), nonce=NONCE, code=front["code"]
    )
    body = exchange(api, front["code"]).json()
    back_claims = id_token_claims(
        api, body["id_token"], kind="code", now=clock(), nonce=NONCE, access_token=body["access_token"]
    )
    for name in ("iss", "sub", "aud", "auth_time", "nonce", "sid"):
        assert back_claims[name] == front_claims[name], name
    assert back_claims["sid"] == browser


def test_a_sign_in_stored_before_auth_time_was_recorded_counts_from_its_start(
    api: TestClient, clients: None, clock: ManualClock
) -> None:
    # Browser Sessions written by an earlier version have `start` only; it is the same moment.
    cookie = "a-sign-in-from-before-auth-time-0123456789"
    legacy = {
        "resourceType": "Session",
        "type": "browser",
        "active": True,
        "start": "2025-12-31T23:00:00.000Z",
        "user": {"resourceType": "User", "id": "ann"},
        "access_token": token_hash(cookie),
    }
    assert api.put("/Session/legacy", json=legacy).status_code == 201
    api.cookies.set("asid", cookie)
    values = code_for(api, "id_token")
    claims = id_token_claims(api, values["id_token"], kind="implicit", now=clock(), nonce=NONCE)
    assert (claims["auth_time"], claims["sid"]) == (SIGNED_IN_AT - 3600, "legacy")
