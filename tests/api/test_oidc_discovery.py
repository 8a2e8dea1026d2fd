"""Discovery says exactly what the server does: every advertised response type in every advertised
response mode, every grant type, every PKCE method, the ID token's algorithm and claims (Discovery §3)."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from joserfc import jws
from starlette.testclient import TestClient

from fhirauth.clock import ManualClock
from tests.api.conftest import NO_AUTH
from tests.api.oidc_support import (
    CB,
    ISSUER,
    NONCE,
    RP_SECRET,
    answer,
    authorize,
    id_token_claims,
    rp_request,
    setup_clients,
    sign_in,
)

USERINFO_ONLY = (
    "name",
    "given_name",
    "family_name",
    "middle_name",
    "preferred_username",
    "locale",
    "zoneinfo",
    "updated_at",
    "email",
    "email_verified",
    "phone_number",
    "phone_number_verified",
)
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
_FORM = re.compile(r'<form method="post" action="([^"]*)"')


@pytest.fixture
def storage_url() -> str:
    return "sqlite://:memory:"


@pytest.fixture
def metadata(api: TestClient) -> dict[str, Any]:
    setup_clients(api)
    response = api.get("/.well-known/openid-configuration", headers=NO_AUTH)
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def test_discovery_lists_what_is_supported(api: TestClient, metadata: dict[str, Any]) -> None:
    assert metadata == {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/auth/authorize",
        "token_endpoint": f"{ISSUER}/auth/token",
        "userinfo_endpoint": f"{ISSUER}/auth/userinfo",
        "jwks_uri": f"{ISSUER}/.well-known/jwks.json",
        "introspection_endpoint": f"{ISSUER}/auth/introspect",
        "revocation_endpoint": f"{ISSUER}/auth/revoke",
        "end_session_endpoint": f"{ISSUER}/auth/logout",
        "response_types_supported": [
            "code",
            "token",
            "id_token",
            "id_token token",
            "code id_token",
            "code token",
            "code id_token token",
        ],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "grant_types_supported": [
            "authorization_code",
            "password",
            "client_credentials",
            "refresh_token",
            "implicit",
        ],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "none",
        ],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384", "RS256", "ES256"],
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ],
        "introspection_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384", "RS256", "ES256"],
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "none",
        ],
        "revocation_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384", "RS256", "ES256"],
        "code_challenge_methods_supported": ["S256", "plain"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        "userinfo_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        "scopes_supported": ["openid", "profile", "email", "phone"],
        "claims_supported": [
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "at_hash",
            "c_hash",
            "auth_time",
            "sid",
            "nonce",
            "fhirUser",
            "amr",
            "acr",
            # From /auth/userinfo (tests/api/test_oidc_userinfo.py).
            *USERINFO_ONLY,
        ],
        "prompt_values_supported": ["none", "login", "consent"],
        "acr_values_supported": ["urn:fhirauth:acr:pwd", "urn:fhirauth:acr:mfa"],
        "claims_parameter_supported": True,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
    }
    # RFC 8414's address answers the same.
    assert api.get("/.well-known/oauth-authorization-server", headers=NO_AUTH).json() == metadata


def test_every_advertised_response_type_works_in_every_advertised_mode(
    api: TestClient, metadata: dict[str, Any], clock: ManualClock
) -> None:
    sign_in(api)
    # SMART's fhirUser claim comes with the fhirUser scope, for a User that has a fhirUser.
    api.patch("/User/ann", json={"fhirUser": {"resourceType": "Patient", "id": "p1"}})
    seen_claims: set[str] = set()
    for response_type in metadata["response_types_supported"]:
        for mode in metadata["response_modes_supported"]:
            request = rp_request(response_type, response_mode=mode, scope="openid fhirUser")
            response = authorize(api, **request)
            if mode == "query" and response_type != "code":
                # Advertised, and refused only for tokens: they never go in the query.
                assert response.status_code == 302
                refused = answer(response.headers["location"], CB, "fragment")
                assert refused["error"] == "invalid_request", (response_type, mode)
                continue
            if mode == "form_post":
                assert response.status_code == 200, (response_type, mode)
                (action,) = _FORM.findall(response.text)
                assert html.unescape(action) == CB
                values = {name: html.unescape(value) for name, value in _HIDDEN.findall(response.text)}
            else:
                assert response.status_code == 302, (response_type, mode)
                values = answer(response.headers["location"], CB, mode)
            assert ("code" in values) == ("code" in response_type.split()), (response_type, mode)
            assert ("access_token" in values) == ("token" in response_type.split()), (response_type, mode)
            assert ("id_token" in values) == ("id_token" in response_type.split()), (response_type, mode)
            if "id_token" in values:
                kind = "hybrid" if "code" in values else "implicit"
                hashed = {name: values[name] for name in ("access_token", "code") if name in values}
                claims = id_token_claims(
                    api, values["id_token"], kind=kind, now=clock(), nonce=NONCE, **hashed
                )
                seen_claims |= set(claims)
    assert seen_claims <= set(metadata["claims_supported"])
    assert set(metadata["claims_supported"]) - seen_claims == set(USERINFO_ONLY)


def test_every_advertised_grant_type_is_a_grant_type(api: TestClient, metadata: dict[str, Any]) -> None:
    for grant_type in metadata["grant_types_supported"]:
        response = api.post("/auth/token", data={"grant_type": grant_type}, auth=("rp", RP_SECRET))
        if grant_type == "implicit":
            # The implicit grant has no token request (RFC 6749 §4.2): /auth/authorize answers it.
            assert response.json()["error"] == "unsupported_grant_type"
            continue
        assert response.json()["error"] != "unsupported_grant_type", grant_type


@pytest.mark.parametrize("method", ["S256", "plain"])
def test_every_advertised_code_challenge_method_works(
    api: TestClient, metadata: dict[str, Any], method: str
) -> None:
    assert method in metadata["code_challenge_methods_supported"]
    sign_in(api)
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM" if method == "S256" else verifier
    response = authorize(api, **rp_request("code", code_challenge=challenge, code_challenge_method=method))
    code = answer(response.headers["location"], CB, "query")["code"]
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier}
    token = api.post("/auth/token", data=form, auth=("rp", RP_SECRET))
    assert token.status_code == 200, token.text


def test_the_id_tokens_algorithm_is_the_advertised_one(api: TestClient, metadata: dict[str, Any]) -> None:
    sign_in(api)
    response = authorize(api, **rp_request("id_token"))
    token = answer(response.headers["location"], CB, "fragment")["id_token"]
    header = jws.extract_compact(token.encode()).protected
    # RS256 unless the client registers another (id_token_signed_response_alg).
    assert header["alg"] == metadata["id_token_signing_alg_values_supported"][0] == "RS256"
    assert metadata["subject_types_supported"] == ["public"]
