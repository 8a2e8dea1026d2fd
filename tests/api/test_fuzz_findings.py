"""Inputs that once answered 500, found by fuzzing the API (tests/e2e/test_fuzz.py and probes beside
it): each now answers the 4xx OperationOutcome the document promises, on every backend."""

from __future__ import annotations

import httpx2
import pytest
from starlette.testclient import TestClient

from fhirauth.clock import ManualClock
from fhirauth.errors import BadRequest
from fhirauth.resources.service import parse_etag
from fhirauth.twofactor import totp
from tests.api.conftest import NO_AUTH
from tests.api.pages_support import PASSWORD, call, create_user, login, services

_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


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


def _users(api: TestClient) -> None:
    for index in range(3):
        body = {"resourceType": "User", "email": f"u{index}@example.org", "data": {"rank": index}}
        assert api.put(f"/User/u{index}", json=body).status_code == 201


def _too_costly(res: httpx2.Response, diagnostics: str, expression: str) -> None:
    assert res.status_code == 400, res.text
    assert res.json() == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "too-costly",
                "diagnostics": diagnostics,
                "expression": [expression],
            }
        ],
    }


_TOO_MANY_PARAMETERS = "At most 100 search parameters are allowed"
_TOO_MANY_SORT_KEYS = "At most 10 sort keys are allowed"
_TOO_MANY_VALUES = "At most 1000 search values are allowed in all"


@pytest.mark.parametrize(
    ("query", "diagnostics", "expression"),
    [
        # SQLite: "Expression tree is too large (maximum depth 1000)".
        ("&".join(f"email=a{i}" for i in range(1000)), _TOO_MANY_PARAMETERS, "email"),
        ("&".join(f"a{i}=x" for i in range(1000)), _TOO_MANY_PARAMETERS, "a100"),
        ("&".join(f"a{i}=x" for i in range(101)), _TOO_MANY_PARAMETERS, "a100"),
        # SQLite: "too many terms in ORDER BY clause"; MongoDB allows 32 sort keys.
        ("_sort=" + ",".join(f"a{i}" for i in range(2000)), _TOO_MANY_SORT_KEYS, "_sort"),
        ("_sort=" + ",".join(f"-a{i}" for i in range(11)), _TOO_MANY_SORT_KEYS, "_sort"),
        ("&".join(f"_sort=a{i}" for i in range(11)), _TOO_MANY_SORT_KEYS, "_sort"),
        ("_id=" + ",".join(f"i{i}" for i in range(1001)), _TOO_MANY_VALUES, "_id"),
        (
            "email=" + ",".join(str(i) for i in range(600)) + "&data.rank=" + ",".join(map(str, range(401))),
            _TOO_MANY_VALUES,
            "data.rank",
        ),
    ],
)
def test_a_search_too_large_for_the_backend_is_refused_with_its_limit(
    api: TestClient, query: str, diagnostics: str, expression: str
) -> None:
    _users(api)
    _too_costly(api.get(f"/User?{query}"), diagnostics, expression)


def test_a_search_at_the_limits_runs(api: TestClient) -> None:
    _users(api)
    filters = "&".join(["email=u0@example.org,u1@example.org", *["data.rank=0,1"] * 99])
    res = api.get(f"/User?{filters}&_sort=-data.rank")
    assert res.status_code == 200, res.text
    assert [e["resource"]["id"] for e in res.json()["entry"]] == ["u1", "u0"]
    sort = ",".join(["-data.rank", *(f"a{i}" for i in range(9))])
    assert [e["resource"]["id"] for e in api.get(f"/User?_sort={sort}").json()["entry"]] == ["u2", "u1", "u0"]
    ids = ",".join([*(f"i{i}" for i in range(997)), "u0", "u1", "u2"])
    assert api.get(f"/User?_id={ids}").json()["total"] == 3


def test_a_repeated_sort_key_sorts_by_its_first_mention(api: TestClient) -> None:
    _users(api)
    res = api.get("/User?_sort=-data.rank,data.rank,-data.rank,email")
    assert [e["resource"]["id"] for e in res.json()["entry"]] == ["u2", "u1", "u0"]


