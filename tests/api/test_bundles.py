from __future__ import annotations

from starlette.testclient import TestClient


def _bundle(kind: str, *entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def test_transaction_commits_every_entry_with_urn_references(api: TestClient) -> None:
    res = api.post(
        "/",
        json=_bundle(
            "transaction",
            {
                "fullUrl": "urn:uuid:6b0c6a52-5d5c-4b34-9f31-000000000001",
                "request": {"method": "POST", "url": "/User"},
                "resource": {"resourceType": "User", "email": "t@example.org"},
            },
            {
                "request": {"method": "PUT", "url": "/AccessPolicy/for-t"},
                "resource": {
                    "resourceType": "AccessPolicy",
                    "engine": "allow",
                    "link": [{"resourceType": "User", "id": "urn:uuid:6b0c6a52-5d5c-4b34-9f31-000000000001"}],
                },
            },
        ),
    )
    assert res.status_code == 200
    body = res.json()
    assert body["type"] == "transaction-response"
    assert [e["response"]["status"] for e in body["entry"]] == ["201 Created", "201 Created"]
    user_id = body["entry"][0]["resource"]["id"]
    assert body["entry"][0]["response"]["location"] == f"/User/{user_id}/_history/1"
    assert body["entry"][0]["response"]["etag"] == 'W/"1"'
    policy = api.get("/AccessPolicy/for-t").json()
    assert policy["link"] == [{"resourceType": "User", "id": user_id}]


def test_failed_transaction_leaves_no_trace(api: TestClient) -> None:
    api.put("/User/existing", json={"resourceType": "User", "email": "e@example.org"})
    res = api.post(
        "/",
        json=_bundle(
            "transaction",
            {"request": {"method": "PUT", "url": "/User/new1"}, "resource": {"resourceType": "User"}},
            {
                "request": {"method": "PUT", "url": "/User/existing"},
                "resource": {"resourceType": "User", "email": "changed@example.org"},
            },
            {
                "request": {"method": "POST", "url": "/User"},
                "resource": {"resourceType": "User", "id": "existing"},
            },
        ),
    )
    assert res.status_code == 409
    assert res.json()["issue"][0]["diagnostics"].startswith("Bundle.entry[2]: ")
    assert api.get("/User/new1").status_code == 404
    assert api.get("/User/new1/_history").status_code == 404
    assert api.get("/User/existing").json()["email"] == "e@example.org"
    assert api.get("/User/existing").json()["meta"]["versionId"] == "1"


def test_invalid_entry_fails_the_transaction_with_422(api: TestClient) -> None:
    res = api.post(
        "/",
        json=_bundle(
            "transaction",
            {"request": {"method": "PUT", "url": "/User/ok"}, "resource": {"resourceType": "User"}},
            {
                "request": {"method": "PUT", "url": "/User/bad"},
                "resource": {"resourceType": "User", "inactive": 3},
            },
        ),
    )
    assert res.status_code == 422
    assert res.json()["issue"][0]["expression"] == ["User.inactive"]
    assert api.get("/User/ok").status_code == 404


def test_batch_reports_each_entry(api: TestClient) -> None:
    res = api.post(
        "/",
        json=_bundle(
            "batch",
            {"request": {"method": "PUT", "url": "/User/b1"}, "resource": {"resourceType": "User"}},
            {
                "request": {"method": "PUT", "url": "/User/b2"},
                "resource": {"resourceType": "User", "inactive": 3},
            },
            {"request": {"method": "GET", "url": "/User/b1"}},
            {"request": {"method": "DELETE", "url": "/User/none"}},
            {"request": {"method": "GET", "url": "/Nope/1"}},
        ),
    )
    assert res.status_code == 200
    body = res.json()
    assert body["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created", "422", "200 OK", "204 No Content", "404"]
    assert body["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert api.get("/User/b1").status_code == 200
    assert api.get("/User/b2").status_code == 404


def test_collection_upserts(api: TestClient) -> None:
    res = api.post(
        "/",
        json=_bundle(
            "collection",
            {"resource": {"resourceType": "User", "id": "c1", "email": "c1@example.org"}},
            {"resource": {"resourceType": "Client", "id": "c2", "grant_types": ["basic"], "secret": "s"}},
        ),
    )
    assert res.status_code == 200
    assert [e["response"]["status"] for e in res.json()["entry"]] == ["201 Created", "201 Created"]
    again = api.post(
        "/",
        json=_bundle(
            "collection", {"resource": {"resourceType": "User", "id": "c1", "email": "c1@example.org"}}
        ),
    )
    assert again.json()["entry"][0]["response"]["status"] == "200 OK"
    assert api.get("/User/c1").json()["meta"]["versionId"] == "1"


def test_bundle_shape_errors(api: TestClient) -> None:
    assert api.post("/", json={"resourceType": "User"}).status_code == 400
    assert api.post("/", json={"resourceType": "Bundle", "type": "searchset"}).status_code == 400
    assert api.post("/", json={"resourceType": "Bundle", "type": "batch", "entry": "x"}).status_code == 400
    res = api.post(
        "/",
        json=_bundle(
            "transaction",
            {"request": {"method": "PUT", "url": "/User"}, "resource": {"resourceType": "User"}},
        ),
    )
    assert res.status_code == 400
