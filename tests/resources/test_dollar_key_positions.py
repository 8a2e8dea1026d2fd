"""Where `$` property names may stand: the positions a schema marks with `x-dollar-keys`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from fhirauth.errors import BadRequest
from fhirauth.resources.structure import check_structure, in_bundle_resources, schema_positions

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
POLICY = schema_positions(json.loads((SCHEMAS / "AccessPolicy.json").read_text()))
USER = schema_positions(json.loads((SCHEMAS / "User.json").read_text()))


@pytest.mark.parametrize(
    "parent",
    [
        ["matcho"],
        ["matcho", "params", "id"],
        ["matcho", "body", "roles", 0],
        ["and", 0, "matcho"],
        ["or", 1, "and", 0, "or", 2, "matcho", "uri"],
        ["schema"],
        ["schema", "$defs", "x", "properties"],
        ["and", 0, "schema", "items"],
    ],
)
def test_an_access_policy_allows_them_in_its_patterns_and_schemas(parent: list[str | int]) -> None:
    assert POLICY(parent)


@pytest.mark.parametrize(
    "parent",
    [[], ["link", 0], ["and", 0], ["or", 0, "and", 1], ["meta"], ["description"], ["unknown"], ["and", "x"]],
)
def test_an_access_policy_refuses_them_elsewhere(parent: list[str | int]) -> None:
    assert not POLICY(parent)


@pytest.mark.parametrize("parent", [[], ["data"], ["data", "matcho"], ["twoFactor"], ["roles", 0]])
def test_a_user_refuses_them_everywhere(parent: list[str | int]) -> None:
    assert not USER(parent)


def test_a_bundle_defers_them_to_its_entries_resources_only() -> None:
    assert in_bundle_resources(["entry", 0, "resource"])
    assert in_bundle_resources(["entry", 3, "resource", "matcho"])
    assert not in_bundle_resources([])
    assert not in_bundle_resources(["entry", 0])
    assert not in_bundle_resources(["entry", 0, "request"])
    assert not in_bundle_resources(["entry", "0", "resource"])


def test_the_guard_asks_the_rule_with_the_path_of_the_object_holding_the_key() -> None:
    asked: list[list[str | int]] = []

    def rule(parent: Sequence[str | int]) -> bool:
        asked.append(list(parent))
        return parent[:1] == ["ok"]

    check_structure({"ok": {"$a": {"$b": [{"$c": 1}]}}}, dollar_keys=rule)
    assert asked == [["ok"], ["ok", "$a"], ["ok", "$a", "$b", 0]]
    with pytest.raises(BadRequest) as caught:
        check_structure({"ok": 1, "no": {"$a": 1}}, dollar_keys=rule)
    assert caught.value.issues[0].expression == ("no.$a",)
    # Allowed or not, a `$` name is still held to every other rule.
    with pytest.raises(BadRequest, match="NUL"):
        check_structure({"ok": {"$a\x00": 1}}, dollar_keys=rule)
