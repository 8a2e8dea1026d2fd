"""CRUD, versioning and preconditions over HTTP, on every backend."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from fhirauth.clock import ManualClock

USER = {"resourceType": "User", "email": "alice@example.org", "name": {"givenName": "Alice"}}


def test_create_read_update_delete_story(api: TestClient, clock: ManualClock) -> None:
    # 1. create with an id in the body: 201, Location, ETag, Last-Modified
    res1 = api.post("/User", json={**USER, "id": "alice"})
    assert res1.status_code == 201
    assert res1.headers["location"] == "/User/alice/_history/1"
    assert res1.headers["etag"] == 'W/"1"'
    assert res1.headers["last-modified"] == "Thu, 01 Jan 2026 00:00:00 GMT"
    body = res1.json()
    assert body["id"] == "alice"
    assert body["meta"] == {
        "versionId": "1",
        "lastUpdated": "2026-01-01T00:00:00.000Z",
        "createdAt": "2026-01-01T00:00:00.000Z",
    }
    # 2. the same id again: 409
    res2 = api.post("/User", json={**USER, "id": "alice"})
    assert res2.status_code == 409
    assert res2.json()["issue"][0]["code"] == "conflict"
    # 3. read
    res3 = api.get("/User/alice")
    assert res3.status_code == 200
    assert res3.json() == body
    # 4. update with the right If-Match (both ETag forms are accepted)
    clock.advance(60)
    res4 = api.put("/User/alice", json={**USER, "email": "a2@example.org"}, headers={"If-Match": 'W/"1"'})
    assert res4.status_code == 200
    assert res4.json()["meta"]["versionId"] == "2"
    assert res4.json()["meta"]["createdAt"] == "2026-01-01T00:00:00.000Z"
    assert res4.json()["meta"]["lastUpdated"] == "2026-01-01T00:01:00.000Z"
    res5 = api.put("/User/alice", json=USER, headers={"If-Match": "2"})
    assert res5.status_code == 200
    # 5. a stale If-Match: 412, nothing written
    res6 = api.put("/User/alice", json={**USER, "email": "stale@example.org"}, headers={"If-Match": "1"})
    assert res6.status_code == 412
    assert api.get("/User/alice").json()["email"] == "alice@example.org"
    # 6. vread and history (newest first)
    assert api.get("/User/alice/_history/2").json()["email"] == "a2@example.org"
    history = api.get("/User/alice/_history").json()
    assert history["type"] == "history"
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["3", "2", "1"]
    assert [e["request"]["method"] for e in history["entry"]] == ["PUT", "PUT", "POST"]
    # 7. delete: 200 with the resource, then 410 on read, 204 on a second delete
    res7 = api.delete("/User/alice")
    assert res7.status_code == 200
    assert res7.json()["email"] == "alice@example.org"
    assert api.get("/User/alice").status_code == 410
    assert api.get("/User/alice").json()["issue"][0]["code"] == "deleted"
    assert api.delete("/User/alice").status_code == 204
    assert api.get("/User/alice/_history").json()["entry"][0]["request"]["method"] == "DELETE"
    # 8. created again after deletion: the version count continues
    res8 = api.put("/User/alice", json=USER)
    assert res8.status_code == 201
    assert res8.json()["meta"]["versionId"] == "5"


def test_create_generates_an_id(api: TestClient) -> None:
    res = api.post("/User", json=USER)
    assert res.status_code == 201
    id = res.json()["id"]
    assert len(id) == 36
    assert api.get(f"/User/{id}").json()["email"] == "alice@example.org"


def test_a_generated_id_is_not_looked_up_first(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = api.app.state.services.storage  # type: ignore[attr-defined]
    looked_up: list[tuple[str, str]] = []
    get = storage.get

    async def counted_get(resource_type: str, id: str) -> object:
        looked_up.append((resource_type, id))
        return await get(resource_type, id)

    monkeypatch.setattr(storage, "get", counted_get)
    assert api.post("/User", json=USER).status_code == 201
    assert looked_up == []
    # A caller-chosen id is checked: it may name a live resource or a tombstone.
    assert api.post("/User", json={**USER, "id": "chosen"}).status_code == 201
    assert looked_up == [("User", "chosen")]
    assert api.post("/User", json={**USER, "id": "chosen"}).status_code == 409


def test_put_upserts(api: TestClient) -> None:
    res = api.put("/User/bob", json={"resourceType": "User", "email": "bob@example.org", "id": "bob"})
    assert res.status_code == 201
    assert res.json()["id"] == "bob"
    assert res.headers["location"] == "/User/bob/_history/1"


def test_a_put_whose_body_names_another_id_writes_nothing(api: TestClient) -> None:
    res = api.put("/User/bob", json={"resourceType": "User", "email": "bob@example.org", "id": "other"})
    assert res.status_code == 400
    assert res.json()["issue"][0]["diagnostics"] == "The body's id does not match 'bob' in the url"
    assert api.get("/User/bob").status_code == 404
    assert api.get("/User/other").status_code == 404


def test_put_if_match_on_a_missing_resource_is_412(api: TestClient) -> None:
    assert api.put("/User/ghost", json=USER, headers={"If-Match": "1"}).status_code == 412
    assert api.get("/User/ghost").status_code == 404


def test_put_with_unchanged_content_keeps_the_version(api: TestClient) -> None:
    api.put("/User/carol", json=USER)
    res = api.put("/User/carol", json=USER)
    assert res.status_code == 200
    assert res.json()["meta"]["versionId"] == "1"


def test_read_missing_is_404_outcome(api: TestClient) -> None:
    res = api.get("/User/nobody")
    assert res.status_code == 404
    assert res.json() == {
        "resourceType": "OperationOutcome",
        "id": "not-found",
        "issue": [
            {"severity": "error", "code": "not-found", "diagnostics": "Resource User/nobody not found"}
        ],
    }


def test_unknown_resource_type_is_404(api: TestClient) -> None:
    res = api.get("/Patient/1")
    assert res.status_code == 404
    assert res.json()["issue"][0]["diagnostics"] == "Unknown resource type 'Patient'"
    assert api.post("/Patient", json={"resourceType": "Patient"}).status_code == 404


def test_conditional_create(api: TestClient) -> None:
    first = api.post("/User?_id=dave", json=USER)
    assert first.status_code == 201
    assert first.json()["id"] == "dave"
    again = api.post("/User?_id=dave", json={**USER, "email": "other@example.org"})
    assert again.status_code == 200
    assert again.json()["email"] == "alice@example.org"
    by_header = api.post("/User", json=USER, headers={"If-None-Exist": "email=alice@example.org"})
    assert by_header.status_code == 200
    assert by_header.json()["id"] == "dave"
    api.post("/User", json=USER)
    ambiguous = api.post("/User", json=USER, headers={"If-None-Exist": "email=alice@example.org"})
    assert ambiguous.status_code == 412


def test_merge_patch_and_json_patch(api: TestClient) -> None:
    api.put("/User/erin", json={**USER, "data": {"a": 1, "b": 2}})
    merged = api.patch("/User/erin", json={"data": {"a": None, "c": 3}, "userName": "erin"})
    assert merged.status_code == 200
    assert merged.json()["data"] == {"b": 2, "c": 3}
    assert merged.json()["userName"] == "erin"
    assert merged.json()["meta"]["versionId"] == "2"
    patched = api.patch(
        "/User/erin",
        content=b'[{"op": "replace", "path": "/email", "value": "erin@example.org"}]',
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert patched.status_code == 200
    assert patched.json()["email"] == "erin@example.org"
    failed_test = api.patch("/User/erin", json=[{"op": "test", "path": "/email", "value": "x@example.org"}])
    assert failed_test.status_code == 422
    stale = api.patch("/User/erin", json={"userName": "x"}, headers={"If-Match": "1"})
    assert stale.status_code == 412
    not_array = api.patch(
        "/User/erin", content=b'{"op": "add"}', headers={"Content-Type": "application/json-patch+json"}
    )
    assert not_array.status_code == 400
    assert api.get("/User/erin").json()["meta"]["versionId"] == "3"
    assert api.patch("/User/nobody", json={"userName": "x"}).status_code == 404


def test_patch_that_breaks_the_schema_is_422_and_not_written(api: TestClient) -> None:
    api.put("/User/frank", json=USER)
    res = api.patch("/User/frank", json={"inactive": "yes"})
    assert res.status_code == 422
    assert res.json()["issue"][0]["expression"] == ["User.inactive"]
    assert api.get("/User/frank").json()["meta"]["versionId"] == "1"


def test_fhir_json_is_echoed(api: TestClient) -> None:
    res = api.post(
        "/User",
        content=b'{"resourceType": "User", "email": "g@example.org"}',
        headers={"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"},
    )
    assert res.status_code == 201
    assert res.headers["content-type"] == "application/fhir+json"


def test_yaml_in_and_out(api: TestClient) -> None:
    res = api.put(
        "/User/yaml",
        content=b"resourceType: User\nemail: y@example.org\ndata:\n  born: 2001-01-01\n",
        headers={"Content-Type": "text/yaml", "Accept": "text/yaml"},
    )
    assert res.status_code == 201
    assert res.headers["content-type"].startswith("text/yaml")
    assert "email: y@example.org" in res.text
    assert api.get("/User/yaml").json()["data"] == {"born": "2001-01-01"}
    assert "resourceType: User" in api.get("/User/yaml?_format=yaml").text


def test_delete_with_if_match(api: TestClient) -> None:
    api.put("/User/hank", json=USER)
    assert api.delete("/User/hank", headers={"If-Match": "7"}).status_code == 412
    assert api.get("/User/hank").status_code == 200
    assert api.delete("/User/hank", headers={"If-Match": 'W/"1"'}).status_code == 200
