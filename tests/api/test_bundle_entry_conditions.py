"""A Bundle entry's conditions reach AccessPolicy as the headers the same request would carry alone:
`ifMatch` as `if-match`, `ifNoneExist` as `if-none-exist`; the Bundle's own conditional headers are
not its entries'."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from tests.api.pages_support import call, services
from tests.api.test_policy_access import API, put_policy, setup_clients

API_LINK = [{"resourceType": "Client", "id": "api"}]
NURSE = {"resourceType": "User", "data": {"role": "nurse"}}


def _bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _version(api: TestClient, id: str) -> str:
    stored = call(api, services(api).storage.get, "User", id)
    assert stored is not None
    version: str = stored.document["meta"]["versionId"]
    return version


def _statuses(res: Any) -> list[str]:
    assert res.status_code == 200, res.text
    return [entry["response"]["status"] for entry in res.json()["entry"]]


def test_an_entrys_if_match_is_judged_as_the_header_and_the_bundles_is_not(api: TestClient) -> None:
    """The policy lets `api` update Users only with If-Match (optimistic concurrency). An entry
    without `ifMatch` is refused even when the Bundle's own request carries If-Match; an entry with
    it passes, as the same PUT sent alone does."""
    setup_clients(api)
    put_policy(api, "bundles", engine="matcho", matcho={"request-method": "post", "uri": "/"}, link=API_LINK)
    pattern = {"request-method": "put", "uri": "#^/User/", "headers": {"if-match": "present?"}}
    put_policy(api, "guarded-puts", engine="matcho", matcho=pattern, link=API_LINK)
    assert api.put("/User/nina", json=NURSE).status_code == 201
    assert api.put("/User/nina", json=NURSE, headers=API).status_code == 403
    assert api.put("/User/nina", json=NURSE, headers={**API, "If-Match": 'W/"1"'}).status_code == 200

    put = {"method": "PUT", "url": "User/nina"}
    unguarded = {"request": put, "resource": {**NURSE, "userName": "x"}}
    res = api.post("/", json=_bundle("batch", unguarded), headers={**API, "If-Match": "*"})
    assert _statuses(res) == ["403"]
    assert _version(api, "nina") == "1"

    guarded = {"request": {**put, "ifMatch": 'W/"1"'}, "resource": unguarded["resource"]}
    assert _statuses(api.post("/", json=_bundle("batch", guarded), headers=API)) == ["200 OK"]
    assert _version(api, "nina") == "2"


def test_the_bundles_if_none_exist_does_not_make_its_entries_conditional(api: TestClient) -> None:
    """The policy lets `api` create nurses, but no conditional create. The Bundle's request carrying
    If-None-Exist makes none of its plain entries conditional: each is created."""
    setup_clients(api)
    put_policy(api, "bundles", engine="matcho", matcho={"request-method": "post", "uri": "/"}, link=API_LINK)
    pattern = {"request-method": "post", "uri": "/User", "headers": {"if-none-exist": "nil?"}}
    put_policy(
        api, "nurses", engine="matcho", matcho={**pattern, "body": {"data": {"role": "nurse"}}}, link=API_LINK
    )
    post = {"method": "POST", "url": "User"}
    entry = {"request": post, "resource": NURSE}
    headers = {**API, "If-None-Exist": "email=boss@example.org"}
    assert _statuses(api.post("/", json=_bundle("batch", entry), headers=headers)) == ["201 Created"]
    conditional = {
        "request": {**post, "ifNoneExist": "email=boss@example.org"},
        "resource": NURSE,
    }
    assert _statuses(api.post("/", json=_bundle("batch", conditional), headers=API)) == ["403"]
    assert api.get("/User").json()["total"] == 1
