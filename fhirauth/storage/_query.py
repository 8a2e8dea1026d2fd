"""What a query (or a counter step) may contain, checked once for every backend.

Resource types and dotted paths end up inside SQL text and Mongo field names (an expression index can
only match a literal path), so they are held to a strict shape instead of being escaped.
"""

from __future__ import annotations

import re

from fhirauth.storage.base import Query

_RESOURCE_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*")
_SCALARS = (str, int, float)  # bool is an int


def is_resource_type(name: str) -> bool:
    # fullmatch, not a `$` anchor: `$` also matches before a trailing newline.
    return _RESOURCE_TYPE.fullmatch(name) is not None


def check_resource_type(resource_type: str) -> str:
    if not is_resource_type(resource_type):
        raise ValueError(f"Invalid resource type {resource_type!r}")
    return resource_type


def check_path(path: str) -> str:
    if not _PATH.fullmatch(path):
        raise ValueError(f"Invalid search path {path!r}")
    return path


def check_query(query: Query) -> None:
    for condition in query.filters:
        check_path(condition.path)
    for path, _descending in query.sort:
        check_path(path)
    check_values(query)


def check_values(query: Query) -> None:
    """What `check_query` checks besides the paths (for a backend that checks paths once per shape)."""
    for condition in query.filters:
        for value in condition.values:
            if not isinstance(value, _SCALARS):
                raise ValueError(f"Search value for {condition.path!r} must be a string, number or boolean")
    if query.offset < 0 or query.limit < 0:
        raise ValueError("Search offset and limit must not be negative")


def check_amount(amount: int) -> None:
    """A counter only moves forward: a zero or negative step would hand out counts twice."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
        raise ValueError(f"a counter's amount must be a positive integer, not {amount!r}")
