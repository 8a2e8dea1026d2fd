"""A User created over its own tombstone by anyone but the administrator: the deleted version's
server-managed fields count as stored. Left out, `twoFactor` comes back (its sealed secret, bound to
the same id, still opens); sent with another value, the create is refused (403) and nothing is written.
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
ANN = {"resourceType": "User", "email": "ann@example.org", "password": "correct horse"}
MANAGED = "User.twoFactor is managed by the two-factor flows: only they and an administrator change it"


@pytest.fixture
def deleted(api: TestClient) -> dict[str, Any]:
    """Ann's User, her second factor on, deleted by the administrator; `api` may create Users. Her
    tombstone's `twoFactor`, as stored."""
    setup_users(api)
    setup_clients(api)
    assert (
        api.put("/User/ann", json={**ANN, "twoFactor": {"enabled": True, "secretKey": SECRET}}).status_code
        == 200
    )
    put_policy(
        api,
        "create-users",
        engine="matcho",
        matcho={"request-method": {"$enum": ["post", "put"]}, "uri": "#^/User"},
        link=[{"resourceType": "Client", "id": "api"}],
    )
    assert api.delete("/User/ann").status_code == 200
    stored = call(api, services(api).storage.get, "User", "ann")
    assert stored is not None and stored.deleted
    two_factor: dict[str, Any] = stored.document["twoFactor"]
    return two_factor


def _stored(api: TestClient) -> Any:
    return call(api, services(api).storage.get, "User", "ann")


def _sign_in(api: TestClient, code: str | None = None) -> int:
    form = {
        "grant_type": "password",
        "client_id": "spa",
        "username": "ann@example.org",
        "password": "correct horse",
    }
    if code is not None:
        form["totp"] = code
    return api.post("/auth/token", data=form, headers=NO_AUTH).status_code


@pytest.mark.parametrize("how", ["put", "post", "sent back as seen"])
def test_a_create_over_the_tombstone_keeps_the_second_factor(
    api: TestClient, clock: ManualClock, deleted: dict[str, Any], how: str
) -> None:
    if how == "put":
        res = api.put("/User/ann", json=ANN, headers=API)
    elif how == "post":
        res = api.post("/User", json={**ANN, "id": "ann"}, headers=API)
    else:
        res = api.put("/User/ann", json={**ANN, "twoFactor": {"enabled": True}}, headers=API)
    assert res.status_code == 201, res.text
    assert res.json()["twoFactor"] == {"enabled": True}
    stored = _stored(api)
    assert not stored.deleted and stored.document["twoFactor"] == deleted
    assert _sign_in(api) != 200
    assert _sign_in(api, totp.code_at(SECRET, totp.step_at(clock().timestamp()))) == 200


@pytest.mark.parametrize(
    "two_factor", [{"enabled": False}, {"enabled": True, "secretKey": "KRSXG5DTMVRXEZLU"}, None]
)
def test_a_create_over_the_tombstone_changing_the_second_factor_is_403(
    api: TestClient, deleted: dict[str, Any], two_factor: Any
) -> None:
    before = _stored(api)
    res = api.put("/User/ann", json={**ANN, "twoFactor": two_factor}, headers=API)
    assert res.status_code == 403, res.text
    assert [issue["diagnostics"] for issue in res.json()["issue"]] == [MANAGED]
    assert _stored(api) == before
    assert api.get("/User/ann").status_code == 410


def test_the_administrator_creates_over_the_tombstone_as_it_says(
    api: TestClient, deleted: dict[str, Any]
) -> None:
    assert api.put("/User/ann", json=ANN).status_code == 201
    assert "twoFactor" not in _stored(api).document
    assert _sign_in(api) == 200
