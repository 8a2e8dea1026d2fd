"""SMART scopes and the rest of the server: who acts as the administrator, Clients that declare
SMART resource scopes, and the one stored shape of User.fhirUser.

The apps' tokens are allowed everything by policy (smart_support), so each refusal here is the
scopes' (or the managed-field rule's) alone.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.api.pages_support import PASSWORD
from tests.api.smart_support import (
    APP_SECRET,
    CONFIDENTIAL,
    basic,
    bearer,
    setup_smart,
    smart_tokens,
)

FORBIDDEN = (403, "forbidden")
MANAGED = "User.twoFactor is managed by the two-factor flows: only they and an administrator change it"
TWO_FACTOR_ON = {"enabled": True}


@pytest.fixture
def smart(api: TestClient) -> TestClient:
    setup_smart(api)
    return api


def outcome(response: Any) -> tuple[int, str | None]:
    """The status and the OperationOutcome's code (None for any other body: a write that took)."""
    issues = response.json().get("issue") or [{}]
    return response.status_code, issues[0].get("code")


def diagnostics(response: Any) -> str:
    diagnostic: str = response.json()["issue"][0]["diagnostics"]
    return diagnostic


def root_token(api: TestClient, scope: str) -> dict[str, str]:
    response = api.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": scope},
        headers=basic("root", "secret"),
    )
    assert response.status_code == 200, response.text
    return bearer(response.json()["access_token"])


def eve_with(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "User", "id": "eve", "email": "eve@example.org", **fields}


def transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def put_eve(**fields: Any) -> dict[str, Any]:
    return {"request": {"method": "PUT", "url": "/User/eve"}, "resource": eve_with(**fields)}


# The administrator: the root client, unless a SMART scope binds its token


def test_a_root_token_bound_by_smart_scopes_does_not_write_managed_fields(smart: TestClient) -> None:
    auth = root_token(smart, "system/User.cruds")
    put = smart.put("/User/eve", json=eve_with(twoFactor=TWO_FACTOR_ON), headers=auth)
    assert outcome(put) == FORBIDDEN
    assert diagnostics(put) == MANAGED
    patched = smart.patch("/User/eve", json={"twoFactor": TWO_FACTOR_ON}, headers=auth)
    assert outcome(patched) == FORBIDDEN
    created = {"resourceType": "User", "id": "zed", "email": "zed@example.org", "twoFactor": TWO_FACTOR_ON}
    assert outcome(smart.post("/User", json=created, headers=auth)) == FORBIDDEN
    conditional = smart.post("/User", json=created, params={"email": "zed@example.org"}, headers=auth)
    assert outcome(conditional) == FORBIDDEN
    in_bundle = smart.post("/", json=transaction(put_eve(twoFactor=TWO_FACTOR_ON)), headers=auth)
    assert outcome(in_bundle) == FORBIDDEN
    assert diagnostics(in_bundle) == f"Bundle.entry[0]: {MANAGED}"
    batch = {**transaction(put_eve(twoFactor=TWO_FACTOR_ON)), "type": "batch"}
    entry = smart.post("/", json=batch, headers=auth).json()["entry"][0]["response"]
    assert entry["status"] == "403"
    assert entry["outcome"]["issue"][0]["diagnostics"] == f"Bundle.entry[0]: {MANAGED}"
    assert "twoFactor" not in smart.get("/User/eve").json()
    assert smart.get("/User/zed").status_code == 404
    # What its scopes allow, it does: the same write without the managed field.
    assert smart.put("/User/eve", json=eve_with(locale="fr"), headers=auth).status_code == 200


def test_the_root_client_itself_writes_managed_fields_alone_and_in_a_bundle(smart: TestClient) -> None:
    assert smart.put("/User/eve", json=eve_with(twoFactor=TWO_FACTOR_ON)).status_code == 200
    assert smart.get("/User/eve").json()["twoFactor"] == TWO_FACTOR_ON
    off = smart.post("/", json=transaction(put_eve(twoFactor={"enabled": False})))
    assert off.status_code == 200, off.text
    assert smart.get("/User/eve").json()["twoFactor"]["enabled"] is False


def test_a_root_token_without_resource_scopes_acts_as_the_administrator(smart: TestClient) -> None:
    auth = root_token(smart, "openid")
    assert smart.put("/User/eve", json=eve_with(twoFactor=TWO_FACTOR_ON), headers=auth).status_code == 200
    assert smart.get("/User/eve").json()["twoFactor"] == TWO_FACTOR_ON


# A Client that declares SMART resource scopes: its tokens are always bound by them


def _declares_smart_scopes(api: TestClient) -> None:
    scope = ["patient/*.rs", "openid", "fhirUser", "launch/patient"]
    assert api.patch(f"/Client/{CONFIDENTIAL}", json={"scope": scope}).status_code == 200


