"""Every MongoDB query fhirauth issues on its own is served by an index the backend creates.

SecantusDB answers `explain`, but its planner is not MongoDB's: it reports a collection scan for a
find by a sub-document `_id` (every `_records` lookup), for an update whose filter holds more than the
`_id`, and for an indexed equality beside `_deleted`, all of which MongoDB serves from an index. So the
check is MongoDB's rule applied to what the code sends: API tests run on MongoDB with pymongo's command
monitoring (tests/support/mongo_queries.py) record every query's shape (collection, tested fields,
sort) and where in fhirauth it came from, and each shape is judged against the indexes that
MongoStorage.start(INDEXES) made on the server.

Searches whose fields a client chooses (GET /<Type>?..., conditional create, a Bundle's conditional
references) are the client's: a search on any field cannot be indexed in advance. Everything else
(sign-in, token, session, 2FA, consent, userinfo lookups) is the code's, and must be served, or be
named in ACCEPTED_SCANS with the reason it may scan.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from support.mongo import drop_database, with_database
from support.mongo_queries import LOG_VARIABLE, Shape, shapes_of, unserved

from fhirauth.app import INDEXES
from fhirauth.clock import system_clock
from fhirauth.storage.backends import open_storage

REPO_ROOT = Path(__file__).resolve().parents[2]
# Set to "all" to record over every API test (about ten minutes), or to test file paths.
WORKLOAD_VARIABLE = "FHIRAUTH_TEST_MONGO_QUERY_WORKLOAD"
# Chosen to issue every query shape of the code that the whole API suite issues, in about a minute.
WORKLOAD = (
    "tests/api/test_crud.py",
    "tests/api/test_oauth_flows.py",
    "tests/api/test_token_families.py",
    "tests/api/test_oidc_userinfo.py",
    "tests/api/test_pages_signup.py",
    "tests/api/test_pages_authorize.py",
    "tests/api/test_twofactor_api.py",
    "tests/api/test_deleted_user_sessions.py",
)

# Where a search's fields come from the request: the client chose them.
_CLIENT_SEARCHES = (
    "fhirauth/http/rest.py:",
    "fhirauth/resources/bundles.py:",
    "fhirauth/resources/service.py:conditional_",
)

# Shapes of the code's that may scan, each with its reason: (command, collection, tested fields).
# An entry that no longer scans fails the test, so that the table shrinks when an index is added.
ACCEPTED_SCANS: dict[tuple[str, str, tuple[str, ...]], str] = {}


def _client_chosen(callers: Sequence[str]) -> bool:
    return (
        len(callers) >= 2
        and callers[0] == "fhirauth/resources/service.py:search"
        and callers[1].startswith(_CLIENT_SEARCHES)
    )


async def _created_indexes(mongo_uri: str) -> dict[str, list[tuple[str, ...]]]:
    """Each collection's indexes (key fields in order) as MongoStorage makes them, history included."""
    url = with_database(mongo_uri, f"idx{uuid.uuid4().hex[:12]}")
    storage = open_storage(url, system_clock)
    try:
        await storage.start(INDEXES)
        # History collections get their index on first use.
        await storage.history("User", "nobody")
    finally:
        await storage.close()
    client: MongoClient[dict[str, Any]] = MongoClient(url)
    try:
        database = client.get_default_database()
        return {
            name: [tuple(spec["key"]) for spec in database[name].list_indexes()]
            for name in database.list_collection_names()
        }
    finally:
        client.close()
        drop_database(url)


def _indexes_of(created: dict[str, list[tuple[str, ...]]], collection: str) -> list[tuple[str, ...]]:
    if collection in created:
        return created[collection]
    if collection.endswith("_history"):
        # Every history collection gets the same index on its first use.
        return created["User_history"]
    return [("_id",)]


def _workload() -> list[str]:
    chosen = os.environ.get(WORKLOAD_VARIABLE)
    if chosen == "all":
        return ["tests/api"]
    return chosen.split() if chosen else list(WORKLOAD)


def _record(mongo_uri: str, log: Path) -> dict[Shape, tuple[list[list[str]], list[str]]]:
    """Run the workload's MongoDB half with the recorder; each shape with its callers and tests."""
    env = {
        **os.environ,
        "FHIRAUTH_TEST_MONGODB_URI": mongo_uri,
        LOG_VARIABLE: str(log),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "pytest", "-p", "tests.support.mongo_queries", "-q", "-k", "mongo"]
    command += ["-p", "no:cacheprovider", *_workload()]
    run = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800)
    # Failing API tests are theirs to report; the queries they sent are recorded all the same.
    assert run.returncode in (0, 1), run.stdout[-3000:] + run.stderr[-3000:]
    entries = json.loads(log.read_text())
    return {Shape.from_json(e): (e["callers"], e["tests"]) for e in entries}


