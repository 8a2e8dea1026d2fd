"""Matcho operators and JSON Schema keywords are storable where the AccessPolicy schema says a pattern
or a schema stands (`x-dollar-keys`), and a `$` property name anywhere else is still a 400."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from fhirauth.app import create_app
from fhirauth.clock import ManualClock
from tests.api.conftest import ROOT, settings_for
from tests.api.test_policy_access import API, setup_clients

API_LINK = [{"resourceType": "Client", "id": "api"}]


def _store(api: TestClient, id: str, **fields: Any) -> dict[str, Any]:
    """PUT the policy as root and check that it reads back exactly as sent."""
    policy = {"resourceType": "AccessPolicy", "link": API_LINK, **fields}
    res = api.put(f"/AccessPolicy/{id}", json=policy)
    assert res.status_code == 201, res.text
    stored = api.get(f"/AccessPolicy/{id}").json()
    assert {k: v for k, v in stored.items() if k not in ("id", "meta")} == policy
    return stored


def _user(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "User", **fields}


def test_enum_allows_exactly_the_listed_values(api: TestClient) -> None:
    setup_clients(api)
    _store(api, "p", engine="matcho", matcho={"request-method": {"$enum": ["get", "head"]}, "uri": "#^/User"})
    assert api.get("/User", headers=API).status_code == 200
    assert api.post("/User", json=_user(), headers=API).status_code == 403
    assert api.delete("/User/x", headers=API).status_code == 403
    assert api.get("/Client", headers=API).status_code == 403


def test_one_of_allows_a_request_matching_any_of_its_patterns(api: TestClient) -> None:
    setup_clients(api)
    _store(
        api,
        "p",
        engine="matcho",
        matcho={"request-method": "get", "uri": {"$one-of": ["/User", "#^/Client/"]}},
    )
    assert api.get("/User", headers=API).status_code == 200
    assert api.get("/Client/api", headers=API).status_code == 200
    assert api.get("/Client", headers=API).status_code == 403
    assert api.get("/AccessPolicy", headers=API).status_code == 403


def test_contains_allows_an_array_with_a_matching_element(api: TestClient) -> None:
    setup_clients(api)
    _store(
        api,
        "p",
        engine="matcho",
        matcho={
            "request-method": "post",
            "uri": "/User",
            "body": {"roles": {"$contains": {"value": "nurse"}}},
        },
    )
    nurse = _user(roles=[{"value": "clerk"}, {"value": "nurse"}])
    assert api.post("/User", json=nurse, headers=API).status_code == 201
    assert api.post("/User", json=_user(roles=[{"value": "clerk"}]), headers=API).status_code == 403
    assert api.post("/User", json=_user(), headers=API).status_code == 403


def test_operators_in_the_sub_policies_of_a_complex_policy(api: TestClient) -> None:
    setup_clients(api)
    _store(
        api,
        "p",
        engine="complex",
        **{
            "and": [
                {"engine": "matcho", "matcho": {"request-method": {"$enum": ["get"]}}},
                {
                    "engine": "complex",
                    "or": [{"engine": "matcho", "matcho": {"uri": {"$one-of": ["/User", "/Client"]}}}],
                },
            ]
        },
    )
    assert api.get("/User", headers=API).status_code == 200
    assert api.get("/Client", headers=API).status_code == 200
    assert api.post("/User", json=_user(), headers=API).status_code == 403
    assert api.get("/AccessPolicy", headers=API).status_code == 403


def test_a_json_schema_policy_may_use_ref_and_defs(api: TestClient) -> None:
    # `$id` beside `$ref` is what a MongoDB driver reads back as a DBRef unless the backend escapes it.
    setup_clients(api)
    schema = {
        "$id": "urn:example:read-users",
        "$ref": "#/$defs/read",
        "$defs": {
            "read": {
                "properties": {"request-method": {"const": "get"}, "uri": {"$ref": "#/$defs/users"}},
                "required": ["request-method", "uri"],
            },
            "users": {"type": "string", "pattern": "^/User"},
        },
    }
    _store(api, "p", engine="json-schema", schema=schema)
    assert api.get("/User", headers=API).status_code == 200
    assert api.get("/Client", headers=API).status_code == 403
    assert api.post("/User", json=_user(), headers=API).status_code == 403


@pytest.fixture
def schema_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback server that would hand out a schema allowing everything, and records each fetch."""
    fetched: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetched.append(self.path)
            body = b"true"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/allow-all.json", fetched
    finally:
        server.shutdown()
        server.server_close()