def password_token(api: TestClient, scope: str | None = None) -> dict[str, str]:
    form = {"grant_type": "password", "username": "ann@example.org", "password": PASSWORD}
    response = api.post(
        "/auth/token",
        data={**form, **({"scope": scope} if scope else {})},
        headers=basic(CONFIDENTIAL, APP_SECRET),
    )
    assert response.status_code == 200, response.text
    return bearer(response.json()["access_token"])


def test_a_smart_clients_token_without_resource_scopes_reaches_no_resource(smart: TestClient) -> None:
    _declares_smart_scopes(smart)
    for auth in (password_token(smart, "openid"), password_token(smart)):
        assert outcome(smart.get("/User/ann", headers=auth)) == FORBIDDEN
        assert outcome(smart.get("/Client/ehr", headers=auth)) == FORBIDDEN
        assert outcome(smart.get("/User", headers=auth)) == FORBIDDEN
        assert outcome(smart.patch("/User/ann", json={"locale": "x"}, headers=auth)) == FORBIDDEN
        batch = {**transaction({"request": {"method": "GET", "url": "/User/ann"}}), "type": "batch"}
        response = smart.post("/", json=batch, headers=auth)
        assert response.status_code == 200, response.text
        assert response.json()["entry"][0]["response"]["status"] == "403"
    assert "locale" not in smart.get("/User/ann").json()
    # Userinfo is no resource: the openid token still reads it.
    assert smart.get("/auth/userinfo", headers=password_token(smart, "openid")).json()["sub"] == "ann"


def test_a_smart_clients_token_with_resource_scopes_gets_what_they_allow(smart: TestClient) -> None:
    _declares_smart_scopes(smart)
    tokens = smart_tokens(smart, "ann", "openid patient/User.rs", client_id=CONFIDENTIAL)
    auth = bearer(tokens["access_token"])
    assert smart.get("/User/ann", headers=auth).status_code == 200
    assert outcome(smart.get("/User/bob", headers=auth)) == FORBIDDEN


def test_a_token_becomes_bound_when_its_client_declares_smart_scopes(smart: TestClient) -> None:
    auth = password_token(smart, "openid")
    assert smart.get("/Client/ehr", headers=auth).status_code == 200
    _declares_smart_scopes(smart)
    assert outcome(smart.get("/Client/ehr", headers=auth)) == FORBIDDEN


def test_a_client_credentials_token_of_a_smart_backend_without_scope_reaches_nothing(
    smart: TestClient,
) -> None:
    assert smart.patch(f"/Client/{CONFIDENTIAL}", json={"scope": ["system/User.rs"]}).status_code == 200
    response = smart.post(
        "/auth/token", data={"grant_type": "client_credentials"}, headers=basic(CONFIDENTIAL, APP_SECRET)
    )
    assert response.status_code == 200, response.text
    assert outcome(smart.get("/User/ann", headers=bearer(response.json()["access_token"]))) == FORBIDDEN


@pytest.mark.parametrize("listed", [None, ["openid", "profile", "launch/patient"]])
def test_a_client_without_smart_resource_scopes_keeps_aidbox_behaviour(
    smart: TestClient, listed: list[str] | None
) -> None:
    if listed is not None:
        assert smart.patch(f"/Client/{CONFIDENTIAL}", json={"scope": listed}).status_code == 200
    auth = password_token(smart, "openid")
    assert smart.get("/Client/ehr", headers=auth).status_code == 200
    assert smart.patch("/User/bob", json={"locale": "x"}, headers=auth).status_code == 200


# User.fhirUser: one stored shape, the Reference, so a compartment search finds every patient's User


@pytest.mark.parametrize("value", ["Patient/p9", "https://ehr.example/fhir/Patient/p9", "Practitioner/d9"])
def test_a_fhir_user_written_as_a_string_is_refused(api: TestClient, value: str) -> None:
    body = {"resourceType": "User", "id": "pat", "email": "pat@example.org", "fhirUser": value}
    response = api.put("/User/pat", json=body)
    assert outcome(response) == (422, "invalid")
    assert diagnostics(response) == "expected object"
    assert response.json()["issue"][0]["expression"] == ["User.fhirUser"]
    assert api.get("/User/pat").status_code == 404
    batch = {
        **transaction({"request": {"method": "PUT", "url": "/User/pat"}, "resource": body}),
        "type": "batch",
    }
    assert api.post("/", json=batch).json()["entry"][0]["response"]["status"] == "422"
    assert api.get("/User/pat").status_code == 404


def test_a_fhir_user_reference_is_found_by_the_compartment_search(api: TestClient) -> None:
    body = {
        "resourceType": "User",
        "email": "pat@example.org",
        "fhirUser": {"resourceType": "Patient", "id": "p9"},
    }
    assert api.put("/User/pat", json=body).status_code == 201
    found = api.get("/User", params={"fhirUser.resourceType": "Patient", "fhirUser.id": "p9"}).json()
    assert [entry["resource"]["id"] for entry in found["entry"]] == ["pat"]
