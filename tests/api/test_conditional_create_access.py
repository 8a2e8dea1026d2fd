"""A conditional create that matches shows the matched record only to a caller who may read it.

The match is judged as `GET /Type/id` sent alone by the same caller. One who may not read it gets
FHIR's minimal answer: 200 (the create is satisfied, nothing is written) with no body, no Location
and no ETag. The existence of a match is told either way (that is what a conditional create asks);
the record is not.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.api.test_policy_access import API, put_policy, setup_clients

API_LINK = [{"resourceType": "Client", "id": "api"}]
NURSE = {"resourceType": "User", "email": "nina@example.org", "data": {"role": "nurse"}}
CONDITION = "email=nina@example.org"


def _bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


@pytest.fixture
def creator(api: TestClient) -> TestClient:
    """`api` may post Bundles and create nurses; User/nina exists."""
    setup_clients(api)
    put_policy(api, "bundles", engine="matcho", matcho={"request-method": "post", "uri": "/"}, link=API_LINK)
    pattern = {"request-method": "post", "uri": "/User", "body": {"data": {"role": "nurse"}}}
    put_policy(api, "nurses", engine="matcho", matcho=pattern, link=API_LINK)
    assert api.put("/User/nina", json=NURSE).status_code == 201
    return api


def _may_read_nurses(api: TestClient) -> None:
    put_policy(
        api,
        "read-nina",
        engine="matcho",
        matcho={"request-method": "get", "uri": "/User/nina"},
        link=API_LINK,
    )


def _total(api: TestClient) -> int:
    total: int = api.get("/User").json()["total"]
    return total


@pytest.mark.parametrize("how", ["header", "query"])
def test_a_match_the_caller_may_not_read_is_a_bare_200(creator: TestClient, how: str) -> None:
    if how == "header":
        res = creator.post("/User", json=NURSE, headers={**API, "If-None-Exist": CONDITION})
    else:
        res = creator.post(f"/User?{CONDITION}", json=NURSE, headers=API)
    assert (res.status_code, res.content) == (200, b"")
    assert "location" not in res.headers and "etag" not in res.headers
    assert _total(creator) == 1


def test_a_match_the_caller_may_read_is_answered_with_it(creator: TestClient) -> None:
    _may_read_nurses(creator)
    res = creator.post("/User", json=NURSE, headers={**API, "If-None-Exist": CONDITION})
    assert res.status_code == 200
    assert (res.json()["id"], res.json()["email"], res.headers["etag"]) == (
        "nina",
        "nina@example.org",
        'W/"1"',
    )
    assert _total(creator) == 1


def test_the_administrator_gets_the_match(creator: TestClient) -> None:
    res = creator.post("/User", json=NURSE, headers={"If-None-Exist": CONDITION})
    assert (res.status_code, res.json()["id"]) == (200, "nina")


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_an_entrys_match_the_caller_may_not_read_is_a_bare_200_and_the_rest_goes_on(
    creator: TestClient, kind: str
) -> None:
    matched = {"request": {"method": "POST", "url": "User", "ifNoneExist": CONDITION}, "resource": NURSE}
    fresh = {"request": {"method": "POST", "url": "User"}, "resource": {**NURSE, "email": "nils@example.org"}}
    res = creator.post("/", json=_bundle(kind, matched, fresh), headers=API)
    assert res.status_code == 200, res.text
    first, second = res.json()["entry"]
    assert first == {"response": {"status": "200 OK"}}
    assert second["response"]["status"] == "201 Created"
    assert second["resource"]["email"] == "nils@example.org"
    assert _total(creator) == 2


def test_an_entrys_match_the_caller_may_read_is_answered_with_it(creator: TestClient) -> None:
    _may_read_nurses(creator)
    matched = {"request": {"method": "POST", "url": f"User?{CONDITION}"}, "resource": NURSE}
    res = creator.post("/", json=_bundle("batch", matched), headers=API)
    [entry] = res.json()["entry"]
    assert (entry["response"]["status"], entry["resource"]["id"]) == ("200 OK", "nina")
