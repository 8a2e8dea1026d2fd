"""Schemathesis hooks for tests/e2e/test_fuzz.py, loaded by the schemathesis process (not by pytest)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis.internal import lambda_sources


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
