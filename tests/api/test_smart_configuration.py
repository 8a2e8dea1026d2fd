"""/.well-known/smart-configuration and /metadata: public, absolute, and true. Each capability the
server advertises is checked against what the server does; one without a check fails the test."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.testclient import TestClient

from fhirauth.resources.schemas import SchemaRegistry
from tests.api.conftest import NO_AUTH
from tests.api.smart_support import (
    BASE,
    CONFIDENTIAL,
    REDIRECT,
    VERIFIER,
    authorize,
    authorize_query,
    basic,
    bearer,
    code_for,
    consented,
    exchange,
    redirect_params,
    register_launch,
    setup_smart,
    sign_in,
    smart_tokens,
)

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def smart_configuration(api: TestClient) -> dict[str, Any]:
    response = api.get("/.well-known/smart-configuration", headers={**NO_AUTH, "Accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


def test_smart_configuration_lists_the_endpoints_and_what_is_supported(api: TestClient) -> None:
    config = smart_configuration(api)
    assert config["authorization_endpoint"] == f"{BASE}/auth/authorize"
    assert config["token_endpoint"] == f"{BASE}/auth/token"
    assert config["introspection_endpoint"] == f"{BASE}/auth/introspect"
    assert config["revocation_endpoint"] == f"{BASE}/auth/revoke"
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["response_types_supported"] == ["code"]
    assert {"authorization_code", "client_credentials", "refresh_token"} <= set(
        config["grant_types_supported"]
    )
    assert {"client_secret_basic", "client_secret_post"} <= set(
        config["token_endpoint_auth_methods_supported"]
    )
    for scope in (
        "launch",
        "launch/patient",
        "launch/encounter",
        "offline_access",
        "patient/*.rs",
        "user/*.cruds",
    ):
        assert scope in config["scopes_supported"], scope
    if "sso-openid-connect" in config["capabilities"]:
        assert config["issuer"] == BASE and config["jwks_uri"] == f"{BASE}/.well-known/jwks.json"
    else:
        assert "issuer" not in config and "jwks_uri" not in config


def test_metadata_is_a_capability_statement_with_the_smart_oauth_uris(api: TestClient) -> None:
    response = api.get("/metadata", headers=NO_AUTH)
    assert response.status_code == 200
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert (statement["status"], statement["kind"], statement["fhirVersion"]) == (
        "active",
        "instance",
        "4.0.1",
    )
    [rest] = statement["rest"]
    assert rest["mode"] == "server"
    [oauth] = [ext for ext in rest["security"]["extension"] if ext["url"] == OAUTH_URIS]
    uris = {ext["url"]: ext["valueUri"] for ext in oauth["extension"]}
    config = smart_configuration(api)
    assert uris == {
        "authorize": config["authorization_endpoint"],
        "token": config["token_endpoint"],
        "introspect": config["introspection_endpoint"],
        "revoke": config["revocation_endpoint"],
    }
    [service] = rest["security"]["service"]
    assert service["coding"][0]["code"] == "SMART-on-FHIR"
    schemas: SchemaRegistry = api.app.state.services.resources.schemas  # type: ignore[attr-defined]
    assert [resource["type"] for resource in rest["resource"]] == sorted(schemas.types)
    interactions = {"read", "vread", "update", "patch", "delete", "history-instance", "create", "search-type"}
    for resource in rest["resource"]:
        assert {item["code"] for item in resource["interaction"]} == interactions
    assert {item["code"] for item in rest["interaction"]} == {"transaction", "batch"}


def test_the_capability_statement_parses_as_strict_r4(api: TestClient) -> None:
    from fhirclient.models.capabilitystatement import CapabilityStatement

    statement = CapabilityStatement(api.get("/metadata", headers=NO_AUTH).json(), strict=True)
    assert statement.rest[0].security.extension[0].url == OAUTH_URIS


# Each capability against behaviour


def _launch_standalone(api: TestClient) -> None:
    assert smart_tokens(api, "ann", "launch/patient patient/User.rs")["patient"] == "p1"


def _launch_ehr(api: TestClient) -> None:
    launch = register_launch(api, patient="p9", encounter="e1")
    assert smart_tokens(api, "doc", "launch", launch=launch)["patient"] == "p9"


def _context_ehr_encounter(api: TestClient) -> None:
    launch = register_launch(api, patient="p9", encounter="e1")
    assert smart_tokens(api, "doc", "launch launch/encounter", launch=launch)["encounter"] == "e1"


def _context_banner(api: TestClient) -> None:
    launch = register_launch(api, patient="p9", need_patient_banner=True)
    assert smart_tokens(api, "doc", "launch", launch=launch)["need_patient_banner"] is True


def _context_style(api: TestClient) -> None:
    launch = register_launch(api, smart_style_url="https://ehr.example/s.json")
    assert (
        smart_tokens(api, "doc", "launch", launch=launch)["smart_style_url"] == "https://ehr.example/s.json"
    )


def _client_public(api: TestClient) -> None:
    # smart-app has no secret: the code exchange authenticates nothing but PKCE
    sign_in(api, "ann")
    code = redirect_params(authorize(api, scope="patient/User.rs"))["code"]
    assert exchange(api, code, code_verifier="x" * 43).json()["error"] == "invalid_grant"
    assert _client_public_exchange(api) == 200


def _client_public_exchange(api: TestClient) -> int:
    return exchange(api, code_for(api, "ann", scope="patient/User.rs")).status_code


def _client_confidential_symmetric(api: TestClient) -> None:
    code = code_for(api, "ann", client_id=CONFIDENTIAL, scope="patient/User.rs")
    assert exchange(api, code, CONFIDENTIAL).status_code == 200
    code = code_for(api, "ann", client_id=CONFIDENTIAL, scope="patient/User.rs")
    wrong = api.post(
        "/auth/token",
        data={"grant_type": "authorization_code", "code": code, "code_verifier": "x" * 43},
        headers=basic(CONFIDENTIAL, "wrong"),
    )
    assert wrong.status_code == 401


def _client_confidential_asymmetric(api: TestClient) -> None:
    # A client with only a public key authenticates the code exchange with a JWT it signs (RFC 7523).
    key = RSAKey.generate_key(2048, parameters={"kid": "app-key", "use": "sig", "alg": "RS384"})
    client = {
        "resourceType": "Client",
        "jwks": {"keys": [key.as_dict(private=False)]},
        "grant_types": ["authorization_code"],
        "auth": {"authorization_code": {"redirect_uri": REDIRECT}},
    }
    assert api.put("/Client/asym-app", json=client).status_code == 201

    def assertion(signer: RSAKey) -> str:
        now = int(api.app.state.services.clock().timestamp())  # type: ignore[attr-defined]
        claims = {"iss": "asym-app", "sub": "asym-app", "aud": f"{BASE}/auth/token", "exp": now + 60}
        header = {"alg": "RS384", "kid": "app-key", "typ": "JWT"}
        return jwt.encode(header, {**claims, "jti": uuid.uuid4().hex}, signer, algorithms=["RS384"])

    for signer, status in ((RSAKey.generate_key(2048), 401), (key, 200)):
        code = code_for(api, "ann", client_id="asym-app", scope="patient/User.rs")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": VERIFIER,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion(signer),
        }
        assert api.post("/auth/token", data=form, headers=NO_AUTH).status_code == status


def _permission_offline(api: TestClient) -> None:
    assert "refresh_token" in smart_tokens(api, "ann", "patient/User.rs offline_access")


def _permission_patient(api: TestClient) -> None:
    auth = bearer(smart_tokens(api, "ann", "patient/User.rs")["access_token"])
    assert api.get("/User/ann", headers=auth).status_code == 200
    assert api.get("/User/bob", headers=auth).status_code == 403


def _permission_user(api: TestClient) -> None:
    auth = bearer(smart_tokens(api, "doc", "user/User.rs")["access_token"])
    assert api.get("/User/bob", headers=auth).status_code == 200
    assert api.get("/Client/ehr", headers=auth).status_code == 403


def _permission_v1(api: TestClient) -> None:
    tokens = smart_tokens(api, "doc", "user/User.read")
    assert tokens["scope"] == "user/User.read"
    auth = bearer(tokens["access_token"])
    assert api.get("/User/bob", headers=auth).status_code == 200
    assert api.patch("/User/bob", json={"locale": "x"}, headers=auth).status_code == 403


def _permission_v2(api: TestClient) -> None:
    auth = bearer(smart_tokens(api, "doc", "user/User.r")["access_token"])
    assert api.get("/User/bob", headers=auth).status_code == 200
    assert api.get("/User", headers=auth).status_code == 403


def _authorize_post(api: TestClient) -> None:
    sign_in(api, "ann")
    query = authorize_query(scope="patient/User.rs")
    headers = {**NO_AUTH, "Content-Type": "application/x-www-form-urlencoded"}
    posted = api.post("/auth/authorize", content=query, headers=headers, follow_redirects=False)
    code = redirect_params(consented(api, posted, query))["code"]
    assert exchange(api, code).status_code == 200


def _sso_openid_connect(api: TestClient) -> None:
    tokens = smart_tokens(api, "doc", "openid fhirUser")
    assert "id_token" in tokens


CHECKS: dict[str, Callable[[TestClient], None]] = {
    "launch-standalone": _launch_standalone,
    "launch-ehr": _launch_ehr,
    "context-standalone-patient": _launch_standalone,
    "context-ehr-patient": _launch_ehr,
    "context-ehr-encounter": _context_ehr_encounter,
    "context-banner": _context_banner,
    "context-style": _context_style,
    "client-public": _client_public,
    "client-confidential-symmetric": _client_confidential_symmetric,
    "client-confidential-asymmetric": _client_confidential_asymmetric,
    "permission-offline": _permission_offline,
    "permission-patient": _permission_patient,
    "permission-user": _permission_user,
    "permission-v1": _permission_v1,
    "permission-v2": _permission_v2,
    "sso-openid-connect": _sso_openid_connect,
    "authorize-post": _authorize_post,
}


@pytest.fixture
def smart(api: TestClient) -> TestClient:
    setup_smart(api)
    return api


def test_every_advertised_capability_works(smart: TestClient) -> None:
    capabilities = smart_configuration(smart)["capabilities"]
    unchecked = [name for name in capabilities if name not in CHECKS]
    assert unchecked == [], f"advertised without a check: {unchecked}"
    for name in capabilities:
        CHECKS[name](smart)
