"""User.twoFactor is server-managed: only the two-factor flows and the administrator change it.

A user allowed to write her own User (a self-service policy) keeps her second factor whatever she
sends: leaving `twoFactor` out or sending back what she can see of it keeps it; anything else is a
403 naming `User.twoFactor`, and nothing is written.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from fhirauth.clock import ManualClock
from fhirauth.twofactor import totp
from tests.api.conftest import NO_AUTH
from tests.api.pages_support import call, services
from tests.api.test_policy_access import API, put_policy, setup_clients, setup_users

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
MANAGED = {
    "severity": "error",
    "code": "forbidden",
    "diagnostics": (
        "User.twoFactor is managed by the two-factor flows: only they and an administrator change it"
    ),
    "expression": ["User.twoFactor"],
}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


def _stored(api: TestClient, id: str = "ann") -> dict[str, Any]:
    stored = call(api, services(api).storage.get, "User", id)
    assert stored is not None
    document: dict[str, Any] = stored.document
    return document


def _sign_in(api: TestClient, code: str | None = None) -> int:
    form = {"grant_type": "password", "client_id": "spa", "username": "ann@example.org"}
    form["password"] = "correct horse"
    if code is not None:
        form["totp"] = code
    return api.post("/auth/token", data=form, headers=NO_AUTH).status_code


def _code(clock: ManualClock) -> str:
    return totp.code_at(SECRET, totp.step_at(clock().timestamp()))


@pytest.fixture
def ann(api: TestClient) -> dict[str, str]:
    """Ann's bearer token; her 2FA on (imported by the administrator); she may PUT and PATCH her own
    User, and post Bundles."""
    ann, _ = setup_users(api)
    two_factor = {"enabled": True, "secretKey": SECRET}
    res = api.put(
        "/User/ann", json={"resourceType": "User", "email": "ann@example.org", "twoFactor": two_factor}
    )
    assert res.status_code == 200
    put_policy(
        api,
        "self-service",
        engine="matcho",
        matcho={
            "request-method": {"$enum": ["put", "patch"]},
            "uri": "#^/User/[^/]+$",
            "params": {"id": ".user.id"},
        },
    )
    put_policy(api, "bundles", engine="matcho", matcho={"request-method": "post", "uri": "/"})
    return ann


def _refused(res: Any) -> None:
    assert res.status_code == 403, res.text
    assert res.json() == {"resourceType": "OperationOutcome", "issue": [MANAGED]}


def test_a_put_without_two_factor_keeps_it(api: TestClient, clock: ManualClock, ann: dict[str, str]) -> None:
    before = _stored(api)
    res = api.put(
        "/User/ann", json={"resourceType": "User", "email": "ann@example.org", "userName": "ann"}, headers=ann
    )
    assert res.status_code == 200
    assert res.json()["twoFactor"] == {"enabled": True}
    after = _stored(api)
    assert after["userName"] == "ann"
    assert after["twoFactor"] == before["twoFactor"]
    # The secret still opens: signing in still needs the code.
    assert _sign_in(api) != 200
    assert _sign_in(api, _code(clock)) == 200


def test_a_put_sending_back_what_the_caller_sees_keeps_it(api: TestClient, ann: dict[str, str]) -> None:
    before = _stored(api)
    shown = api.get("/User/ann").json()
    assert shown["twoFactor"] == {"enabled": True}
    res = api.put("/User/ann", json={**shown, "userName": "ann"}, headers=ann)
    assert res.status_code == 200
    assert _stored(api)["twoFactor"] == before["twoFactor"]


@pytest.mark.parametrize(
    "two_factor",
    [
        {"enabled": False},
        {"enabled": True, "secretKey": "KRSXG5DTMVRXEZLU"},
        {"enabled": True, "transport": "sms"},
        None,
    ],
)
def test_a_put_changing_two_factor_is_403(api: TestClient, ann: dict[str, str], two_factor: Any) -> None:
    before = _stored(api)
    body = {"resourceType": "User", "email": "ann@example.org", "twoFactor": two_factor}
    _refused(api.put("/User/ann", json=body, headers=ann))
    assert _stored(api) == before


@pytest.mark.parametrize(
    ("patch", "headers"),
    [
        ([{"op": "remove", "path": "/twoFactor"}], JSON_PATCH),
        ([{"op": "replace", "path": "/twoFactor/enabled", "value": False}], JSON_PATCH),
        ([{"op": "add", "path": "/twoFactor/secretKey", "value": "KRSXG5DTMVRXEZLU"}], JSON_PATCH),
        ({"twoFactor": None}, MERGE_PATCH),
        ({"twoFactor": {"enabled": False}}, MERGE_PATCH),
    ],
)
def test_a_patch_changing_two_factor_is_403(
    api: TestClient, ann: dict[str, str], patch: Any, headers: dict[str, str]
) -> None:
    before = _stored(api)
    _refused(api.patch("/User/ann", json=patch, headers={**ann, **headers}))
    assert _stored(api) == before


def test_a_patch_leaving_two_factor_alone_keeps_it(
    api: TestClient, clock: ManualClock, ann: dict[str, str]
) -> None:
    before = _stored(api)
    res = api.patch("/User/ann", json={"userName": "ann"}, headers={**ann, **MERGE_PATCH})
    assert res.status_code == 200
    res = api.patch(
        "/User/ann", json=[{"op": "add", "path": "/data", "value": {"x": 1}}], headers={**ann, **JSON_PATCH}
    )
    assert res.status_code == 200
    after = _stored(api)
    assert (after["userName"], after["data"], after["twoFactor"]) == ("ann", {"x": 1}, before["twoFactor"])
    assert _sign_in(api) != 200
    assert _sign_in(api, _code(clock)) == 200


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_a_bundle_entry_changing_two_factor_is_403(api: TestClient, ann: dict[str, str], kind: str) -> None:
    before = _stored(api)
    entries = [
        {
            "request": {"method": "PUT", "url": "/User/ann"},
            "resource": {"resourceType": "User", "email": "ann@example.org", "twoFactor": {"enabled": False}},
        },
        {
            "request": {"method": "PATCH", "url": "/User/ann"},
            "resource": [{"op": "remove", "path": "/twoFactor"}],
        },
    ]
    res = api.post("/", json={"resourceType": "Bundle", "type": kind, "entry": entries}, headers=ann)
    if kind == "transaction":
        assert res.status_code == 403
        assert res.json()["issue"] == [
            {**MANAGED, "diagnostics": f"Bundle.entry[0]: {MANAGED['diagnostics']}"}
        ]
    else:
        assert res.status_code == 200
        for index, entry in enumerate(res.json()["entry"]):
            assert entry["response"]["status"] == "403"
            assert entry["response"]["outcome"]["issue"] == [
                {**MANAGED, "diagnostics": f"Bundle.entry[{index}]: {MANAGED['diagnostics']}"}
            ]
    assert _stored(api) == before


def test_a_bundle_entry_leaving_two_factor_out_keeps_it(api: TestClient, ann: dict[str, str]) -> None:
    before = _stored(api)
    entry = {
        "request": {"method": "PUT", "url": "/User/ann"},
        "resource": {"resourceType": "User", "email": "ann@example.org", "userName": "ann"},
    }
    res = api.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry]}, headers=ann)
    assert res.status_code == 200
    after = _stored(api)
    assert (after["userName"], after["twoFactor"]) == ("ann", before["twoFactor"])


@pytest.mark.parametrize(
    ("two_factor", "status"),
    [
        ({"enabled": True, "secretKey": SECRET}, 403),
        ({"enabled": False, "secretKey": SECRET}, 403),
        ({"enabled": True}, 403),
        ({"enabled": False}, 201),
        (None, 201),
    ],
)
def test_a_create_by_a_non_administrator_may_only_leave_two_factor_off(
    api: TestClient, two_factor: Any, status: int
) -> None:
    setup_clients(api)
    put_policy(
        api,
        "create-users",
        engine="matcho",
        matcho={"request-method": "post", "uri": "/User"},
        link=[{"resourceType": "Client", "id": "api"}],
    )
    body: dict[str, Any] = {"resourceType": "User", "id": "new"}
    if two_factor is not None:
        body["twoFactor"] = two_factor
    res = api.post("/User", json=body, headers=API)
    assert res.status_code == status, res.text
    if status == 403:
        assert res.json()["issue"] == [MANAGED]
        assert api.get("/User/new").status_code == 404
    else:
        assert api.get("/User/new").json().get("twoFactor") == two_factor


def test_the_administrator_turning_two_factor_off_resets_it(api: TestClient, ann: dict[str, str]) -> None:
    res = api.put(
        "/User/ann",
        json={"resourceType": "User", "email": "ann@example.org", "twoFactor": {"enabled": False}},
    )
    assert res.status_code == 200
    assert _stored(api)["twoFactor"] == {"enabled": False}
    assert _sign_in(api) == 200


def test_the_administrator_imports_a_secret(api: TestClient, clock: ManualClock) -> None:
    setup_users(api)
    two_factor = {"enabled": True, "secretKey": SECRET}
    res = api.put(
        "/User/bob", json={"resourceType": "User", "email": "bob@example.org", "twoFactor": two_factor}
    )
    assert res.status_code == 200
    assert res.json()["twoFactor"] == {"enabled": True}
    stored = _stored(api, "bob")["twoFactor"]
    assert stored["enabled"] is True and stored["secretKey"] != SECRET
    form = {
        "grant_type": "password",
        "client_id": "spa",
        "username": "bob@example.org",
        "password": "correct horse",
    }
    assert api.post("/auth/token", data=form, headers=NO_AUTH).status_code != 200
    assert api.post("/auth/token", data={**form, "totp": _code(clock)}, headers=NO_AUTH).status_code == 200
