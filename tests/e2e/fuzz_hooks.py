"""Schemathesis hooks for tests/e2e/test_fuzz.py, loaded by the schemathesis process (not by pytest)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis.internal import lambda_sources
from schemathesis.auths import AuthContext, set_on_case

# Created by tests/e2e/test_fuzz.py with a `data` object, so that patches below it reach storage.
PATCH_TARGET = "fuzz-patch"


# The server echoes the legacy FHIR JSON type it was sent; it is JSON, so its bodies are validated too.
@schemathesis.deserializer("application/json+fhir")
def fhir_json(ctx: Any, response: Any) -> Any:
    return json.loads(response.content)


_describe_lambda: Callable[[Any], str] = lambda_sources.lambda_description


def _lambda_description(function: Any) -> str:
    """Hypothesis parses a module's source to name a lambda. On CPython 3.11 (seen on 3.11.7)
    `ast.parse` deep in a recursive draw (a recursive body schema) can raise "SystemError: AST constructor
    recursion depth mismatch", which Hypothesis reports as a flaky error of the run. The name is only
    for display."""
    try:
        return _describe_lambda(function)
    except SystemError:
        return "lambda: <unknown>"


lambda_sources.lambda_description = _lambda_description


def _many(n: int) -> str:
    return ",".join(f"a{i}" for i in range(n))


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    return value


# The schema describes filters and patch paths only as strings, so the generator alone rarely sends
# what once answered 500. These go out as explicit examples, once per run, whatever it draws.

# Searches past the parser's bounds and around them, and names and values no backend takes as they are.
_ODD_SEARCHES: list[dict[str, Any]] = [
    {f"a{i}": "x" for i in range(1000)},
    {f"a{i}": "x" for i in range(101)},
    {"email": [f"v{i}" for i in range(1000)]},
    {"_sort": _many(2000)},
    {"_sort": _many(11)},
    {"_sort": _many(10)},
    {"_id": _many(1001)},
    {"a\x00b": "x", "$where": "1", "data.$gt": "", "": "x"},
    {"email": "\x00\x01\x1f\x7f", "data.rank": "99999999999999999999"},
]

# JSON Patches whose result holds keys MongoDB refuses or nests past the structural guard: the patch
# body itself passes the guard (the keys are inside its `path` strings). Each first sets `data`,
# which a generated PUT of the target may have dropped.
_ODD_PATCHES: list[list[dict[str, Any]]] = [
    [{"op": "add", "path": "/data", "value": {}}, *ops]
    for ops in (
        [{"op": "add", "path": "/data/a\x00b", "value": 1}],
        [{"op": "add", "path": "/data/$where", "value": 1}],
        [{"op": "add", "path": "/data/", "value": 1}],
        [
            {"op": "add", "path": "/data/d", "value": _nested(20)},
            {"op": "add", "path": "/data/d" + "/k" * 20, "value": _nested(20)},
        ],
    )
]


def _authenticated(case: Any) -> Any:
    # Generated cases get the configured credentials as they are drawn; examples added here do not.
    set_on_case(case, AuthContext(operation=case.operation, app=case.operation.app), None)
    return case


@schemathesis.hook("before_add_examples").apply_to(operation_id_regex="^search")
def odd_searches(ctx: Any, examples: list[Any]) -> None:
    examples.extend(_authenticated(ctx.operation.Case(query=query)) for query in _ODD_SEARCHES)


@schemathesis.hook("before_add_examples").apply_to(operation_id="patchUser")
def odd_patches(ctx: Any, examples: list[Any]) -> None:
    examples.extend(
        _authenticated(
            ctx.operation.Case(
                path_parameters={"id": PATCH_TARGET}, body=patch, media_type="application/json-patch+json"
            )
        )
        for patch in _ODD_PATCHES
    )


@schemathesis.hook("filter_path_parameters").apply_to(operation_id="deleteUser")
def spare_the_patch_target(ctx: Any, path_parameters: dict[str, Any] | None) -> bool:
    return (path_parameters or {}).get("id") != PATCH_TARGET