def test_the_limits_hold_for_conditional_creates_alone_and_in_bundles(api: TestClient) -> None:
    _users(api)
    many = "&".join(f"a{i}=x" for i in range(101))
    body = {"resourceType": "User", "email": "new@example.org"}
    created = api.post("/User", json=body, headers={"If-None-Exist": many})
    _too_costly(created, _TOO_MANY_PARAMETERS, "a100")
    entry = {"request": {"method": "POST", "url": "User", "ifNoneExist": many}, "resource": body}
    batch = api.post("/", json={"resourceType": "Bundle", "type": "batch", "entry": [entry]})
    assert batch.status_code == 200
    response = batch.json()["entry"][0]["response"]
    assert response["status"] == "400"
    assert response["outcome"]["issue"][0]["diagnostics"] == f"Bundle.entry[0]: {_TOO_MANY_PARAMETERS}"
    transaction = api.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry]})
    assert transaction.status_code == 400
    assert transaction.json()["issue"][0]["diagnostics"] == f"Bundle.entry[0]: {_TOO_MANY_PARAMETERS}"
    assert api.get("/User").json()["total"] == 3


@pytest.mark.parametrize("codes", [5, True, [1, 2], [{"digest": "x"}], "abcde-fghij", {"a": "b"}])
def test_recovery_codes_an_administrator_wrote_as_odd_data_match_nothing(
    api: TestClient, clock: ManualClock, codes: object
) -> None:
    # twoFactor.recoveryCodes is server-managed but writable (a restore writes the digests); len() of a
    # number and a digest comparison with a non-string answered 500 on the settings page, the password
    # grant and the step-up check.
    client = {"resourceType": "Client", "secret": "s", "grant_types": ["password"], "first_party": True}
    assert api.put("/Client/app", json=client).status_code == 201
    create_user(api, "bob")
    login(api, "bob@example.org")
    form = {"grant_type": "password", "username": "bob@example.org", "password": PASSWORD}
    form |= {"client_id": "app", "client_secret": "s"}
    bearer = {
        "Authorization": f"Bearer {api.post('/auth/token', data=form, headers=NO_AUTH).json()['access_token']}"
    }
    two_factor = {"enabled": True, "secretKey": _SECRET, "recoveryCodes": codes}
    body = {"resourceType": "User", "email": "bob@example.org", "twoFactor": two_factor}
    assert api.put("/User/bob", json=body).status_code == 200
    stored = call(api, services(api).storage.get, "User", "bob")
    assert stored is not None and stored.document["twoFactor"]["recoveryCodes"] == codes

    settings = api.get("/auth/two-factor")
    assert settings.status_code == 200
    assert "No recovery codes left." in settings.text
    refused = api.post("/auth/token", data={**form, "totp": "abcde-fghij"}, headers=NO_AUTH)
    assert (refused.status_code, refused.json()) == (
        400,
        {"error": "invalid_grant", "error_description": "Invalid two-factor authentication code"},
    )
    step_up = api.post("/app/auth/two-factor/verify", json={"token": "abcde-fghij"}, headers=bearer)
    assert (step_up.status_code, step_up.json()["error"]) == (422, "wrong_token")
    after = call(api, services(api).storage.get, "User", "bob")
    assert after is not None and after.document == stored.document
    code = totp.code_at(_SECRET, totp.step_at(clock().timestamp()))
    assert api.post("/auth/token", data={**form, "totp": code}, headers=NO_AUTH).status_code == 200


@pytest.mark.parametrize("key", ["a\x00b", "$where", ""])
def test_a_json_patch_adding_a_key_the_structural_guard_refuses_is_400(api: TestClient, key: str) -> None:
    # MongoDB refused the NUL key when storing the result: a 500. The patch's path is not a key of the
    # body, so the guard that reads the body never saw it.
    assert api.put("/User/p", json={"resourceType": "User", "data": {"kept": 1}}).status_code == 201
    patch = [{"op": "add", "path": f"/data/{key}", "value": 1}]
    res = api.patch("/User/p", json=patch, headers={"Content-Type": "application/json-patch+json"})
    assert res.status_code == 400, res.text
    assert res.json()["resourceType"] == "OperationOutcome"
    stored = api.get("/User/p").json()
    assert (stored["meta"]["versionId"], stored["data"]) == ("1", {"kept": 1})
