"""The shapes of the MongoDB queries a test run issues, and whether an index serves each.

As a pytest plugin (`-p support.mongo_queries`, with FHIRAUTH_TEST_MONGO_QUERY_LOG naming a file), it
listens to every command of every pymongo client the run creates (pymongo's command monitoring) and
writes the distinct shapes to that file at the end: collection, the fields the filter tests (values
left out), the sort. `unserved` judges a shape against a collection's indexes with MongoDB's rule: a
query can use an index whose first field it tests by equality, `$in` or a range, or whose first field
it sorts by; an `$or` can only if every branch can.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import pytest
from pymongo import monitoring

LOG_VARIABLE = "FHIRAUTH_TEST_MONGO_QUERY_LOG"

# Tested by almost every query, and true for almost every row: no index on it would help.
_NOT_SELECTIVE = {"_deleted"}
# A filter is reduced to the fields it tests; `$or` keeps its branches, as each must be served.
Filter = tuple[tuple[str, ...], tuple["Filter", ...]]


@dataclass(frozen=True, order=True)
class Shape:
    command: str
    collection: str
    fields: tuple[str, ...]
    alternatives: tuple[Filter, ...]
    sort: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "collection": self.collection,
            "fields": list(self.fields),
            "alternatives": _filters_to_json(self.alternatives),
            "sort": list(self.sort),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Shape:
        return cls(
            data["command"],
            data["collection"],
            tuple(data["fields"]),
            _filters_from_json(data["alternatives"]),
            tuple(data["sort"]),
        )


def _filters_to_json(filters: tuple[Filter, ...]) -> list[Any]:
    return [[list(fields), _filters_to_json(alternatives)] for fields, alternatives in filters]


def _filters_from_json(data: list[Any]) -> tuple[Filter, ...]:
    return tuple((tuple(fields), _filters_from_json(alternatives)) for fields, alternatives in data)


def reduce_filter(query: Mapping[str, Any]) -> Filter:
    """The fields a filter tests at its top level (through `$and`), and its `$or` branches."""
    fields: set[str] = set()
    alternatives: list[Filter] = []
    for key, value in query.items():
        if key == "$and":
            for part in value:
                part_fields, part_alternatives = reduce_filter(part)
                fields.update(part_fields)
                alternatives.extend(part_alternatives)
        elif key == "$or":
            alternatives.append(((), tuple(sorted({reduce_filter(branch) for branch in value}))))
        elif not key.startswith("$") and not _negative(value):
            fields.add(key)
    return tuple(sorted(fields)), tuple(alternatives)


def _negative(value: Any) -> bool:
    # `$ne`, `$nin` and `$exists: false` cannot be answered from an index's entries for the value.
    return isinstance(value, Mapping) and any(
        operator in ("$ne", "$nin", "$not") or (operator == "$exists" and not operand)
        for operator, operand in value.items()
    )


def shapes_of(command_name: str, command: Mapping[str, Any]) -> list[Shape]:
    """The query shapes one command carries (an update or delete command may carry several)."""
    collection = command.get(command_name)
    if not isinstance(collection, str):
        return []
    statements: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = []
    if command_name == "find":
        statements.append((command.get("filter", {}), command.get("sort", {})))
    elif command_name == "findAndModify":
        statements.append((command.get("query", {}), command.get("sort", {})))
    elif command_name in ("count", "distinct"):
        statements.append((command.get("query", {}), {}))
    elif command_name == "update":
        statements.extend((update["q"], {}) for update in command.get("updates", []))
    elif command_name == "delete":
        statements.extend((delete["q"], {}) for delete in command.get("deletes", []))
    elif command_name == "aggregate":
        pipeline: list[Mapping[str, Any]] = command.get("pipeline", [])
        match = pipeline[0].get("$match", {}) if pipeline else {}
        ordering: Mapping[str, Any] = next((stage["$sort"] for stage in pipeline if "$sort" in stage), {})
        statements.append((match, ordering))
    shapes = []
    for query, sort in statements:
        fields, alternatives = reduce_filter(query)
        shapes.append(Shape(command_name, collection, fields, alternatives, tuple(sort)))
    return shapes


def _usable(fields: Iterable[str], first_fields: set[str]) -> bool:
    return any(field in first_fields for field in fields)


def _filter_served(query: Filter, first_fields: set[str]) -> bool:
    fields, alternatives = query
    if _usable(fields, first_fields):
        return True
    # An `$or` beside the plain conditions: served if every one of its branches is.
    return any(
        all(_filter_served(branch, first_fields) for branch in branches) for _, branches in alternatives
    )


def unserved(shape: Shape, indexes: Sequence[Sequence[str]]) -> bool:
    """Whether no index of the collection (each given as its key fields, in order) serves `shape`.

    A filter that tests no field but `_deleted` (false on almost every row) is a listing: served when
    an index gives its sort order, as a page of it then reads no more than the page. A filter on an
    unindexed field is not served by sorting on an index: that walks every entry of the index.
    """
    first_fields = {keys[0] for keys in indexes if keys}
    if _filter_served((shape.fields, shape.alternatives), first_fields):
        return False
    listing = set(shape.fields) <= _NOT_SELECTIVE and not shape.alternatives
    return not (listing and shape.sort and shape.sort[0] in first_fields)


class QueryRecorder(monitoring.CommandListener):
    """Every query shape the process's pymongo clients send."""

    def __init__(self) -> None:
        self.shapes: set[Shape] = set()
        self.callers: dict[Shape, set[tuple[str, ...]]] = {}
        self.tests: dict[Shape, set[str]] = {}
        # The test running, so that a shape can be traced to the tests that issue it.
        self.test = ""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.database_name in ("admin", "config", "local"):
            return
        shapes = shapes_of(event.command_name, event.command)
        if shapes:
            callers = _callers()
            for shape in shapes:
                self.shapes.add(shape)
                self.callers.setdefault(shape, set()).add(callers)
                self.tests.setdefault(shape, set()).add(self.test)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _callers() -> tuple[str, ...]:
    """The fhirauth functions above the storage layer that the command was issued from, innermost first."""
    names = []
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        marker = path.rfind("/fhirauth/")
        if marker >= 0 and "/fhirauth/storage/" not in path:
            names.append(f"{path[marker + 1 :]}:{frame.f_code.co_name}")
        frame = frame.f_back
    return tuple(names)


_recorder = QueryRecorder()


def pytest_configure(config: pytest.Config) -> None:
    # Before any client exists: pymongo hands a client the listeners registered when it is made.
    monitoring.register(_recorder)


def pytest_runtest_setup(item: pytest.Item) -> None:
    _recorder.test = item.nodeid


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get(LOG_VARIABLE)
    if path:
        with open(path, "w") as log:
            entries = [
                {
                    **shape.as_json(),
                    "callers": sorted(_recorder.callers.get(shape, ())),
                    "tests": sorted(_recorder.tests.get(shape, ())),
                }
                for shape in sorted(_recorder.shapes)
            ]
            json.dump(entries, log, indent=1)
