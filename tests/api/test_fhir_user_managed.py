"""User.fhirUser is set by the administrator only: it puts a user in a patient's compartment for
`patient/` scopes, so a user allowed to write her own User (a self-service policy) must not point it
at another patient, nor give herself one.

As with twoFactor: leaving `fhirUser` out or sending back what she sees keeps it; anything else is a
403 naming `User.fhirUser`, and nothing is written.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.api.pages_support import call, services
from tests.api.test_policy_access import API, put_policy, setup_clients, setup_users

MINE = {"resourceType": "Patient", "id": "p-ann"}
OTHER = {"resourceType": "Patient", "id": "p-bob"}
MANAGED = {
    "severity": "error",
    "code": "forbidden",
    "diagnostics": "User.fhirUser is set by an administrator only: it names the FHIR record the user stands for",
    "expression": ["User.fhirUser"],
}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
ANN = {"resourceType": "User", "email": "ann@example.org"}


def _stored(api: TestClient, id: str = "ann") -> dict[str, Any]:
    stored = call(api, services(api).storage.get, "User", id)
    assert stored is not None
    document: dict[str, Any] = stored.document
    return document


def _self_service(api: TestClient) -> dict[str, str]:
    """Ann's bearer token; she may PUT, PATCH and DELETE her own User, and post Bundles."""
    ann, _ = setup_users(api)
    put_policy(
        api,
        "self-service",
        engine="matcho",
        matcho={
            "request-method": {"$enum": ["put", "patch", "delete"]},
            "uri": "#^/User/[^/]+$",
            "params": {"id": ".user.id"},
        },
    )
    put_policy(api, "bundles", engine="matcho", matcho={"request-method": "post", "uri": "/"})
    return ann


@pytest.fixture
def ann(api: TestClient) -> dict[str, str]:
    """Ann, whose fhirUser (her Patient) the administrator set."""
    token = _self_service(api)
    assert api.put("/User/ann", json={**ANN, "fhirUser": MINE}).status_code == 200
    return token


def _refused(res: Any) -> None:
    assert res.status_code == 403, res.text
    assert res.json() == {"resourceType": "OperationOutcome", "issue": [MANAGED]}


def test_a_put_without_fhir_user_keeps_it(api: TestClient, ann: dict[str, str]) -> None:
    res = api.put("/User/ann", json={**ANN, "userName": "ann"}, headers=ann)
    assert res.status_code == 200
    assert res.json()["fhirUser"] == MINE
    assert (_stored(api)["userName"], _stored(api)["fhirUser"]) == ("ann", MINE)


def test_a_put_sending_back_what_she_sees_keeps_it(api: TestClient, ann: dict[str, str]) -> None:
    shown = api.get("/User/ann").json()
    res = api.put("/User/ann", json={**shown, "userName": "ann"}, headers=ann)
    assert res.status_code == 200
    assert _stored(api)["fhirUser"] == MINE


@pytest.mark.parametrize("fhir_user", [OTHER, {"resourceType": "Practitioner", "id": "p-ann"}, None])
def test_a_put_changing_fhir_user_is_403(api: TestClient, ann: dict[str, str], fhir_user: Any) -> None:
    before = _stored(api)
    _refused(api.put("/User/ann", json={**ANN, "fhirUser": fhir_user}, headers=ann))
    assert _stored(api) == before


@pytest.mark.parametrize(
    ("patch", "headers"),
    [
        ([{"op": "replace", "path": "/fhirUser/id", "value": "p-bob"}], JSON_PATCH),
        ([{"op": "remove", "path": "/fhirUser"}], JSON_PATCH),
        ([{"op": "move", "from": "/fhirUser", "path": "/data"}], JSON_PATCH),
        ({"fhirUser": OTHER}, MERGE_PATCH),
        ({"fhirUser": None}, MERGE_PATCH),
    ],
)
def test_a_patch_changing_fhir_user_is_403(
    api: TestClient, ann: dict[str, str], patch: Any, headers: dict[str, str]
) -> None:
    before = _stored(api)
    _refused(api.patch("/User/ann", json=patch, headers={**ann, **headers}))
    assert _stored(api) == before


def test_a_user_without_one_cannot_give_herself_one(api: TestClient) -> None:
    token = _self_service(api)
    before = _stored(api)
    _refused(api.put("/User/ann", json={**ANN, "fhirUser": OTHER}, headers=token))
    _refused(api.patch("/User/ann", json={"fhirUser": OTHER}, headers={**token, **MERGE_PATCH}))
    entry = {"request": {"method": "PUT", "url": "User/ann"}, "resource": {**ANN, "fhirUser": OTHER}}
    res = api.post("/", json={"resourceType": "Bundle", "type": "batch", "entry": [entry]}, headers=token)
    [answered] = res.json()["entry"]
    assert answered["response"]["status"] == "403"
    assert _stored(api) == before


def test_deleting_and_recreating_her_user_cannot_change_it(api: TestClient, ann: dict[str, str]) -> None:
    entries = [
        {"request": {"method": "DELETE", "url": "User/ann"}},
        {"request": {"method": "PUT", "url": "User/ann"}, "resource": {**ANN, "fhirUser": OTHER}},
    ]
    res = api.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}, headers=ann)
    assert res.status_code == 403
    assert res.json()["issue"][0]["expression"] == ["User.fhirUser"]
    assert _stored(api)["fhirUser"] == MINE


@pytest.mark.parametrize(("fhir_user", "status"), [(MINE, 403), (None, 201)])
def test_a_create_by_a_non_administrator_may_not_set_it(api: TestClient, fhir_user: Any, status: int) -> None:
    setup_clients(api)
    put_policy(
        api,
        "create-users",
        engine="matcho",
        matcho={"request-method": "post", "uri": "/User"},
        link=[{"resourceType": "Client", "id": "api"}],
    )
    body: dict[str, Any] = {"resourceType": "User", "id": "new"}
    if fhir_user is not None:
        body["fhirUser"] = fhir_user
    res = api.post("/User", json=body, headers=API)
    assert res.status_code == status, res.text
    if status == 403:
        assert res.json()["issue"] == [MANAGED]
        assert api.get("/User/new").status_code == 404
    else:
        assert "fhirUser" not in api.get("/User/new").json()


def test_the_administrator_sets_and_changes_it(api: TestClient, ann: dict[str, str]) -> None:
    assert api.put("/User/ann", json={**ANN, "fhirUser": OTHER}).status_code == 200
    assert _stored(api)["fhirUser"] == OTHER
    assert api.patch("/User/ann", json={"fhirUser": None}, headers=MERGE_PATCH).status_code == 200
    assert "fhirUser" not in _stored(api)
