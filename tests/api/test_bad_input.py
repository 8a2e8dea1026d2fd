"""Bad input answers 4xx with an OperationOutcome, and nothing is written."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient


def _nothing_written(api: TestClient) -> None:
    assert api.get("/User").json()["total"] == 0


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b'{"resourceType": "User", "email": ', "application/json", 400),
        (b"", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b"resourceType: User\nemail: [unclosed", "text/yaml", 400),
        (b"- just\n- a list\n", "text/yaml", 400),
        (b'{"resourceType": "User", "email\\u0000x": 1}', "application/json", 400),
        (b'{"resourceType": "User", "data": {"$where": "1"}}', "application/json", 400),
        (b'{"resourceType": "User", "email": 5}', "application/json", 422),
        (b'{"resourceType": "User", "inactive": "no"}', "application/json", 422),
        (b'{"resourceType": "User", "roles": "admin"}', "application/json", 422),
        (b'{"resourceType": "Client", "email": "x"}', "application/json", 400),
        (b"<User/>", "application/xml", 415),
        (b"!!python/object/apply:os.system ['true']", "text/yaml", 400),
    ],
)
def test_malformed_bodies(api: TestClient, content: bytes, content_type: str, status: int) -> None:
    res = api.post("/User", content=content, headers={"Content-Type": content_type})
    assert res.status_code == status
    assert res.json()["resourceType"] == "OperationOutcome"
    _nothing_written(api)


def test_wrong_resource_type_in_body(api: TestClient) -> None:
    res = api.post("/User", json={"resourceType": "Client"})
    assert res.status_code in (400, 422)
    _nothing_written(api)


def test_every_schema_error_is_reported_with_its_path(api: TestClient) -> None:
    res = api.post("/User", json={"resourceType": "User", "email": 1, "twoFactor": {"enabled": "yes"}})
    assert res.status_code == 422
    expressions = [issue["expression"][0] for issue in res.json()["issue"]]
    assert expressions == ["User.email", "User.twoFactor.enabled"]


def test_ten_megabyte_body_is_413(api: TestClient) -> None:
    huge = b'{"resourceType": "User", "data": "' + b"x" * 10_000_000 + b'"}'
    res = api.post("/User", content=huge, headers={"Content-Type": "application/json"})
    assert res.status_code == 413
    _nothing_written(api)


def test_deep_nesting_is_400(api: TestClient) -> None:
    deep = b'{"resourceType": "User", "data": ' + b'{"a": ' * 200 + b"1" + b"}" * 200 + b"}"
    res = api.post("/User", content=deep, headers={"Content-Type": "application/json"})
    assert res.status_code == 400
    yaml_deep = b"resourceType: User\ndata: " + b"[" * 5000 + b"]" * 5000
    assert api.post("/User", content=yaml_deep, headers={"Content-Type": "text/yaml"}).status_code == 400
    _nothing_written(api)


def test_billion_laughs_yaml_is_refused(api: TestClient) -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]")
    lines.append("resourceType: User")
    res = api.post("/User", content="\n".join(lines).encode(), headers={"Content-Type": "text/yaml"})
    assert res.status_code == 400
    _nothing_written(api)


def test_invalid_id_is_refused(api: TestClient) -> None:
    assert api.put("/User/" + "x" * 65, json={"resourceType": "User"}).status_code == 422
    assert api.post("/User", json={"resourceType": "User", "id": "a b"}).status_code == 422
    assert api.post("/User", json={"resourceType": "User", "id": 7}).status_code in (400, 422)
    _nothing_written(api)


def test_unknown_route_and_method(api: TestClient) -> None:
    res = api.get("/User/x/y/z/w")
    assert res.status_code == 404
    assert res.json()["resourceType"] == "OperationOutcome"
    res = api.post("/User/x")
    assert res.status_code == 405
    assert res.json()["resourceType"] == "OperationOutcome"
