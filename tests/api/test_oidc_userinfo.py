"""/auth/userinfo by scope (Core §5.3, §5.4): with `openid`, the OpenID claims the granted scopes allow,
as JSON or (the Client's userinfo_signed_response_alg) a signed JWT; without it, Aidbox's answer (the
User without its secrets), which Aidbox clients rely on. Users, Registrations and Sessions are
stored, so both backends.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from starlette.testclient import TestClient

from fhirauth.clock import ManualClock
from tests.api.conftest import NO_AUTH
from tests.api.oidc_support import (
    CB,
    ISSUER,
    RP_SECRET,
    answer,
    authorize,
    put_client,
    rp_request,
    setup_clients,
    sign_in,
)
from tests.api.pages_support import PASSWORD, create_user, login
from tests.api.test_pages_signup import confirm, mailed_link, sign_up

SIGNED_CB = "https://signed.example.org/cb"
ANN = {
    "name": {"givenName": "Ann", "familyName": "Lee", "middleName": "Q", "formatted": "Dr Ann Q Lee"},
    "userName": "ann.lee",
    "phoneNumber": "+1 555 0100",
    "locale": "en-GB",
    "timezone": "Europe/London",
}


@pytest.fixture
def clients(api: TestClient) -> None:
    setup_clients(api)
    assert api.patch("/User/ann", json=ANN).status_code == 200


def token_for(api: TestClient, scope: str, client_id: str = "rp", redirect_uri: str = CB) -> str:
    """An access token from the implicit flow, for `scope`, of the signed-in browser."""
    params = {
        **rp_request("id_token token" if "openid" in scope.split() else "token", scope=scope),
        "client_id": client_id,
        "redirect_uri": redirect_uri,
    }
    response = authorize(api, **params)
    assert response.status_code == 302, response.text
    return answer(response.headers["location"], redirect_uri, "fragment")["access_token"]


def userinfo(api: TestClient, token: str, method: str = "GET") -> Any:
    return api.request(method, "/auth/userinfo", headers={"Authorization": f"Bearer {token}"})


def updated_at(api: TestClient, user_id: str = "ann") -> int:
    stamp = api.get(f"/User/{user_id}").json()["meta"]["lastUpdated"]
    return int(datetime.fromisoformat(stamp).timestamp())


def test_openid_alone_answers_the_subject(api: TestClient, clients: None) -> None:
    sign_in(api)
    response = userinfo(api, token_for(api, "openid"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {"sub": "ann"}


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_each_scope_adds_its_claims(api: TestClient, clients: None, method: str) -> None:
    sign_in(api)
    token = token_for(api, "openid profile email phone")
    response = userinfo(api, token, method)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "sub": "ann",
        "name": "Dr Ann Q Lee",
        "given_name": "Ann",
        "family_name": "Lee",
        "middle_name": "Q",
        "preferred_username": "ann.lee",
        "locale": "en-GB",
        "zoneinfo": "Europe/London",
        "updated_at": updated_at(api),
        "email": "ann@example.org",
        # Written by an administrator, not confirmed by a signup link: not verified.
        "email_verified": False,
        "phone_number": "+1 555 0100",
        "phone_number_verified": False,
    }
    assert userinfo(api, token_for(api, "openid email")).json() == {
        "sub": "ann",
        "email": "ann@example.org",
        "email_verified": False,
    }


def test_claims_the_user_lacks_are_left_out(api: TestClient, clients: None) -> None:
    create_user(api, "bob", email="bob@example.org", phoneNumbers=[{"value": "+1 555 0199"}])
    login(api, "bob")
    body = userinfo(api, token_for(api, "openid profile email phone")).json()
    # Core §5.3.2: no nulls, no empty strings; SCIM's phoneNumbers stands in for phoneNumber.
    assert body == {
        "sub": "bob",
        "updated_at": updated_at(api, "bob"),
        "email": "bob@example.org",
        "email_verified": False,
        "phone_number": "+1 555 0199",
        "phone_number_verified": False,
    }


def test_the_name_is_made_from_its_parts_when_not_formatted(api: TestClient, clients: None) -> None:
    create_user(api, "cy", name={"givenName": "Cy", "familyName": "Ng"})
    login(api, "cy")
    body = userinfo(api, token_for(api, "openid profile")).json()
    assert (body["name"], body["given_name"], body["family_name"]) == ("Cy Ng", "Cy", "Ng")


def test_a_signup_confirmed_address_is_verified_until_it_changes(
    api: TestClient, clients: None, capsys: pytest.CaptureFixture[str]
) -> None:
    api.put(
        "/AidboxConfig/provider",
        json={
            "resourceType": "AidboxConfig",
            "provider": {"default": "console", "console": {"type": "console"}},
        },
    )
    sign_up(api, "dee@example.org", query="")
    _, registration_id, token = mailed_link(capsys.readouterr().out)
    assert confirm(api, registration_id, token, PASSWORD).status_code == 302
    token = token_for(api, "openid email")
    body = userinfo(api, token).json()
    assert (body["email"], body["email_verified"]) == ("dee@example.org", True)
    # Another address, written later, was never confirmed.
    assert api.patch(f"/User/{body['sub']}", json={"email": "dee@elsewhere.example"}).status_code == 200
    body = userinfo(api, token).json()
    assert (body["email"], body["email_verified"]) == ("dee@elsewhere.example", False)


def test_without_openid_the_answer_is_the_user_as_before(api: TestClient, clients: None) -> None:
    sign_in(api)
    response = userinfo(api, token_for(api, "profile email"))
    assert response.status_code == 200
    body = response.json()
    assert body["resourceType"] == "User"
    assert (body["id"], body["email"], body["userName"], body["name"]) == (
        "ann",
        "ann@example.org",
        "ann.lee",
        ANN["name"],
    )
    assert "password" not in body and "sub" not in body
    # The browser cookie, which has no scope at all, too.
    cookie = api.get("/auth/userinfo", headers=NO_AUTH)
    assert cookie.status_code == 200
    assert cookie.json() == body


def test_a_client_that_asks_gets_a_signed_jwt(api: TestClient, clients: None, clock: ManualClock) -> None:
    put_client(
        api,
        "signed",
        first_party=True,
        userinfo_signed_response_alg="RS256",
        grant_types=["implicit"],
        auth={"implicit": {"redirect_uri": SIGNED_CB}},
    )
    sign_in(api)
    response = userinfo(api, token_for(api, "openid email", "signed", SIGNED_CB))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/jwt"
    assert response.headers["cache-control"] == "no-store"
    keys = KeySet.import_key_set(api.get("/.well-known/jwks.json", headers=NO_AUTH).json())
    decoded = jwt.decode(response.text, keys, algorithms=["RS256"])
    # Core §5.3.2: a signed answer carries iss and aud.
    assert decoded.claims == {
        "iss": ISSUER,
        "aud": "signed",
        "iat": int(clock().timestamp()),
        "sub": "ann",
        "email": "ann@example.org",
        "email_verified": False,
    }


def test_an_unsupported_signing_algorithm_is_refused_at_registration(api: TestClient) -> None:
    response = api.put(
        "/Client/bad",
        json={"resourceType": "Client", "userinfo_signed_response_alg": "HS256", "grant_types": ["implicit"]},
    )
    assert response.status_code == 422, response.text
    assert api.get("/Client/bad").status_code == 404


def test_a_revoked_token_gets_nothing(api: TestClient, clients: None) -> None:
    sign_in(api)
    token = token_for(api, "openid profile")
    assert api.post("/auth/revoke", data={"token": token}, auth=("rp", RP_SECRET)).status_code == 200
    response = userinfo(api, token)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "ann" not in response.text


def test_discovery_lists_the_scopes_and_the_userinfo_claims(api: TestClient, clients: None) -> None:
    metadata = api.get("/.well-known/openid-configuration", headers=NO_AUTH).json()
    assert {"openid", "profile", "email", "phone"} <= set(metadata["scopes_supported"])
    assert {"name", "email", "email_verified", "phone_number", "updated_at"} <= set(
        metadata["claims_supported"]
    )
    assert (
        metadata["userinfo_signing_alg_values_supported"] == metadata["id_token_signing_alg_values_supported"]
    )
