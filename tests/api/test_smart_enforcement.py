"""A token's SMART resource scopes bound what the AccessPolicies allow it, on every interaction and on
every Bundle entry. The apps' tokens are allowed everything by policy (smart_support), so each refusal
here is the scopes' alone.

What `patient/` means on fhirauth: no clinical data is served here, so a patient's compartment holds
only the User records whose fhirUser is that Patient. patient/ scopes reach nothing else.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.api.smart_support import APP_SECRET, CONFIDENTIAL, basic, bearer, setup_smart, smart_tokens

FORBIDDEN = (403, "forbidden")


@pytest.fixture
def smart(api: TestClient) -> TestClient:
    setup_smart(api)
    return api


def outcome(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["issue"][0]["code"]


def token_for(api: TestClient, user: str, scope: str) -> dict[str, str]:
    return bearer(smart_tokens(api, user, scope)["access_token"])


def user_body(id: str, patient: str | None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "User", "id": id, "email": f"{id}@example.org", **fields}
    if patient is not None:
        body["fhirUser"] = {"resourceType": "Patient", "id": patient}
    return body


# patient/ scopes: the patient's own User records, nothing else


def test_patient_read_scope_reads_the_patients_user_and_nothing_else(smart: TestClient) -> None:
    auth = token_for(smart, "ann", "patient/User.rs")
    assert smart.get("/User/ann", headers=auth).status_code == 200
    assert smart.get("/User/ann/_history", headers=auth).status_code == 200
    assert smart.get("/User/ann/_history/1", headers=auth).status_code == 200
    assert smart.head("/User/ann", headers=auth).status_code == 200
    # another patient's User, a User without a patient, a missing one, another type
    assert outcome(smart.get("/User/bob", headers=auth)) == FORBIDDEN
    assert outcome(smart.get("/User/eve", headers=auth)) == FORBIDDEN
    assert outcome(smart.get("/User/nobody", headers=auth)) == FORBIDDEN
    assert outcome(smart.get("/User/bob/_history", headers=auth)) == FORBIDDEN
    assert outcome(smart.get("/User/bob/_history/1", headers=auth)) == FORBIDDEN
    assert smart.head("/User/bob", headers=auth).status_code == 403
    assert outcome(smart.get("/Client/smart-app", headers=auth)) == FORBIDDEN


def test_patient_search_scope_searches_only_when_the_query_keeps_to_the_compartment(
    smart: TestClient,
) -> None:
    auth = token_for(smart, "ann", "patient/User.rs")
    confined = {"fhirUser.resourceType": "Patient", "fhirUser.id": "p1"}
    found = smart.get("/User", params=confined, headers=auth)
    assert found.status_code == 200, found.text
    assert [entry["resource"]["id"] for entry in found.json()["entry"]] == ["ann"]
    narrowed = smart.get("/User", params={**confined, "email": "nobody@example.org"}, headers=auth)
    assert (narrowed.status_code, narrowed.json()["entry"]) == (200, [])
    for params in (
        {},
        {"fhirUser.id": "p1"},
        {"fhirUser.resourceType": "Patient"},
        {"fhirUser.resourceType": "Patient", "fhirUser.id": "p2"},
        {"fhirUser.resourceType": "Patient", "fhirUser.id": "p1,p2"},
        {"fhirUser.resourceType": "Patient,Practitioner", "fhirUser.id": "p1"},
        {"email": "ann@example.org"},
    ):
        assert outcome(smart.get("/User", params=params, headers=auth)) == FORBIDDEN, params
    # without the s permission
    read_only = token_for(smart, "bob", "patient/User.r")
    assert (
        outcome(smart.get("/User", params={**confined, "fhirUser.id": "p2"}, headers=read_only)) == FORBIDDEN
    )


def test_patient_read_scope_cannot_write(smart: TestClient) -> None:
    auth = token_for(smart, "ann", "patient/User.rs")
    assert outcome(smart.put("/User/ann", json=user_body("ann", "p1"), headers=auth)) == FORBIDDEN
    assert outcome(smart.patch("/User/ann", json={"displayName": "A"}, headers=auth)) == FORBIDDEN
    assert outcome(smart.delete("/User/ann", headers=auth)) == FORBIDDEN
    assert outcome(smart.post("/User", json=user_body("new", "p1"), headers=auth)) == FORBIDDEN
    # nothing was written
    stored = smart.get("/User/ann").json()
    assert stored["meta"]["versionId"] == "1" and "displayName" not in stored
    assert smart.get("/User/new").status_code == 404


def test_patient_write_scope_writes_inside_the_compartment_only(smart: TestClient) -> None:
    auth = token_for(smart, "ann", "patient/User.cruds")
    # update and patch of the patient's User, keeping it the patient's
    assert (
        smart.put("/User/ann", json=user_body("ann", "p1", displayName="Ann"), headers=auth).status_code
        == 200
    )
    assert smart.patch("/User/ann", json={"locale": "en"}, headers=auth).status_code == 200
    # moving it out of the compartment, or writing another patient's User, is refused
    assert outcome(smart.put("/User/ann", json=user_body("ann", "p2"), headers=auth)) == FORBIDDEN
    moved = {"fhirUser": {"resourceType": "Patient", "id": "p2"}}
    assert outcome(smart.patch("/User/ann", json=moved, headers=auth)) == FORBIDDEN
    json_patch = [{"op": "replace", "path": "/fhirUser/id", "value": "p2"}]
    headers = {**auth, "Content-Type": "application/json-patch+json"}
    response = smart.patch("/User/ann", content=json.dumps(json_patch), headers=headers)
    assert outcome(response) == FORBIDDEN
    assert outcome(smart.put("/User/bob", json=user_body("bob", "p2"), headers=auth)) == FORBIDDEN
    assert outcome(smart.delete("/User/bob", headers=auth)) == FORBIDDEN
    # create: only a User of the patient, and even that names a fhirUser, which only an administrator sets
    assert outcome(smart.post("/User", json=user_body("x", "p2"), headers=auth)) == FORBIDDEN
    assert outcome(smart.post("/User", json=user_body("y", None), headers=auth)) == FORBIDDEN
    own = smart.post("/User", json=user_body("z", "p1"), headers=auth)
    assert (own.status_code, own.json()["issue"][0]["expression"]) == (403, ["User.fhirUser"])
    assert smart.get("/User/z").status_code == 404
    assert smart.get("/User/ann").json()["fhirUser"] == {"resourceType": "Patient", "id": "p1"}
    assert smart.delete("/User/ann", headers=auth).status_code == 200


# user/ scopes: by resource type and interaction, on top of the policies


def test_user_scopes_limit_types_and_interactions(smart: TestClient) -> None:
    auth = token_for(smart, "doc", "user/User.rs")
    assert smart.get("/User/bob", headers=auth).status_code == 200
    assert smart.get("/User", headers=auth).status_code == 200
    assert outcome(smart.get("/Client/smart-app", headers=auth)) == FORBIDDEN
    assert outcome(smart.get("/Client", headers=auth)) == FORBIDDEN
    assert outcome(smart.get("/AccessPolicy/smart-apps", headers=auth)) == FORBIDDEN
    assert outcome(smart.put("/User/bob", json=user_body("bob", "p2"), headers=auth)) == FORBIDDEN
    assert outcome(smart.post("/User", json=user_body("n", None), headers=auth)) == FORBIDDEN
    assert outcome(smart.delete("/User/bob", headers=auth)) == FORBIDDEN
    assert outcome(smart.patch("/User/bob", json={"locale": "x"}, headers=auth)) == FORBIDDEN


def test_user_wildcard_write_scope_writes_any_type_the_policy_allows(smart: TestClient) -> None:
    auth = token_for(smart, "doc", "user/*.cud")
    assert smart.patch("/User/bob", json={"locale": "fr"}, headers=auth).status_code == 200
    assert outcome(smart.get("/User/bob", headers=auth)) == FORBIDDEN


def test_scopes_never_widen_the_policies(api: TestClient) -> None:
    setup_smart(api)
    api.delete("/AccessPolicy/smart-apps")
    auth = token_for(api, "doc", "user/*.cruds")
    assert outcome(api.get("/User/bob", headers=auth)) == FORBIDDEN


# system/ scopes: client tokens


def test_system_scopes_bound_a_client_token(smart: TestClient) -> None:
    response = smart.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/User.rs"},
        headers=basic(CONFIDENTIAL, APP_SECRET),
    )
    auth = bearer(response.json()["access_token"])
    assert smart.get("/User/ann", headers=auth).status_code == 200
    assert outcome(smart.get("/Client/ehr", headers=auth)) == FORBIDDEN
    assert outcome(smart.patch("/User/ann", json={"locale": "x"}, headers=auth)) == FORBIDDEN


def test_the_root_clients_token_with_smart_scopes_is_bound_by_them(smart: TestClient) -> None:
    response = smart.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/User.rs"},
        headers=basic("root", "secret"),
    )
    assert response.status_code == 200, response.text
    auth = bearer(response.json()["access_token"])
    assert smart.get("/User/ann", headers=auth).status_code == 200
    assert outcome(smart.get("/Client/ehr", headers=auth)) == FORBIDDEN
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": "/User/eve"}}],
    }
    assert outcome(smart.post("/", json=transaction, headers=auth)) == FORBIDDEN
    assert smart.get("/User/eve").status_code == 200


# Tokens without SMART resource scopes: as before


def test_a_token_without_resource_scopes_is_bound_by_policies_alone(smart: TestClient) -> None:
    auth = token_for(smart, "ann", "openid launch/patient")
    assert smart.get("/Client/ehr", headers=auth).status_code == 200
    assert smart.patch("/User/bob", json={"locale": "x"}, headers=auth).status_code == 200


# Bundles: every entry as the request it describes


def test_bundle_entries_are_bound_by_the_scopes(smart: TestClient) -> None:
    auth = token_for(smart, "ann", "patient/User.rs")
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "/User/ann"}},
            {"request": {"method": "GET", "url": "/User/bob"}},
            {"request": {"method": "GET", "url": "/Client/ehr"}},
            {"request": {"method": "PATCH", "url": "/User/ann"}, "resource": {"locale": "x"}},
        ],
    }
    response = smart.post("/", json=batch, headers=auth)
    assert response.status_code == 200, response.text
    statuses = [entry["response"]["status"] for entry in response.json()["entry"]]
    assert [status.split()[0] for status in statuses] == ["200", "403", "403", "403"]
    transaction = {**batch, "type": "transaction", "entry": batch["entry"][3:]}
    assert outcome(smart.post("/", json=transaction, headers=auth)) == FORBIDDEN
    assert "locale" not in smart.get("/User/ann").json()
