"""A Bundle's entries are authorized one by one, each as the request it describes would be alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from fhirauth.app import create_app
from fhirauth.clock import ManualClock
from tests.api.conftest import NO_AUTH, ROOT, settings_for
from tests.api.test_policy_access import API, put_policy, setup_clients, setup_users

POST_BUNDLE = {"request-method": "post", "uri": "/"}
API_LINK = [{"resourceType": "Client", "id": "api"}]
NURSE = {"resourceType": "User", "data": {"role": "nurse"}}


def _bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _post(resource: dict[str, Any], url: str | None = None) -> dict[str, Any]:
    return {"request": {"method": "POST", "url": url or resource["resourceType"]}, "resource": resource}


def _ids(api: TestClient, resource_type: str) -> list[str]:
    """What is stored, read back as the root client."""
    return sorted(entry["resource"]["id"] for entry in api.get(f"/{resource_type}").json().get("entry", []))


def _api_may_post_bundles_and_nurses(api: TestClient) -> None:
    setup_clients(api)
    put_policy(api, "bundles", engine="matcho", matcho=POST_BUNDLE, link=API_LINK)
    put_policy(
        api,
        "nurses",
        engine="matcho",
        matcho={"request-method": "post", "uri": "/User", "body": {"data": {"role": "nurse"}}},
        link=API_LINK,
    )


FORBIDDEN_WRITES = {
    "AccessPolicy": _post({"resourceType": "AccessPolicy", "engine": "allow", "link": API_LINK}),
    "User": _post({"resourceType": "User", "email": "boss@example.org", "data": {"role": "admin"}}),
    "Client": {
        "request": {"method": "PUT", "url": "/Client/backdoor"},
        "resource": {"resourceType": "Client", "secret": "s3cret", "grant_types": ["basic"]},
    },
}


@pytest.mark.parametrize("kind", sorted(FORBIDDEN_WRITES))
def test_a_transaction_with_one_refused_entry_is_403_naming_it_and_writes_nothing(
    api: TestClient, kind: str
) -> None:
    _api_may_post_bundles_and_nurses(api)
    before = {t: _ids(api, t) for t in ("AccessPolicy", "User", "Client")}
    entries = [_post(NURSE), _post(NURSE), _post(NURSE), FORBIDDEN_WRITES[kind]]
    res = api.post("/", json=_bundle("transaction", *entries), headers=API)
    assert res.status_code == 403
    [issue] = res.json()["issue"]
    assert issue["code"] == "forbidden"
    assert issue["expression"] == ["Bundle.entry[3]"]
    url = FORBIDDEN_WRITES[kind]["request"]["url"]
    assert issue["diagnostics"] == (
        f"Bundle.entry[3]: Access denied to {FORBIDDEN_WRITES[kind]['request']['method']} /{url.strip('/')}"
    )
    assert {t: _ids(api, t) for t in ("AccessPolicy", "User", "Client")} == before


def test_a_policy_allowing_only_post_slash_allows_no_entry(api: TestClient) -> None:
    setup_clients(api)
    put_policy(api, "bundles", engine="matcho", matcho=POST_BUNDLE, link=API_LINK)
    res = api.post("/", json=_bundle("transaction", _post(NURSE)), headers=API)
    assert res.status_code == 403
    assert res.json()["issue"][0]["diagnostics"] == "Bundle.entry[0]: Access denied to POST /User"
    assert _ids(api, "User") == []


def test_entries_a_policy_allows_go_through(api: TestClient) -> None:
    _api_may_post_bundles_and_nurses(api)
    res = api.post("/", json=_bundle("transaction", _post(NURSE), _post(NURSE)), headers=API)
    assert res.status_code == 200
    assert [e["response"]["status"] for e in res.json()["entry"]] == ["201 Created", "201 Created"]
    assert len(_ids(api, "User")) == 2


def test_the_bundle_endpoint_itself_still_needs_a_policy(api: TestClient) -> None:
    setup_clients(api)
    put_policy(
        api,
        "nurses",
        engine="matcho",
        matcho={"request-method": "post", "uri": "/User", "body": {"data": {"role": "nurse"}}},
        link=API_LINK,
    )
    res = api.post("/", json=_bundle("transaction", _post(NURSE)), headers=API)
    assert res.status_code == 403
    assert res.json()["issue"][0]["diagnostics"] == "Access denied"
    assert _ids(api, "User") == []


def test_a_batch_refuses_only_the_entries_the_policies_refuse(api: TestClient) -> None:
    ann, _ = setup_users(api)
    put_policy(api, "bundles", engine="matcho", matcho=POST_BUNDLE)
    put_policy(
        api,
        "own-user",
        engine="matcho",
        matcho={
            "request-method": "get",
            "uri": "#^/User/[^/]+$",
            "params": {"type": "User", "id": ".user.id"},
        },
    )
    res = api.post(
        "/",
        json=_bundle(
            "batch",
            {"request": {"method": "GET", "url": "/User/ann"}},
            {"request": {"method": "GET", "url": "/User/bob"}},
            {"request": {"method": "DELETE", "url": "/User/bob"}},
        ),
        headers=ann,
    )
    assert res.status_code == 200
    first, second, third = res.json()["entry"]
    assert first["response"]["status"] == "200 OK"
    assert first["resource"]["email"] == "ann@example.org"
    for refused, what in ((second, "GET /User/bob"), (third, "DELETE /User/bob")):
        assert refused == {
            "response": {
                "status": "403",
                "outcome": {
                    "resourceType": "OperationOutcome",
                    "issue": [
                        {
                            "severity": "error",
                            "code": "forbidden",
                            "diagnostics": f"Bundle.entry[{1 if refused is second else 2}]: Access denied to {what}",
                            "expression": [f"Bundle.entry[{1 if refused is second else 2}]"],
                        }
                    ],
                },
            }
        }
    assert "bob@example.org" not in res.text
    assert api.get("/User/bob").status_code == 200


def test_an_entry_is_judged_as_the_same_request_sent_alone(api: TestClient) -> None:
    """The same policy decides a PUT sent alone and the same PUT as an entry: params carry the route's
    `type` and `id`, `uri` the path."""
    ann, _ = setup_users(api)
    put_policy(api, "bundles", engine="matcho", matcho=POST_BUNDLE)
    put_policy(
        api,
        "own-user",
        engine="matcho",
        matcho={
            "request-method": "put",
            "uri": "#^/User/[^/]+$",
            "query-string": "",
            "params": {"type": "User", "id": ".user.id"},
            "body": {"resourceType": "User"},
        },
    )
    mine = {"resourceType": "User", "email": "ann@example.org", "data": {"n": 1}}
    assert api.put("/User/ann", json=mine, headers=ann).status_code == 200
    assert api.put("/User/bob", json=mine, headers=ann).status_code == 403
    res = api.post(
        "/",
        json=_bundle(
            "batch",
            {"request": {"method": "PUT", "url": "User/ann"}, "resource": {**mine, "data": {"n": 2}}},
            {"request": {"method": "PUT", "url": "/User/bob"}, "resource": mine},
            {"request": {"method": "PUT", "url": "/User/bob?x=1"}, "resource": mine},
        ),
        headers=ann,
    )
    assert [e["response"]["status"] for e in res.json()["entry"]] == ["200 OK", "403", "403"]
    assert api.get("/User/ann").json()["data"] == {"n": 2}
    assert api.get("/User/bob").json()["email"] == "bob@example.org"


def test_a_policy_sees_an_entry_after_its_urn_references_are_resolved(api: TestClient) -> None:
    _api_may_post_bundles_and_nurses(api)
    put_policy(
        api,
        "reports-to-boss",
        engine="matcho",
        matcho={"request-method": "post", "uri": "/User", "body": {"data": {"manager": "User/boss"}}},
        link=API_LINK,
    )
    boss = "urn:uuid:0d7f3e6a-0000-4000-8000-000000000001"
    res = api.post(
        "/",
        json=_bundle(
            "transaction",
            {"fullUrl": boss, **_post({**NURSE, "id": "boss"})},
            _post({"resourceType": "User", "id": "carol", "data": {"manager": boss}}),
        ),
        headers=API,
    )
    assert res.status_code == 200, res.text
    assert api.get("/User/carol").json()["data"] == {"manager": "User/boss"}


def test_a_collection_entry_is_judged_as_the_upsert_it_becomes(api: TestClient) -> None:
    _api_may_post_bundles_and_nurses(api)
    res = api.post(
        "/",
        json=_bundle(
            "collection",
            {"resource": NURSE},
            {
                "resource": {
                    "resourceType": "AccessPolicy",
                    "id": "sneaky",
                    "engine": "allow",
                    "link": API_LINK,
                }
            },
        ),
        headers=API,
    )
    assert res.status_code == 200
    first, second = res.json()["entry"]
    assert first["response"]["status"] == "201 Created"
    assert second["response"]["status"] == "403"
    assert second["response"]["outcome"]["issue"][0]["diagnostics"] == (
        "Bundle.entry[1]: Access denied to PUT /AccessPolicy/sneaky"
    )
    assert api.get("/AccessPolicy/sneaky").status_code == 404


def test_an_anonymous_callers_refused_entry_is_403_inside_the_bundle(api: TestClient) -> None:
    put_policy(api, "anyone-bundles", engine="matcho", matcho=POST_BUNDLE)
    res = api.post("/", json=_bundle("transaction", _post(NURSE)), headers=NO_AUTH)
    assert res.status_code == 403
    assert "www-authenticate" not in res.headers
    assert res.json()["issue"][0]["expression"] == ["Bundle.entry[0]"]
    res = api.post("/", json=_bundle("batch", _post(NURSE)), headers=NO_AUTH)
    assert res.status_code == 200
    assert res.json()["entry"][0]["response"]["status"] == "403"
    assert _ids(api, "User") == []


def test_the_root_client_is_unrestricted(api: TestClient) -> None:
    setup_clients(api)
    res = api.post(
        "/",
        json=_bundle("transaction", *FORBIDDEN_WRITES.values()),
        headers={"Authorization": ROOT},
    )
    assert res.status_code == 200
    assert [e["response"]["status"] for e in res.json()["entry"]] == ["201 Created"] * 3


def test_seeding_at_start_up_writes_every_entry(storage_url: str, tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps(_bundle("transaction", *FORBIDDEN_WRITES.values())))
    app = create_app(settings_for(storage_url, seed=str(seed)), clock=ManualClock())
    with TestClient(app, raise_server_exceptions=False, headers={"Authorization": ROOT}) as api:
        assert len(_ids(api, "AccessPolicy")) == 1
        assert len(_ids(api, "User")) == 1
        assert _ids(api, "Client") == ["backdoor"]
