"""Properties over generated search parameters and patch documents, on every backend.

Whatever a client sends: never a 5xx, every refusal an OperationOutcome, and a refused write leaves
the stored resource exactly as it was. The strategies lean on the classes of input that once answered
500: hundreds of parameters or sort keys, NUL and control characters, `$`-prefixed and empty names,
keys deeper than the structural guard allows. A fixed seed and modest example counts keep CI time
bounded (about 10 s for both backends); FHIRAUTH_PROPERTY_EXAMPLES raises the count for a deep run.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

EXAMPLES = int(os.environ.get("FHIRAUTH_PROPERTY_EXAMPLES", "60"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    # The app (one per backend) is shared by the examples of a test, as a client's requests would be.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

Params = list[tuple[str, str]]

# Text with NUL, the other control characters and a little beyond ASCII; no surrogates (a query
# string carries UTF-8).
_ODD_TEXT = st.text(st.characters(max_codepoint=0x17F, exclude_categories=["Cs"]), max_size=12)
_PATHS = ["email", "userName", "id", "data.rank", "data.tags", "name.givenName", "data.a-b", "a1"]
_CONTROLS = ["_count", "_page", "page", "_sort", "_elements", "_id", "_format", "_total", "_summary"]
_ODD_NAMES = [
    "$where", "data.$gt", "a\x00b", "\x00", "a..b", ".a", "a.", "", "-a", "a b", "é",
    "password", "twoFactor.secretKey", "twoFactor.recoveryCodes", "data.\x1f", "a" * 201,
]  # fmt: skip
_ODD_VALUES = ["", "0", "-1", "1001", "100001", "99999999999999999999", "true", ",", ",,,", "a,b", "\x00"]


def _many(n: int, key: str = "a") -> str:
    return ",".join(f"{key}{i}" for i in range(n))


_names = st.one_of(
    st.sampled_from(_PATHS), st.sampled_from(_CONTROLS), st.sampled_from(_ODD_NAMES), _ODD_TEXT
)
_values = st.one_of(
    st.sampled_from(_ODD_VALUES),
    _ODD_TEXT,
    st.integers(1, 40).map(lambda n: _many(n, "-d")),
    st.integers(990, 1010).map(_many),
)
_params: st.SearchStrategy[Params] = st.one_of(
    st.lists(st.tuples(_names, _values), max_size=10),
    st.integers(95, 130).map(lambda n: [(f"a{i}", "x") for i in range(n)]),
    st.integers(95, 130).map(lambda n: [("email", f"v{i}") for i in range(n)]),
    st.integers(8, 2100).map(lambda n: [("_sort", _many(n))]),
    st.integers(8, 14).map(lambda n: [("_sort", f"a{i}") for i in range(n)]),
)


@pytest.fixture
def users(api: TestClient) -> TestClient:
    for index in range(3):
        body = {"resourceType": "User", "email": f"u{index}@example.org", "data": {"rank": index}}
        assert api.put(f"/User/u{index}", json=body).status_code == 201
    return api


def _refused_or(response: httpx2.Response, resource_type: str) -> dict[str, Any]:
    assert response.status_code < 500, response.text
    body: dict[str, Any] = response.json()
    if response.status_code >= 400:
        assert body["resourceType"] == "OperationOutcome", body
        assert body["issue"], body
    else:
        assert body["resourceType"] == resource_type, body
    return body


# The inputs that once answered 500 stay covered whatever the generator draws.
_KNOWN_PARAMS: list[Params] = [
    [("email", f"v{i}") for i in range(1000)],
    [(f"a{i}", "x") for i in range(1000)],
    [("_sort", _many(2000))],
    [("_id", _many(1001))],
    [("a\x00b", "x"), ("$where", "1"), ("email", "\x00\x01\x7f")],
]


def _with_known_params(test: Any) -> Any:
    for params in _KNOWN_PARAMS:
        test = example(params=params)(test)
    return test


@PROPERTY
@given(params=_params)
@_with_known_params
def test_any_search_answers_a_bundle_or_an_outcome(users: TestClient, params: Params) -> None:
    _refused_or(users.get("/User", params=params), "Bundle")


@PROPERTY
@given(params=_params)
@_with_known_params
def test_any_conditional_create_in_a_transaction_creates_one_or_nothing(
    users: TestClient, params: Params
) -> None:
    # A Bundle entry's ifNoneExist carries what a header cannot: control characters.
    before = users.get("/User", params={"_count": "0"}).json()["total"]
    entry = {
        "request": {"method": "POST", "url": "User", "ifNoneExist": urlencode(params)},
        "resource": {"resourceType": "User"},
    }
    res = users.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry]})
    body = _refused_or(res, "Bundle")
    after = users.get("/User", params={"_count": "0"}).json()["total"]
    if res.status_code >= 400:
        assert after == before
    else:
        status = body["entry"][0]["response"]["status"]
        assert (status, after) in (("201 Created", before + 1), ("200 OK", before)), body


# The property names MongoDB or the JSON encoder refuse, and the JSON Pointer escapes.
_REFUSED_KEYS = ["", "\x00", "a\x00b", "$where", "$", "\ud800"]
_KEYS = st.one_of(st.sampled_from([*_REFUSED_KEYS, "a", "~", "a~1b", "0", "-"]), _ODD_TEXT)
_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        _ODD_TEXT,
    ),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_KEYS, children, max_size=3),
    max_leaves=8,
)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    return value


def _escaped(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


_segments = st.lists(_KEYS.map(_escaped), max_size=4)
_pointers = st.one_of(
    _segments.map(lambda s: "/data/" + "/".join(s) if s else "/data"),
    st.sampled_from(["", "/", "/id", "/resourceType", "/meta/versionId", "/password", "/twoFactor"]),
    _ODD_TEXT,
)
_operations = st.fixed_dictionaries(
    {
        "op": st.sampled_from(["add", "replace", "remove", "test", "move", "copy", "nope"]),
        "path": _pointers,
    },
    optional={"value": _json, "from": _pointers},
)


def _deep_patch_of(depth: int) -> list[dict[str, Any]]:
    """Two additions, each within the guard's depth, that nest twice as deep together."""
    return [
        {"op": "add", "path": "/data/d", "value": _nested(depth)},
        {"op": "add", "path": "/data/d" + "/k" * depth, "value": _nested(depth)},
    ]