async def test_every_query_the_code_issues_is_served_by_an_index(mongo_uri: str, tmp_path: Path) -> None:
    created = await _created_indexes(mongo_uri)
    recorded = _record(mongo_uri, tmp_path / "queries.json")
    # Not vacuous: the workload reached the sign-in, token and short-lived-record lookups.
    collections = {shape.collection for shape in recorded}
    assert {"User", "Session", "_records", "User_history"} <= collections, collections

    scans: dict[tuple[str, str, tuple[str, ...]], list[str]] = {}
    for shape, (callers, tests) in sorted(recorded.items()):
        code_callers = [chain for chain in callers if not _client_chosen(chain)]
        if not code_callers or not unserved(shape, _indexes_of(created, shape.collection)):
            continue
        key = (shape.command, shape.collection, shape.fields)
        scans.setdefault(key, []).append(
            f"{shape.command} {shape.collection} {list(shape.fields)} sort {list(shape.sort)}"
            f" from {' < '.join(code_callers[0][:4])} (e.g. {tests[0]})"
        )
    unexpected = {key: lines for key, lines in scans.items() if key not in ACCEPTED_SCANS}
    assert not unexpected, "queries no index serves:\n" + "\n".join(
        line for lines in unexpected.values() for line in lines
    )
    stale = set(ACCEPTED_SCANS) - set(scans)
    if not os.environ.get(WORKLOAD_VARIABLE):
        assert not stale, f"ACCEPTED_SCANS names shapes no longer issued (or now served): {sorted(stale)}"


async def test_every_declared_index_exists_on_the_server(mongo_uri: str) -> None:
    created = await _created_indexes(mongo_uri)
    for index in INDEXES:
        keys = tuple(f"resource.{path}" for path in (index.path, *index.extra))
        assert keys in created[index.resource_type], (index, created.get(index.resource_type))
    assert ("exp",) in created["_records"]
    assert ("rid", "v") in created["User_history"]


# The judge itself, on shapes as pymongo sends them.
USER_INDEXES = [("_id",), ("resource.email",), ("resource.userName",)]


def _shape(command_name: str, command: dict[str, object]) -> Shape:
    (shape,) = shapes_of(command_name, command)
    return shape


@pytest.mark.parametrize(
    ("command_name", "command", "expected_unserved"),
    [
        ("find", {"find": "User", "filter": {"_id": "ann"}}, False),
        ("find", {"find": "User", "filter": {"_deleted": False, "resource.email": {"$in": ["a"]}}}, False),
        ("find", {"find": "User", "filter": {"_deleted": False, "resource.name": {"$in": ["a"]}}}, True),
        # A listing walks an index in its order; a filter on an unindexed field beside it does not.
        ("find", {"find": "User", "filter": {"_deleted": False}, "sort": {"_id": 1}, "limit": 10}, False),
        (
            "find",
            {"find": "User", "filter": {"_deleted": False, "resource.name": "x"}, "sort": {"_id": 1}},
            True,
        ),
        ("find", {"find": "User", "filter": {"_deleted": False}, "sort": {"resource.name": 1}}, True),
        ("find", {"find": "User", "filter": {"resource.email": {"$ne": "a"}}}, True),
        (
            "find",
            {"find": "User", "filter": {"$or": [{"resource.email": "a"}, {"resource.userName": "a"}]}},
            False,
        ),
        (
            "find",
            {"find": "User", "filter": {"$or": [{"resource.email": "a"}, {"resource.name": "a"}]}},
            True,
        ),
        (
            "find",
            {"find": "User", "filter": {"_id": "a", "$or": [{"exp": None}, {"exp": {"$gt": 1}}]}},
            False,
        ),
        ("count", {"count": "User", "query": {"_deleted": False}}, True),
        ("aggregate", {"aggregate": "User", "pipeline": [{"$match": {"resource.email": "a"}}]}, False),
        ("update", {"update": "User", "updates": [{"q": {"_id": "a", "v": 1}, "u": {}}]}, False),
        ("delete", {"delete": "User", "deletes": [{"q": {"resource.name": "a"}, "limit": 0}]}, True),
        ("findAndModify", {"findAndModify": "User", "query": {"resource.userName": "a"}}, False),
    ],
)
def test_the_rule_that_judges_a_query(
    command_name: str, command: dict[str, object], expected_unserved: bool
) -> None:
    assert unserved(_shape(command_name, command), USER_INDEXES) is expected_unserved
