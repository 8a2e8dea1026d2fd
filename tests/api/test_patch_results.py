"""A patch's result passes the same structural guard as a PUT body: PATCH and PUT accept exactly the
same documents, on every backend."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.api.test_policy_access import API, setup_clients

JSON_PATCH = {"Content-Type": "application/json-patch+json"}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.fixture
def stored(api: TestClient) -> dict[str, Any]:
    res = api.put("/User/p", json={"resourceType": "User", "data": {"kept": 1}})
    assert res.status_code == 201
    document: dict[str, Any] = res.json()
    return document


REFUSED = [
    (
        [{"op": "add", "path": "/data/$where", "value": 1}],
        JSON_PATCH,
        "data.$where",
        "must not start with '$'",
    ),
    ([{"op": "add", "path": "/$where", "value": 1}], JSON_PATCH, "$where", "must not start with '$'"),
    (
        [{"op": "add", "path": "/data/x", "value": {"$gt": ""}}],
        JSON_PATCH,
        "data.x.$gt",
        "must not start with '$'",
    ),
    (
        [{"op": "add", "path": "/data/a\x00b", "value": 1}],
        JSON_PATCH,
        "data.a\\u0000b",
        "must not contain NUL",
    ),
    ([{"op": "add", "path": "/data/", "value": 1}], JSON_PATCH, "data", "must not be empty"),
    ({"data": {"$where": 1}}, MERGE_PATCH, "data.$where", "must not start with '$'"),
    # Each half within the depth limit, the result beyond it.
    (
        [{"op": "add", "path": "/data/" + "/".join(["a"] * 16), "value": _nested(20)}],
        JSON_PATCH,
        None,
        "nests deeper than 32 levels",
    ),
]


@pytest.mark.parametrize(("patch", "headers", "expression", "message"), REFUSED)
def test_a_patch_whose_result_a_put_would_refuse_is_400_and_writes_nothing(
    api: TestClient,
    stored: dict[str, Any],
    patch: Any,
    headers: dict[str, str],
    expression: str | None,
    message: str,
) -> None:
    if isinstance(patch, list) and patch[0]["path"].startswith("/data/a/"):
        api.put("/User/p", json={"resourceType": "User", "data": {"kept": 1, **_nested(16)}})
        stored = api.get("/User/p").json()
    res = api.patch("/User/p", json=patch, headers=headers)
    assert res.status_code == 400, res.text
    [issue] = res.json()["issue"]
    assert message in issue["diagnostics"]
    if expression is not None:
        assert issue["expression"] == [expression]
    assert api.get("/User/p").json() == stored


def test_a_bundle_patch_entry_is_judged_on_its_result(api: TestClient, stored: dict[str, Any]) -> None:
    entry = {
        "request": {"method": "PATCH", "url": "/User/p"},
        "resource": [{"op": "add", "path": "/data/a\x00b", "value": 1}],
    }
    res = api.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry]})
    assert res.status_code == 400
    assert res.json()["issue"][0]["diagnostics"] == (
        "Bundle.entry[0]: Property names must not contain NUL characters"
    )
    assert api.get("/User/p").json() == stored


def test_a_patch_may_set_an_operator_where_a_pattern_stands(api: TestClient) -> None:
    setup_clients(api)
    policy = {"resourceType": "AccessPolicy", "engine": "matcho", "matcho": {"request-method": "post"}}
    assert (
        api.put(
            "/AccessPolicy/p", json={**policy, "link": [{"resourceType": "Client", "id": "api"}]}
        ).status_code
        == 201
    )
    assert api.get("/User", headers=API).status_code == 403
    res = api.patch(
        "/AccessPolicy/p",
        json={"matcho": {"request-method": {"$enum": ["get"]}, "uri": "/User"}},
        headers=MERGE_PATCH,
    )
    assert res.status_code == 200, res.text
    assert api.get("/User", headers=API).status_code == 200
    res = api.patch(
        "/AccessPolicy/p",
        json=[{"op": "add", "path": "/matcho/uri", "value": {"$one-of": ["/Client"]}}],
        headers=JSON_PATCH,
    )
    assert res.status_code == 200, res.text
    assert api.get("/AccessPolicy/p").json()["matcho"] == {
        "request-method": {"$enum": ["get"]},
        "uri": {"$one-of": ["/Client"]},
    }
    assert api.get("/User", headers=API).status_code == 403
    assert api.get("/Client", headers=API).status_code == 200
    res = api.patch(
        "/AccessPolicy/p",
        json=[{"op": "add", "path": "/link/0/$id", "value": "x"}],
        headers=JSON_PATCH,
    )
    assert res.status_code == 400
    assert res.json()["issue"][0]["expression"] == ["link[0].$id"]
