from __future__ import annotations

import datetime
from typing import Any

import pytest

from fhirauth.errors import BadRequest
from fhirauth.resources.structure import MAX_DEPTH, MAX_KEYS, check_structure


def refusal(value: object, **limits: int) -> tuple[str | None, str]:
    with pytest.raises(BadRequest) as caught:
        check_structure(value, **limits)
    assert caught.value.status == 400
    [issue] = caught.value.issues
    return (issue.expression[0] if issue.expression else None), issue.diagnostics


def nested_objects(depth: int) -> dict[str, Any]:
    """`depth` objects inside each other: nested_objects(1) == {}."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_defaults() -> None:
    assert (MAX_DEPTH, MAX_KEYS) == (32, 10_000)


@pytest.mark.parametrize(
    "value",
    [
        {
            "resourceType": "User",
            "name": {"givenName": "Zoë"},
            "roles": [{"value": "admin"}, None, True, 1.5, -(2**63), 2**63 - 1],
            "data": {"a.b": "", "x$": "y", "ключ": "значение"},
        },
        [],
        "just a string",
        None,
        0,
    ],
)
def test_accepts_plain_json(value: object) -> None:
    assert check_structure(value) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"data": {"a\x00b": 1}}, ("data.a\\u0000b", "Property names must not contain NUL characters")),
        ({"$where": "sleep(1000)"}, ("$where", "Property names must not start with '$'")),
        ({"email": {"$ne": None}}, ("email.$ne", "Property names must not start with '$'")),
        ({"entry": [{"ok": 1}, {"$gt": 1}]}, ("entry[1].$gt", "Property names must not start with '$'")),
        ({"data": {"": 1}}, ("data", "Property names must not be empty")),
        ({"": 1}, (None, "Property names must not be empty")),
        ({"a\ud800": 1}, ("a\\ud800", "Property names must be valid Unicode (no lone surrogates)")),
        ({1: "a"}, (None, "Property names must be strings, not int")),
        ({"a": {None: "a"}}, ("a", "Property names must be strings, not NoneType")),
    ],
)
def test_refuses_keys(value: object, expected: tuple[str | None, str]) -> None:
    assert refusal(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"n": float("nan")}, ("n", "Numbers must be finite")),
        ({"n": [1.0, float("inf")]}, ("n[1]", "Numbers must be finite")),
        (float("-inf"), (None, "Numbers must be finite")),
        ({"n": 2**63}, ("n", "Integers must fit in 64 bits")),
        ({"n": -(2**63) - 1}, ("n", "Integers must fit in 64 bits")),
        ({"s": "a\udc00b"}, ("s", "Strings must be valid Unicode (no lone surrogates)")),
        ({"d": datetime.date(2025, 1, 1)}, ("d", "Unsupported value of type date")),
        ({"b": b"bytes"}, ("b", "Unsupported value of type bytes")),
        ({"s": {1, 2}}, ("s", "Unsupported value of type set")),
        ({"pairs": [("a", 1)]}, ("pairs[0]", "Unsupported value of type tuple")),
    ],
)
def test_refuses_values(value: object, expected: tuple[str | None, str]) -> None:
    assert refusal(value) == expected


def test_depth_32_is_accepted() -> None:
    check_structure(nested_objects(32))
    check_structure({"a": nested_objects(31)})


def test_depth_33_is_refused_at_the_deepest_object() -> None:
    assert refusal(nested_objects(33)) == (".".join(["a"] * 32), "Document nests deeper than 32 levels")


def test_arrays_count_as_levels() -> None:
    value: list[Any] = []
    for _ in range(30):
        value = [value]
    check_structure({"x": value})
    assert refusal({"x": [value]}) == ("x" + "[0]" * 31, "Document nests deeper than 32 levels")


def test_deep_nesting_of_100k_levels_is_refused_without_recursion() -> None:
    assert refusal(nested_objects(100_000)) == (".".join(["a"] * 32), "Document nests deeper than 32 levels")


def test_10000_keys_are_accepted() -> None:
    check_structure({f"k{i}": i for i in range(10_000)})
    check_structure({"list": list(range(9_999))})


def test_10001_keys_are_refused() -> None:
    assert refusal({f"k{i}": i for i in range(10_001)}) == (
        None,
        "Document has more than 10000 properties and items",
    )


def test_keys_and_items_count_across_the_document() -> None:
    assert refusal({"a": list(range(5_000)), "b": {f"k{i}": i for i in range(5_000)}}) == (
        "a",
        "Document has more than 10000 properties and items",
    )


def test_limits_can_be_chosen() -> None:
    assert refusal({"a": {"b": {}}}, max_depth=2) == ("a.b", "Document nests deeper than 2 levels")
    assert refusal([1, 2, [3, 4]], max_keys=3) == ("[2]", "Document has more than 3 properties and items")
    check_structure({"a": {"b": 1}}, max_depth=2, max_keys=2)
