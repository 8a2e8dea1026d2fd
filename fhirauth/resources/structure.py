"""The structural guard every parsed request body passes before anything else looks at it.

It refuses what would turn into a 500 further down (MongoDB refuses NUL and `$` keys and integers
beyond 64 bits; orjson cannot encode lone surrogates or NaN) and bounds the work a body can cause.
It walks the document with an explicit stack, so no input nests deep enough to exhaust Python's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, TypeAlias

from fhirauth.errors import BadRequest
from fhirauth.resources.paths import render_path

MAX_DEPTH = 32
MAX_KEYS = 10_000

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

# A path as a linked list (parent, segment): pushing a child costs O(1) however deep it sits.
_Path: TypeAlias = "tuple[_Path, str | int] | None"


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


def _check_key(key: object, parent: _Path) -> str:
    if not isinstance(key, str):
        raise _refuse(f"Property names must be strings, not {type(key).__name__}", parent)
    if not key:
        raise _refuse("Property names must not be empty", parent)
    if "\x00" in key:
        raise _refuse("Property names must not contain NUL characters", (parent, key))
    if key.startswith("$"):
        raise _refuse("Property names must not start with '$'", (parent, key))
    if not _valid_unicode(key):
        raise _refuse("Property names must be valid Unicode (no lone surrogates)", (parent, key))
    return key


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


def check_structure(value: object, *, max_depth: int = MAX_DEPTH, max_keys: int = MAX_KEYS) -> None:
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
        children: Iterable[tuple[str | int, object]] = (
            ((_check_key(key, path), child) for key, child in node.items())
            if isinstance(node, dict)
            else enumerate(node)
        )
        for segment, child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1, (path, segment)))
            else:
                _check_scalar(child, (path, segment))
