"""Inputs that once answered 500, found by fuzzing the API (tests/e2e/test_fuzz.py and probes beside
it): each now answers the 4xx OperationOutcome the document promises, on every backend."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from fhirauth.errors import BadRequest
from fhirauth.resources.service import parse_etag


def test_a_version_that_is_not_a_64_bit_number_is_not_found(api: TestClient) -> None:
    assert api.put("/User/v", json={"resourceType": "User"}).status_code == 201
    # Beyond 64 bits SQLite raised OverflowError; '²' passes str.isdigit but not int().
    for version in ("99999999999999999999", "9223372036854775808", "%C2%B2", "1" * 5000):
        res = api.get(f"/User/v/_history/{version}")
        assert res.status_code == 404, version
        assert res.json()["issue"][0]["code"] == "not-found"
    assert api.get("/User/v/_history/9223372036854775807").status_code == 404
    assert api.get("/User/v/_history/1").status_code == 200


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("tag", ['W/"99999999999999999999"', "1" * 5000])
def test_an_if_match_that_is_not_a_version_is_malformed(api: TestClient, method: str, tag: str) -> None:
    assert api.put("/User/m", json={"resourceType": "User"}).status_code == 201
    res = api.request(method, "/User/m", json={"resourceType": "User"}, headers={"If-Match": tag})
    assert res.status_code == 400
    assert res.json()["issue"][0]["expression"] == ["If-Match"]
    assert api.get("/User/m").json()["meta"]["versionId"] == "1"


@pytest.mark.parametrize("tag", ["\xb2", 'W/"\xb9"', "\u0663"])
def test_digits_other_than_ascii_are_not_a_version(tag: str) -> None:
    # uvicorn decodes the header byte 0xB2 as '²' (the test client cannot send it raw): isdigit() but not int().
    with pytest.raises(BadRequest, match="Malformed version"):
        parse_etag(tag)


@pytest.mark.parametrize(
    ("request_", "expression"),
    [
        ({"method": "GET", "url": "http://[x/User"}, "Bundle.entry[0].request.url"),
        ({"method": "GET", "url": "?x=1"}, "Bundle.entry[0].request.url"),
        ({"method": "PUT", "url": "User/b", "ifMatch": 1}, "Bundle.entry[0].request.ifMatch"),
        (
            {"method": "POST", "url": "User", "ifNoneExist": ["email=a"]},
            "Bundle.entry[0].request.ifNoneExist",
        ),
    ],
)
@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_malformed_bundle_entry_requests_are_refused(
    api: TestClient, request_: dict[str, object], expression: str, kind: str
) -> None:
    # url: urlsplit raised ValueError, or no segment was left to index; ifMatch/ifNoneExist: str methods on an int.
    entry = {"request": request_, "resource": {"resourceType": "User"}}
    res = api.post("/", json={"resourceType": "Bundle", "type": kind, "entry": [entry]})
    if kind == "transaction":
        assert res.status_code == 400
        outcome = res.json()
    else:
        assert res.status_code == 200
        response = res.json()["entry"][0]["response"]
        assert response["status"] == "400"
        outcome = response["outcome"]
    assert outcome["issue"][0]["expression"] == [expression]
    assert api.get("/User").json()["total"] == 0


def test_integers_beyond_32_bits_render_as_yaml(api: TestClient) -> None:
    # MongoDB handed them back as bson Int64, which YAML's SafeDumper refused: a 500.
    body = {"resourceType": "User", "data": {"big": 2**40, "max": 2**63 - 1, "small": -(2**31) - 1}}
    assert api.put("/User/y", json=body).status_code == 201
    res = api.get("/User/y", params={"_format": "yaml"})
    assert res.status_code == 200
    assert "big: 1099511627776\n" in res.text
    assert "max: 9223372036854775807\n" in res.text
    assert "small: -2147483649\n" in res.text
    found = api.get("/User", params={"_format": "yaml", "data.big": "1099511627776"})
    assert found.status_code == 200
    assert "total: 1\n" in found.text