_deep_patch = st.integers(10, 30).map(_deep_patch_of)
_additions = st.lists(
    st.fixed_dictionaries(
        {
            "op": st.sampled_from(["add", "replace"]),
            "path": st.one_of(st.sampled_from(_REFUSED_KEYS), _KEYS).map(lambda k: "/data/" + _escaped(k)),
            "value": _json,
        }
    ),
    min_size=1,
    max_size=2,
)
_patches = st.one_of(
    st.tuples(st.just("application/json-patch+json"), _additions),
    st.tuples(st.just("application/json-patch+json"), st.lists(_operations, min_size=1, max_size=3)),
    st.tuples(st.just("application/json-patch+json"), _deep_patch),
    st.tuples(
        st.just("application/merge-patch+json"),
        st.fixed_dictionaries({}, optional={"data": st.dictionaries(_KEYS, _json, max_size=3), "x": _json}),
    ),
    st.tuples(
        st.just("application/merge-patch+json"), st.integers(25, 40).map(lambda n: {"data": _nested(n)})
    ),
)


@PROPERTY
@given(patch=_patches)
@example(patch=("application/json-patch+json", [{"op": "add", "path": "/data/a\x00b", "value": 1}]))
@example(patch=("application/json-patch+json", [{"op": "add", "path": "/data/$where", "value": 1}]))
@example(patch=("application/json-patch+json", [{"op": "add", "path": "/data/", "value": 1}]))
@example(patch=("application/json-patch+json", [{"op": "add", "path": "/data/\ud800", "value": 1}]))
@example(patch=("application/json-patch+json", _deep_patch_of(30)))
@example(patch=("application/merge-patch+json", {"data": _nested(40)}))
def test_any_patch_is_applied_whole_or_leaves_the_resource_as_it_was(
    users: TestClient, patch: tuple[str, Any]
) -> None:
    media_type, document = patch
    before = users.get("/User/u0").json()
    # ensure_ascii: a lone surrogate travels as its \u escape, as a client's JSON encoder would send it.
    content = json.dumps(document, ensure_ascii=True).encode()
    res = users.patch("/User/u0", content=content, headers={"Content-Type": media_type})
    patched = _refused_or(res, "User")
    after = users.get("/User/u0").json()
    if res.status_code >= 400:
        assert after == before
    else:
        assert after == patched
        assert int(after["meta"]["versionId"]) == int(before["meta"]["versionId"]) + 1