def test_a_remote_ref_is_never_fetched_and_the_policy_denies(
    api: TestClient, schema_server: tuple[str, list[str]]
) -> None:
    url, fetched = schema_server
    setup_clients(api)
    _store(api, "p", engine="json-schema", schema={"$ref": url})
    assert api.get("/User", headers=API).status_code == 403
    assert fetched == []


def test_a_bundle_and_a_seed_file_store_operators_too(
    api: TestClient, storage_url: str, tmp_path: Path
) -> None:
    policy = {
        "resourceType": "AccessPolicy",
        "id": "from-bundle",
        "engine": "matcho",
        "matcho": {"request-method": {"$enum": ["get"]}},
    }
    res = api.post(
        "/",
        json={
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"request": {"method": "PUT", "url": "/AccessPolicy/from-bundle"}, "resource": policy}],
        },
    )
    assert res.status_code == 200, res.text
    assert api.get("/AccessPolicy/from-bundle").json()["matcho"] == policy["matcho"]
    seed = tmp_path / "seed.json"
    seed.write_text(
        json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": policy}]})
    )
    app = create_app(settings_for(storage_url, seed=str(seed)), clock=ManualClock())
    with TestClient(app, raise_server_exceptions=False, headers={"Authorization": ROOT}) as seeded:
        assert seeded.get("/AccessPolicy/from-bundle").json()["matcho"] == policy["matcho"]


ELSEWHERE = [
    ("/User", _user(data={"$where": "1"}), "data.$where"),
    ("/User", _user(data={"matcho": {"$enum": ["a"]}}), "data.matcho.$enum"),
    ("/AccessPolicy", {"resourceType": "AccessPolicy", "engine": "allow", "$comment": "x"}, "$comment"),
    (
        "/AccessPolicy",
        {"resourceType": "AccessPolicy", "engine": "allow", "link": [{"resourceType": "Client", "$id": "x"}]},
        "link[0].$id",
    ),
    (
        "/AccessPolicy",
        {"resourceType": "AccessPolicy", "engine": "complex", "or": [{"engine": "allow", "$x": 1}]},
        "or[0].$x",
    ),
    ("/AccessPolicy", {"resourceType": "AccessPolicy", "engine": "allow", "meta": {"$v": 1}}, "meta.$v"),
    ("/Client", {"resourceType": "Client", "matcho": {"$enum": ["a"]}}, "matcho.$enum"),
]


@pytest.mark.parametrize(("url", "body", "path"), ELSEWHERE)
def test_a_dollar_key_anywhere_else_is_400_and_nothing_is_written(
    api: TestClient, url: str, body: dict[str, Any], path: str
) -> None:
    res = api.post(url, json=body)
    assert res.status_code == 400
    [issue] = res.json()["issue"]
    assert issue["diagnostics"] == "Property names must not start with '$'"
    assert issue["expression"] == [path]
    assert api.get(url).json()["total"] == 0
    entry = {"request": {"method": "POST", "url": url}, "resource": body}
    res = api.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry]})
    assert res.status_code == 400
    assert res.json()["issue"][0]["diagnostics"] == "Bundle.entry[0]: Property names must not start with '$'"
    assert api.get(url).json()["total"] == 0


def test_a_dollar_key_in_a_bundle_outside_its_resources_is_400(api: TestClient) -> None:
    res = api.post("/", json={"resourceType": "Bundle", "type": "batch", "entry": [], "$where": "1"})
    assert res.status_code == 400
    assert res.json()["issue"][0]["expression"] == ["$where"]
