"""Aidbox's matcho: a pattern matched against a document (the policy request object).

What fhirauth supports, each compiled once into a closure:

* An object matches an object holding at least its keys, each value matching recursively (subset;
  extra keys in the subject are fine). A missing key reads as null.
* An array matches an array at least as long, element by element in order (`[1, 2]` matches
  `[1, 2, 3]`, not `[2, 1]`), each element being a pattern itself.
* Strings, numbers, booleans and null match by equality; types are not mixed (`true` is not `1`,
  `"1"` is not `1`; `1` is `1.0`).
* A string starting with `#` is a regular expression searched in a string subject (`"#^/User"`).
  `$` means the end of the text, as in JSON Schema (it never matches before a final newline).
* `"present?"` matches anything but null, `"nil?"` only null (or a missing key), `"not-blank?"` a
  string with a non-space character.
* A string starting with `.` is a path into the whole request object: `{params: {id: ".user.id"}}`
  matches when params.id equals user.id. The referenced value must be present: null never equals
  null this way, so an anonymous request cannot match "my own" rules.
* An object with one operator key: `{$enum: [v, ...]}` (equal to one of the scalars),
  `{$one-of: [pattern, ...]}` (matches one of the patterns), `{$contains: pattern}` (an array with
  at least one element matching). Any other `$` key, or an operator beside other keys, is an error:
  a policy author's typo must not silently change what the policy allows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from fhirauth.resources.schemas import _ecma_regex

# (subject, request object) → match
Matcher = Callable[[Any, Any], bool]

_SCALARS = (str, int, float, bool, type(None))


class MatchoError(ValueError):
    """The pattern cannot be compiled."""


def compile_matcho(pattern: Any) -> Callable[[Any], bool]:
    """A predicate over a request object; raises MatchoError for an invalid pattern."""
    try:
        matcher = _compile(pattern)
    except RecursionError:
        raise MatchoError("pattern nested too deeply") from None
    return lambda request: matcher(request, request)


def same(value: Any, expected: Any) -> bool:
    """JSON equality without Python's `True == 1`."""
    if isinstance(value, bool) or isinstance(expected, bool):
        return isinstance(value, bool) and isinstance(expected, bool) and value is expected
    if isinstance(expected, int | float) and isinstance(value, int | float):
        return value == expected
    return type(value) is type(expected) and bool(value == expected)


def _compile(pattern: Any) -> Matcher:
    if isinstance(pattern, dict):
        return _compile_object(pattern)
    if isinstance(pattern, list):
        return _compile_array(pattern)
    if isinstance(pattern, str):
        return _compile_string(pattern)
    if isinstance(pattern, _SCALARS):
        return lambda value, root: same(value, pattern)
    raise MatchoError(f"unsupported pattern {pattern!r}")


def _compile_object(pattern: dict[str, Any]) -> Matcher:
    operators = [key for key in pattern if key.startswith("$")]
    if operators:
        if len(pattern) != 1:
            raise MatchoError(f"{operators[0]} must be the only key of its object")
        return _compile_operator(operators[0], pattern[operators[0]])
    fields = [(key, _compile(value)) for key, value in pattern.items()]

    def match_object(value: Any, root: Any) -> bool:
        return isinstance(value, dict) and all(match(value.get(key), root) for key, match in fields)

    return match_object


def _compile_array(pattern: list[Any]) -> Matcher:
    items = [_compile(item) for item in pattern]

    def match_array(value: Any, root: Any) -> bool:
        return (
            isinstance(value, list)
            and len(value) >= len(items)
            and all(match(item, root) for match, item in zip(items, value, strict=False))
        )

    return match_array


def _compile_operator(operator: str, argument: Any) -> Matcher:
    if operator == "$enum":
        if not isinstance(argument, list) or not all(isinstance(item, _SCALARS) for item in argument):
            raise MatchoError("$enum takes an array of strings, numbers or booleans")
        choices = tuple(argument)
        return lambda value, root: any(same(value, choice) for choice in choices)
    if operator == "$one-of":
        if not isinstance(argument, list) or not argument:
            raise MatchoError("$one-of takes a non-empty array of patterns")
        options = [_compile(option) for option in argument]
        return lambda value, root: any(match(value, root) for match in options)
    if operator == "$contains":
        element = _compile(argument)
        return lambda value, root: isinstance(value, list) and any(element(item, root) for item in value)
    raise MatchoError(f"unknown operator {operator}")


def _compile_string(pattern: str) -> Matcher:
    if pattern == "present?":
        return lambda value, root: value is not None
    if pattern == "nil?":
        return lambda value, root: value is None
    if pattern == "not-blank?":
        return lambda value, root: isinstance(value, str) and bool(value.strip())
    if pattern.startswith("#"):
        try:
            regex = _ecma_regex(pattern[1:])
        except re.error as error:
            raise MatchoError(f"invalid regular expression {pattern[1:]!r}: {error}") from None
        return lambda value, root: isinstance(value, str) and regex.search(value) is not None
    if pattern.startswith("."):
        path = pattern[1:].split(".")
        if not all(path):
            raise MatchoError(f"invalid path {pattern!r}")

        def match_reference(value: Any, root: Any) -> bool:
            referenced = _at(root, path)
            return referenced is not None and same(value, referenced)

        return match_reference
    return lambda value, root: isinstance(value, str) and value == pattern


def _at(document: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document
