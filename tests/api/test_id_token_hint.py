"""id_token_hint at /auth/authorize (OpenID Connect Core §3.1.2.1): an ID token this server signed,
expired or not, naming the user the client believes is signed in.

A hint of the signed-in user is answered as usual; a hint of another user is login_required under
prompt=none and the login page otherwise; a hint this server did not sign, or a JWT of ours that is
not an ID token, is invalid_request. Each story reads the Sessions from storage, on both backends.
"""

from __future__ import annotations

import base64
from urllib.parse import urlencode

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.testclient import TestClient

from fhirauth.clock import ManualClock
from tests.api.conftest import NO_AUTH
from tests.api.oidc_support import (
    CB,
    NONCE,
    answer,
    authorize,
    browser_session_id,
    id_token_claims,
    put_client,
    rp_request,
    setup_clients,
    sign_in,
)
from tests.api.pages_support import PASSWORD, create_user, csrf_from


@pytest.fixture
def clients(api: TestClient) -> None:
    setup_clients(api)
    create_user(api, "bob")


def issued_sessions(api: TestClient) -> list[str]:
    bundle = api.get("/Session").json()
    return sorted(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["type"] != "browser")


def id_token_for(api: TestClient, user: str) -> str:
    """Sign `user` in and have `rp` get an ID token for them (the implicit flow's, which lives 600 s)."""
    sign_in(api, user)
    response = authorize(api, **rp_request("id_token"))
    token: str = answer(response.headers["location"], CB, "fragment")["id_token"]
    return token


def test_a_hint_of_the_signed_in_user_is_answered_even_expired(
    api: TestClient, clients: None, clock: ManualClock
) -> None:
    hint = id_token_for(api, "ann")
    browser = browser_session_id(api)
    # The hint's exp (600 s) has passed: Core §3.1.2.1 accepts it all the same.
    clock.advance(3600)
    response = authorize(api, **rp_request("id_token", prompt="none", id_token_hint=hint))
    values = answer(response.headers["location"], CB, "fragment")
    assert set(values) == {"id_token", "state"}
    claims = id_token_claims(api, values["id_token"], kind="implicit", now=clock(), nonce=NONCE)
    assert (claims["sub"], claims["sid"]) == ("ann", browser)


def test_another_users_hint_under_prompt_none_is_login_required(
    api: TestClient, clients: None, clock: ManualClock
) -> None:
    bobs = id_token_for(api, "bob")
    sign_in(api, "ann")
    before = issued_sessions(api)
    response = authorize(api, **rp_request("code", prompt="none", id_token_hint=bobs))
    assert response.status_code == 302
    assert answer(response.headers["location"], CB, "query") == {
        "error": "login_required",
        "error_description": "The id_token_hint names another user than the one signed in",
        "state": "st-1",
    }
    # Nothing issued for ann on bob's hint.
    assert issued_sessions(api) == before


def test_another_users_hint_sends_the_browser_to_sign_in_and_then_answers(
    api: TestClient, clients: None
) -> None:
    bobs = id_token_for(api, "bob")
    sign_in(api, "ann")
    params = rp_request("id_token", id_token_hint=bobs)
    # 1. ann is signed in, the client believes bob is: the login page, not an answer for ann
    response = authorize(api, **params)
    assert response.status_code == 302
    assert response.headers["location"] == f"/auth/login?{urlencode(params)}"
    # 2. bob signs in; the sign-in answered the hint, so the request resumes without it
    query = urlencode(params)
    page = api.get(f"/auth/login?{query}")
    signed_in = api.post(
        f"/auth/login?{query}",
        data={"csrf": csrf_from(page), "username": "bob@example.org", "password": PASSWORD},
        follow_redirects=False,
    )
    after = {name: value for name, value in params.items() if name != "id_token_hint"}
    assert signed_in.headers["location"] == f"/auth/authorize?{urlencode(after)}"
    # 3. the answer is bob's
    values = answer(authorize(api, **after).headers["location"], CB, "fragment")
    assert api.get("/Session", params={"type": "browser", "active": "true"}).json()["total"] == 1
    assert jwt.decode(values["id_token"], _published(api)).claims["sub"] == "bob"


def test_a_hint_signed_with_another_key_is_invalid_request(
    api: TestClient, clients: None, clock: ManualClock
) -> None:
    hint = id_token_for(api, "ann")
    header = jwt.decode(hint, _published(api)).header
    claims = jwt.decode(hint, _published(api)).claims
    # The same header (our kid) and claims, signed with a key that is not ours.
    forged = jwt.encode(header, claims, RSAKey.generate_key(2048, private=True))
    before = issued_sessions(api)
    for bad in (forged, _with_signature_of(hint, forged), "not.a.jwt", "x" * 9000):
        response = authorize(api, **rp_request("id_token", prompt="none", id_token_hint=bad))
        assert answer(response.headers["location"], CB, "fragment") == {
            "error": "invalid_request",
            "error_description": "The id_token_hint is not an ID token this server issued",
            "state": "st-1",
        }, bad[:40]
    assert issued_sessions(api) == before


def test_a_jwt_access_token_of_ours_is_not_a_hint(api: TestClient, clients: None) -> None:
    put_client(
        api,
        "svc",
        secret="svc-secret",
        grant_types=["client_credentials"],
        auth={"client_credentials": {"token_format": "jwt"}},
    )
    basic = "Basic " + base64.b64encode(b"svc:svc-secret").decode()
    granted = api.post(
        "/auth/token", data={"grant_type": "client_credentials"}, headers={"Authorization": basic}
    )
    assert granted.status_code == 200, granted.text
    sign_in(api, "ann")
    access_token = granted.json()["access_token"]
    response = authorize(api, **rp_request("id_token", id_token_hint=access_token))
    assert answer(response.headers["location"], CB, "fragment") == {
        "error": "invalid_request",
        "error_description": "The id_token_hint is not an ID token this server issued",
        "state": "st-1",
    }


def test_a_hint_without_openid_is_ignored(api: TestClient, clients: None) -> None:
    sign_in(api, "ann")
    params = {"client_id": "rp", "response_type": "code", "redirect_uri": CB, "id_token_hint": "garbage"}
    response = authorize(api, **params)
    assert set(answer(response.headers["location"], CB, "query")) == {"code"}


def _published(api: TestClient) -> KeySet:
    return KeySet.import_key_set(api.get("/.well-known/jwks.json", headers=NO_AUTH).json())


def _with_signature_of(token: str, other: str) -> str:
    head, payload, _ = token.split(".")
    return f"{head}.{payload}.{other.split('.')[2]}"
