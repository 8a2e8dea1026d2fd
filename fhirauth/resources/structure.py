"""The structural guard every parsed request body, and every document planned for storage, passes.

It refuses what would turn into a 500 further down (MongoDB refuses NUL keys and integers beyond 64
bits; orjson cannot encode lone surrogates or NaN) and bounds the work a body can cause. It walks
the document with an explicit stack, so no input nests deep enough to exhaust Python's.

Property names starting with `$` are refused except where a `DollarKeys` rule allows them: a
resource's schema marks with `x-dollar-keys` the positions that hold a language whose keywords start
with `$` (an AccessPolicy's matcho pattern and JSON Schema); ResourceService judges every document
it plans against its type's positions, so a request body defers to that judgement.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

from fhirauth.errors import BadRequest
from fhirauth.resources.paths import render_path

MAX_DEPTH = 32
MAX_KEYS = 10_000
# The schema keyword that marks where `$` property names may stand: the object it annotates and
# everything inside it.
DOLLAR_KEYS = "x-dollar-keys"

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

# A path as a linked list (parent, segment): pushing a child costs O(1) however deep it sits.
_Path: TypeAlias = "tuple[_Path, str | int] | None"
# Whether an object at this path may hold property names starting with `$`.
DollarKeys = Callable[[Sequence[str | int]], bool]


def nowhere(parent: Sequence[str | int]) -> bool:
    return False


def when_planned(parent: Sequence[str | int]) -> bool:
    """For a resource or a patch: ResourceService judges the document it plans, by its type."""
    return True


def in_bundle_resources(parent: Sequence[str | int]) -> bool:
    """For a Bundle: in its entries' resources, judged as each is planned; nowhere else."""
    return (
        len(parent) >= 3 and parent[0] == "entry" and isinstance(parent[1], int) and parent[2] == "resource"
    )


def schema_positions(schema: Mapping[str, Any]) -> DollarKeys:
    """Where the schema marks `x-dollar-keys`, following `properties`, `additionalProperties`, `items`
    and local `$ref`s to `$defs`."""
    definitions = schema.get("$defs", {})

    def meanings(node: Any) -> list[Mapping[str, Any]]:
        # The subschema and the definitions it refers to (a bounded chain: schemas are ours).
        found: list[Mapping[str, Any]] = []
        while isinstance(node, Mapping) and len(found) < 8:
            found.append(node)
            ref = node.get("$ref")
            if not (isinstance(ref, str) and ref.startswith("#/$defs/")):
                break
            node = definitions.get(ref.removeprefix("#/$defs/"))
        return found

    def marked(node: Any) -> bool:
        return any(meaning.get(DOLLAR_KEYS) is True for meaning in meanings(node))

    def child(node: Any, segment: str | int) -> Any:
        for meaning in meanings(node):
            if isinstance(segment, int):
                if "items" in meaning:
                    return meaning["items"]
            elif segment in meaning.get("properties", {}):
                return meaning["properties"][segment]
            elif isinstance(meaning.get("additionalProperties"), Mapping):
                return meaning["additionalProperties"]
        return None

    def allows(parent: Sequence[str | int]) -> bool:
        node: Any = schema
        for segment in parent:
            if marked(node):
                return True
            node = child(node, segment)
        return marked(node)

    return allows


def _segments(path: _Path) -> list[str | int]:
    segments: list[str | int] = []
    while path is not None:
        path, segment = path
        segments.append(segment)
    segments.reverse()
    return segments


def _refuse(message: str, path: _Path) -> BadRequest:
    return BadRequest(message, render_path(_segments(path)) or None)


def _valid_unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_key(key: object, parent: _Path, dollar_keys: DollarKeys) -> None:
    if not isinstance(key, str):
        raise _refuse(f"Property names must be strings, not {type(key).__name__}", parent)
    if not key:
        raise _refuse("Property names must not be empty", parent)
    if "\x00" in key:
        raise _refuse("Property names must not contain NUL characters", (parent, key))
    if key.startswith("$") and not dollar_keys(_segments(parent)):
        raise _refuse("Property names must not start with '$'", (parent, key))
    if not _valid_unicode(key):
        raise _refuse("Property names must be valid Unicode (no lone surrogates)", (parent, key))


def _check_scalar(value: object, path: _Path) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        if not _valid_unicode(value):
            raise _refuse("Strings must be valid Unicode (no lone surrogates)", path)
    elif isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise _refuse("Integers must fit in 64 bits", path)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _refuse("Numbers must be finite", path)
    else:
        raise _refuse(f"Unsupported value of type {type(value).__name__}", path)


def check_structure(
    value: object,
    *,
    max_depth: int = MAX_DEPTH,
    max_keys: int = MAX_KEYS,
    dollar_keys: DollarKeys = nowhere,
) -> None:
    """Raise BadRequest, naming the offending path, unless `value` is plain, bounded JSON."""
    if not isinstance(value, dict | list):
        _check_scalar(value, None)
        return
    total = 0
    stack: list[tuple[dict[Any, Any] | list[Any], int, _Path]] = [(value, 1, None)]
    while stack:
        node, depth, path = stack.pop()
        if depth > max_depth:
            raise _refuse(f"Document nests deeper than {max_depth} levels", path)
        total += len(node)
        if total > max_keys:
            raise _refuse(f"Document has more than {max_keys} properties and items", path)
        is_object = isinstance(node, dict)
        # Exact types first: this runs on every body and every planned write, and plain ASCII
        # names and str, dict, list, bool or None values need no further look.
        for segment, child in node.items() if is_object else enumerate(node):  # type: ignore[union-attr]  # `is_object` says which of the two `node` is
            if is_object and (
                type(segment) is not str
                or not segment
                or segment[0] == "$"
                or "\x00" in segment
                or not segment.isascii()
            ):
                _check_key(segment, path, dollar_keys)
            kind = type(child)
            if kind is str:
                if not child.isascii() and not _valid_unicode(child):
                    raise _refuse("Strings must be valid Unicode (no lone surrogates)", (path, segment))
            elif kind is dict or kind is list or isinstance(child, dict | list):
                stack.append((child, depth + 1, (path, segment)))
            elif kind is not bool and child is not None:
                _check_scalar(child, (path, segment))
