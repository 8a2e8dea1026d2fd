"""The storage contract (fhirauth/storage/base.py), run unchanged against every backend."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from fhirauth.clock import ManualClock
from fhirauth.storage.base import (
    AlreadyExists,
    Create,
    Delete,
    Document,
    Filter,
    Found,
    Index,
    Page,
    Query,
    Record,
    Replace,
    Storage,
    Stored,
    VersionConflict,
)


def resource(resource_type: str, id: str, version: int = 1, **fields: Any) -> Document:
    return {"resourceType": resource_type, "id": id, "meta": {"versionId": str(version)}, **fields}


def user(id: str, version: int = 1, **fields: Any) -> Document:
    return resource("User", id, version, **fields)


# --- lifecycle ----------------------------------------------------------------------------------------


async def test_ping_answers(storage: Storage) -> None:
    await storage.ping()


async def test_start_again_keeps_the_data(storage: Storage, indexes: tuple[Index, ...]) -> None:
    await storage.write([Create(user("u1", email="a@example.org"))])
    await storage.start(indexes)
    assert await storage.get("User", "u1") == Stored(user("u1", email="a@example.org"))


# --- create, get, replace, delete ---------------------------------------------------------------------


async def test_create_then_get(storage: Storage) -> None:
    document = user("u1", email="a@example.org", name={"family": "Smith"}, active=True, score=1.5)
    await storage.write([Create(document)])
    stored = await storage.get("User", "u1")
    assert stored == Stored(document, deleted=False)
    assert stored.version == 1


async def test_unknown_resources_are_absent(storage: Storage) -> None:
    await storage.write([Create(user("u1"))])
    assert await storage.get("User", "u2") is None
    assert await storage.get("Patient", "u1") is None
    assert await storage.get_version("User", "u1", 2) is None
    assert await storage.get_version("User", "u2", 1) is None
    assert await storage.history("User", "u2") == []


async def test_get_many_answers_as_get_does_for_each_id(storage: Storage) -> None:
    await storage.write([Create(user("u1", email="a@example.org")), Create(user("u2"))])
    await storage.write([Replace(user("u1", 2, email="b@example.org"), expected_version=1)])
    await storage.write([Delete(user("u2", 2), expected_version=1)])
    await storage.write([Create(resource("Patient", "u3"))])
    found = await storage.get_many("User", ["u2", "u1", "u3", "missing", "u1"])
    assert found == {
        "u1": Stored(user("u1", 2, email="b@example.org")),
        "u2": Stored(user("u2", 2), deleted=True),
    }
    assert await storage.get_many("User", []) == {}


async def test_get_many_reads_more_ids_than_one_statement_takes(storage: Storage) -> None:
    ids = [f"u{n:04}" for n in range(1200)]
    await storage.write([Create(user(id)) for id in ids[::2]])
    found = await storage.get_many("User", ids)
    assert found == {id: Stored(user(id)) for id in ids[::2]}


async def test_the_same_id_in_two_types_are_two_resources(storage: Storage) -> None:
    await storage.write([Create(user("x", email="a@example.org"))])
    await storage.write([Create(resource("Patient", "x", gender="female"))])
    assert await storage.get("User", "x") == Stored(user("x", email="a@example.org"))
    assert await storage.get("Patient", "x") == Stored(resource("Patient", "x", gender="female"))


async def test_create_of_an_existing_id_raises_already_exists(storage: Storage) -> None:
    await storage.write([Create(user("u1", email="a@example.org"))])
    with pytest.raises(AlreadyExists) as caught:
        await storage.write([Create(user("u1", email="b@example.org"))])
    assert (caught.value.resource_type, caught.value.id) == ("User", "u1")
    assert await storage.get("User", "u1") == Stored(user("u1", email="a@example.org"))
    assert await storage.history("User", "u1") == [Stored(user("u1", email="a@example.org"))]


async def test_replace_with_the_expected_version(storage: Storage) -> None:
    await storage.write([Create(user("u1", email="a@example.org"))])
    await storage.write([Replace(user("u1", 2, email="b@example.org"), expected_version=1)])
    assert await storage.get("User", "u1") == Stored(user("u1", 2, email="b@example.org"))


async def test_replace_with_a_stale_version_conflicts(storage: Storage) -> None:
    await storage.write([Create(user("u1"))])
    await storage.write([Replace(user("u1", 2, note="second"), expected_version=1)])
    with pytest.raises(VersionConflict) as caught:
        await storage.write([Replace(user("u1", 3, note="late"), expected_version=1)])
    assert (caught.value.resource_type, caught.value.id) == ("User", "u1")
    assert await storage.get("User", "u1") == Stored(user("u1", 2, note="second"))


async def test_replace_of_a_missing_resource_conflicts(storage: Storage) -> None:
    with pytest.raises(VersionConflict):
        await storage.write([Replace(user("nobody", 2), expected_version=1)])
    assert await storage.get("User", "nobody") is None
    assert await storage.history("User", "nobody") == []


async def test_fifty_concurrent_replaces_of_one_version_let_exactly_one_win(storage: Storage) -> None:
    await storage.write([Create(user("u1"))])
    results = await asyncio.gather(
        *(storage.write([Replace(user("u1", 2, writer=n), expected_version=1)]) for n in range(50)),
        return_exceptions=True,
    )
    winners = [n for n, result in enumerate(results) if result is None]
    conflicts = [result for result in results if isinstance(result, VersionConflict)]
    assert len(winners) == 1
    assert len(conflicts) == 49
    assert await storage.get("User", "u1") == Stored(user("u1", 2, writer=winners[0]))
    assert [stored.version for stored in await storage.history("User", "u1")] == [2, 1]


async def test_delete_leaves_a_tombstone(storage: Storage) -> None:
    await storage.write([Create(user("u1", email="a@example.org"))])
    await storage.write([Delete(user("u1", 2), expected_version=1)])
    assert await storage.get("User", "u1") == Stored(user("u1", 2), deleted=True)


async def test_delete_with_a_stale_version_conflicts(storage: Storage) -> None:
    await storage.write([Create(user("u1"))])
    await storage.write([Replace(user("u1", 2), expected_version=1)])
    with pytest.raises(VersionConflict):
        await storage.write([Delete(user("u1", 3), expected_version=1)])
    assert await storage.get("User", "u1") == Stored(user("u1", 2))


async def test_a_tombstone_cannot_be_replaced_or_deleted(storage: Storage) -> None:
    await storage.write([Create(user("u1"))])
    await storage.write([Delete(user("u1", 2), expected_version=1)])
    with pytest.raises(VersionConflict):
        await storage.write([Replace(user("u1", 3), expected_version=2)])
    with pytest.raises(VersionConflict):
        await storage.write([Delete(user("u1", 3), expected_version=2)])
    assert await storage.get("User", "u1") == Stored(user("u1", 2), deleted=True)


async def test_create_over_a_tombstone_with_its_version(storage: Storage) -> None:
    await storage.write([Create(user("u1", email="old@example.org"))])
    await storage.write([Delete(user("u1", 2), expected_version=1)])
    await storage.write([Create(user("u1", 3, email="new@example.org"), over_tombstone_version=2)])
    assert await storage.get("User", "u1") == Stored(user("u1", 3, email="new@example.org"))
    history = await storage.history("User", "u1")
    assert [(stored.version, stored.deleted) for stored in history] == [(3, False), (2, True), (1, False)]


async def test_create_over_a_tombstone_needs_its_version(storage: Storage) -> None:
    await storage.write([Create(user("u1"))])
    await storage.write([Delete(user("u1", 2), expected_version=1)])
    with pytest.raises(AlreadyExists):
        await storage.write([Create(user("u1", 3))])
    with pytest.raises(AlreadyExists):
        await storage.write([Create(user("u1", 3), over_tombstone_version=1)])
    assert await storage.get("User", "u1") == Stored(user("u1", 2), deleted=True)


async def test_create_over_a_tombstone_fails_on_a_live_or_missing_resource(storage: Storage) -> None:
    await storage.write([Create(user("u1"))])
    with pytest.raises(AlreadyExists):
        await storage.write([Create(user("u1", 2), over_tombstone_version=1)])
    with pytest.raises(AlreadyExists):
        await storage.write([Create(user("u2", 2), over_tombstone_version=1)])
    assert await storage.get("User", "u1") == Stored(user("u1"))
    assert await storage.get("User", "u2") is None


async def test_history_is_newest_first_with_tombstones_and_every_version_readable(storage: Storage) -> None:
    versions = [
        Stored(user("u1", 1, email="one@example.org")),
        Stored(user("u1", 2, email="two@example.org")),
        Stored(user("u1", 3), deleted=True),
        Stored(user("u1", 4, email="four@example.org")),
    ]
    await storage.write([Create(versions[0].document)])
    await storage.write([Replace(versions[1].document, expected_version=1)])
    await storage.write([Delete(versions[2].document, expected_version=2)])
    await storage.write([Create(versions[3].document, over_tombstone_version=3)])
    assert await storage.history("User", "u1") == versions[::-1]
    for number, stored in enumerate(versions, start=1):
        assert await storage.get_version("User", "u1", number) == stored
    assert await storage.get_version("User", "u1", 5) is None


# --- atomic multi-writes ------------------------------------------------------------------------------


async def test_a_multi_write_applies_its_entries_in_order(storage: Storage) -> None:
    await storage.write(
        [
            Create(user("u1", note="first")),
            Replace(user("u1", 2, note="second"), expected_version=1),
            Create(resource("Patient", "p1")),
        ]
    )
    assert await storage.history("User", "u1") == [
        Stored(user("u1", 2, note="second")),
        Stored(user("u1", note="first")),
    ]
    assert await storage.get("Patient", "p1") == Stored(resource("Patient", "p1"))


async def test_a_multi_write_whose_create_fails_leaves_nothing(storage: Storage) -> None:
    await storage.write([Create(user("taken"))])
    with pytest.raises(AlreadyExists) as caught:
        await storage.write(
            [
                Create(user("new")),
                Replace(user("taken", 2, note="changed"), expected_version=1),
                Create(user("taken")),
            ]
        )
    assert caught.value.id == "taken"
    assert await storage.get("User", "new") is None
    assert await storage.history("User", "new") == []
    assert await storage.get("User", "taken") == Stored(user("taken"))
    assert await storage.history("User", "taken") == [Stored(user("taken"))]


async def test_a_multi_write_whose_replace_conflicts_leaves_nothing(storage: Storage) -> None:
    await storage.write([Create(user("u1"))])
    with pytest.raises(VersionConflict) as caught:
        await storage.write(
            [
                Create(resource("Patient", "p1")),
                Delete(user("u1", 2), expected_version=1),
                Replace(user("u1", 3), expected_version=1),
            ]
        )
    assert caught.value.id == "u1"
    assert await storage.get("Patient", "p1") is None
    assert await storage.history("Patient", "p1") == []
    assert await storage.get("User", "u1") == Stored(user("u1"))
    assert await storage.history("User", "u1") == [Stored(user("u1"))]


async def test_concurrent_multi_writes_on_one_version_let_exactly_one_win(storage: Storage) -> None:
    await storage.write([Create(user("u1"))])
    results = await asyncio.gather(
        *(
            storage.write([Replace(user("u1", 2, writer=n), expected_version=1), Create(user(f"new{n}"))])
            for n in range(10)
        ),
        return_exceptions=True,
    )
    winners = [n for n, result in enumerate(results) if result is None]
    assert len(winners) == 1
    assert sum(isinstance(result, VersionConflict) for result in results) == 9
    assert await storage.get("User", "u1") == Stored(user("u1", 2, writer=winners[0]))
    created = [n for n in range(10) if await storage.get("User", f"new{n}") is not None]
    assert created == winners


async def test_a_unique_index_refuses_a_second_live_value(storage: Storage) -> None:
    # The fixture's indexes make User.email unique.
    await storage.write([Create(user("ann", email="shared@example.org"))])
    with pytest.raises(AlreadyExists):
        await storage.write([Create(user("bob", email="shared@example.org"))])
    await storage.write([Create(user("cat", email="cat@example.org"))])
    with pytest.raises(AlreadyExists):
        await storage.write([Replace(user("cat", 2, email="shared@example.org"), expected_version=1)])
    assert await storage.get("User", "bob") is None
    assert await storage.get("User", "cat") == Stored(user("cat", email="cat@example.org"))


async def test_a_unique_index_ignores_missing_values_and_tombstones(storage: Storage) -> None:
    await storage.write([Create(user("no-email-1")), Create(user("no-email-2"))])
    await storage.write([Create(user("ann", email="shared@example.org"))])
    # A tombstone that still carries the value must not block a new owner.
    await storage.write([Delete(user("ann", 2, email="shared@example.org"), expected_version=1)])
    await storage.write([Create(user("bob", email="shared@example.org"))])
    assert await storage.get("User", "bob") == Stored(user("bob", email="shared@example.org"))


# --- search -------------------------------------------------------------------------------------------

PEOPLE = {
    "ann": user("ann", email="ann@example.org", name={"family": "Smith"}, active=True, age=30),
    "bob": user("bob", email="bob@example.org", name={"family": "Jones"}, active=False, age=25),
    "cat": user("cat", email="cat@example.org", name={"family": "Smith"}, active=True, age=25),
    "dan": user("dan", email="dan@example.org", name={"family": "Brown"}, active=True, age=40),
    "eve": user("eve", email="eve@example.org", name={"family": "Smith"}, active=False, age=30),
}
GONE = user("zed", email="zed@example.org", name={"family": "Smith"}, active=True, age=30)
PATIENT = resource("Patient", "pat", email="ann@example.org", name={"family": "Smith"}, active=True, age=30)


@pytest.fixture
async def people(storage: Storage) -> Storage:
    await storage.write([Create(document) for document in [*PEOPLE.values(), GONE, PATIENT]])
    # The tombstone keeps every searched field, so only the deleted flag can keep it out.
    await storage.write([Delete({**GONE, "meta": {"versionId": "2"}}, expected_version=1)])
    return storage


def ids(page: Page) -> list[str]:
    return [document["id"] for document in page.items]


def where(*filters: tuple[str, tuple[Any, ...]], **options: Any) -> Query:
    return Query(filters=tuple(Filter(path, values) for path, values in filters), **options)


async def test_search_returns_whole_documents(people: Storage) -> None:
    page = await people.search("User", where(("email", ("cat@example.org",))))
    assert page == Page([PEOPLE["cat"]], total=1)


async def test_search_without_filters_returns_every_live_resource_of_the_type_by_id(people: Storage) -> None:
    page = await people.search("User", Query())
    assert (ids(page), page.total) == (["ann", "bob", "cat", "dan", "eve"], 5)


async def test_search_on_a_dotted_path(people: Storage) -> None:
    page = await people.search("User", where(("name.family", ("Smith",))))
    assert (ids(page), page.total) == (["ann", "cat", "eve"], 3)


@pytest.mark.parametrize(("value", "expected"), [(True, ["ann", "cat", "dan"]), (False, ["bob", "eve"])])
async def test_search_on_a_boolean(people: Storage, value: bool, expected: list[str]) -> None:
    assert ids(await people.search("User", where(("active", (value,))))) == expected


async def test_search_on_a_number(people: Storage) -> None:
    assert ids(await people.search("User", where(("age", (25,))))) == ["bob", "cat"]


async def test_search_matches_any_of_several_values(people: Storage) -> None:
    query = where(("email", ("dan@example.org", "ann@example.org", "nobody@example.org")))
    assert ids(await people.search("User", query)) == ["ann", "dan"]


async def test_search_with_no_values_matches_nothing(people: Storage) -> None:
    assert await people.search("User", where(("email", ()))) == Page([], total=0)


async def test_search_matches_every_filter(people: Storage) -> None:
    query = where(("name.family", ("Smith",)), ("active", (True,)))
    assert ids(await people.search("User", query)) == ["ann", "cat"]


async def test_search_with_two_filters_on_one_path_matches_both(people: Storage) -> None:
    query = where(("age", (25, 30)), ("age", (30, 40)))
    assert ids(await people.search("User", query)) == ["ann", "eve"]


async def test_search_returns_only_the_asked_type(people: Storage) -> None:
    query = where(("email", ("ann@example.org",)))
    assert await people.search("Patient", query) == Page([PATIENT], total=1)
    assert ids(await people.search("User", query)) == ["ann"]


async def test_search_leaves_out_tombstones(people: Storage) -> None:
    assert await people.search("User", where(("email", ("zed@example.org",)))) == Page([], total=0)


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ((("age", False),), ["bob", "cat", "ann", "eve", "dan"]),
        ((("age", True),), ["dan", "ann", "eve", "bob", "cat"]),
        ((("name.family", False), ("age", True)), ["dan", "bob", "ann", "eve", "cat"]),
        ((("email", True),), ["eve", "dan", "cat", "bob", "ann"]),
    ],
    ids=["ascending-ties-by-id", "descending-ties-by-id", "two-keys", "string-descending"],
)
async def test_search_sorts(people: Storage, sort: tuple[tuple[str, bool], ...], expected: list[str]) -> None:
    assert ids(await people.search("User", Query(sort=sort))) == expected


async def test_search_pages_with_offset_and_limit_and_counts_all_matches(people: Storage) -> None:
    query = Query(sort=(("age", False),), offset=1, limit=2)
    assert await people.search("User", query) == Page([PEOPLE["cat"], PEOPLE["ann"]], total=5)


async def test_search_past_the_last_match_is_empty_with_the_total(people: Storage) -> None:
    assert await people.search("User", Query(offset=5)) == Page([], total=5)


async def test_search_with_limit_zero_only_counts(people: Storage) -> None:
    assert await people.search("User", Query(limit=0)) == Page([], total=5)


async def test_search_without_count_has_no_total(people: Storage) -> None:
    page = await people.search("User", Query(limit=2, count_total=False))
    assert (ids(page), page.total) == (["ann", "bob"], None)


@pytest.mark.parametrize(
    "path",
    ["", "email ", "email\n", ".email", "email.", "name..family", "1st", "$where", "name.$ne", "a'b", "a[0]"],
)
async def test_search_refuses_an_invalid_path(storage: Storage, path: str) -> None:
    with pytest.raises(ValueError, match="Invalid search path"):
        await storage.search("User", where((path, ("x",))))
    with pytest.raises(ValueError, match="Invalid search path"):
        await storage.search("User", Query(sort=((path, False),)))


@pytest.mark.parametrize("resource_type", ["", "User'", "User_history", "_records", "User\n", "a.b"])
async def test_search_refuses_an_invalid_resource_type(storage: Storage, resource_type: str) -> None:
    with pytest.raises(ValueError, match="Invalid resource type"):
        await storage.search(resource_type, Query())


@pytest.mark.parametrize("value", [None, {"a": 1}, ["x"]])
async def test_search_refuses_a_value_that_is_not_a_scalar(storage: Storage, value: Any) -> None:
    with pytest.raises(ValueError, match="must be a string, number or boolean"):
        await storage.search("User", where(("email", (value,))))


async def test_search_refuses_a_negative_offset(storage: Storage) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        await storage.search("User", Query(offset=-1))


# --- find_one -----------------------------------------------------------------------------------------


def session(id: str, token: str, **fields: Any) -> Document:
    return resource("Session", id, token=token, **fields)


async def test_find_one_finds_a_live_resource_by_an_indexed_value(storage: Storage) -> None:
    await storage.write([Create(session("s1", "t1")), Create(session("s2", "t2"))])
    assert await storage.find_one("Session", "token", "t2") == Found(session("s2", "t2"))
    assert await storage.find_one("Session", "token", "t3") is None
    assert await storage.find_one("User", "token", "t2") is None
    await storage.write([Delete(session("s2", "t2", version=2), expected_version=1)])
    assert await storage.find_one("Session", "token", "t2") is None


async def test_find_one_follows_a_reference_to_its_resource(storage: Storage) -> None:
    to_ann = {"resourceType": "User", "id": "ann"}
    await storage.write(
        [
            Create(user("ann", email="ann@example.org")),
            Create(user("gone")),
            Create(session("s1", "t1", user=to_ann)),
            Create(session("s2", "t2", user={"resourceType": "User", "id": "nobody"})),
            Create(session("s3", "t3", user={"id": "ann"})),
            Create(session("s4", "t4")),
            Create(session("s5", "t5", user={"resourceType": "User", "id": "gone"})),
        ]
    )
    await storage.write([Delete(user("gone", version=2), expected_version=1)])
    found = await storage.find_one("Session", "token", "t1", follow="user")
    assert found == Found(session("s1", "t1", user=to_ann), Stored(user("ann", email="ann@example.org")))
    # A reference to nothing, without a resourceType, or no reference at all: no resource beside it.
    for token in ("t2", "t3", "t4"):
        found = await storage.find_one("Session", "token", token, follow="user")
        assert found is not None and found.referenced is None
    # A deleted resource comes back as its tombstone, as `get` gives it.
    found = await storage.find_one("Session", "token", "t5", follow="user")
    assert found is not None and found.referenced == Stored(user("gone", version=2), deleted=True)


# --- all_resources ------------------------------------------------------------------------------------


async def test_all_resources_lists_live_resources(people: Storage) -> None:
    everything = sorted(
        await people.all_resources(), key=lambda document: (document["resourceType"], document["id"])
    )
    assert everything == [PATIENT, *PEOPLE.values()]
    users = sorted(await people.all_resources("User"), key=lambda document: document["id"])
    assert users == list(PEOPLE.values())
    assert await people.all_resources("Session") == []


# --- records ------------------------------------------------------------------------------------------


async def test_absent_records(storage: Storage) -> None:
    assert await storage.record_get("code", "k") is None
    assert await storage.record_take("code", "k") is None
    await storage.record_delete("code", "k")


async def test_record_put_without_a_rev_creates_only(storage: Storage, clock: ManualClock) -> None:
    expires_at = clock() + timedelta(minutes=5)
    assert await storage.record_put("code", "k", {"v": 1}, expected_rev=None, expires_at=expires_at) == 1
    assert await storage.record_put("code", "k", {"v": 2}, expected_rev=None) is None
    assert await storage.record_get("code", "k") == Record({"v": 1}, 1, expires_at)


async def test_record_put_with_a_rev_compares_and_sets(storage: Storage) -> None:
    await storage.record_put("login", "k", {"step": 1}, expected_rev=None)
    assert await storage.record_put("login", "k", {"step": 2}, expected_rev=1) == 2
    assert await storage.record_put("login", "k", {"step": "stale"}, expected_rev=1) is None
    assert await storage.record_get("login", "k") == Record({"step": 2}, 2, None)
    assert await storage.record_put("login", "k", {"step": 3}, expected_rev=2) == 3


async def test_record_put_returns_the_rev_it_stored_even_over_an_expired_record(
    storage: Storage, clock: ManualClock
) -> None:
    expires_at = clock() + timedelta(seconds=5)
    await storage.record_put("login", "k", {"step": 1}, expected_rev=None, expires_at=expires_at)
    assert await storage.record_put("login", "k", {"step": 2}, expected_rev=1, expires_at=expires_at) == 2
    clock.advance(5)
    assert await storage.record_put("login", "k", {"step": 3}, expected_rev=None) == 1
    assert await storage.record_get("login", "k") == Record({"step": 3}, 1, None)
    assert await storage.record_put("login", "k", {"step": 4}, expected_rev=2) is None
    assert await storage.record_put("login", "k", {"step": 4}, expected_rev=1) == 2


async def test_record_puts_racing_in_one_go_each_get_their_own_answer(storage: Storage) -> None:
    # Issued together, so a backend that commits writes in batches runs them in one batch.
    created = await asyncio.gather(
        *(storage.record_put("login", "k", {"by": n}, expected_rev=None) for n in range(3)),
        storage.record_put("login", "other", {"by": 3}, expected_rev=None),
    )
    assert sorted(created[:3], key=str) == [1, None, None] and created[3] == 1
    swapped = await asyncio.gather(
        *(storage.record_put("login", "k", {"by": n}, expected_rev=1) for n in range(3)),
        storage.record_put("login", "other", {"by": 3}, expected_rev=1),
    )
    assert sorted(swapped[:3], key=str) == [2, None, None] and swapped[3] == 2
    assert await storage.record_get("login", "k") == Record({"by": swapped.index(2)}, 2, None)
    assert await storage.record_get("login", "other") == Record({"by": 3}, 2, None)


async def test_many_record_puts_racing_to_create_have_exactly_one_winner(storage: Storage) -> None:
    # Twenty at once, over as many connections as the driver opens, for ten keys in turn: a backend
    # whose create-only put can refuse every racer (the winner's own write included) fails here.
    for round in range(10):
        created = await asyncio.gather(
            *(storage.record_put("rotated", f"k{round}", {"by": n}, expected_rev=None) for n in range(20))
        )
        assert sorted(created, key=str) == [1] + [None] * 19
        record = await storage.record_get("rotated", f"k{round}")
        assert record is not None and record.document == {"by": created.index(1)}


async def test_record_put_with_a_rev_on_an_absent_record_fails(storage: Storage) -> None:
    assert await storage.record_put("login", "k", {"step": 2}, expected_rev=1) is None
    assert await storage.record_get("login", "k") is None


async def test_record_put_sets_the_new_expiry(storage: Storage, clock: ManualClock) -> None:
    await storage.record_put("login", "k", {}, expected_rev=None, expires_at=clock() + timedelta(seconds=10))
    later = clock() + timedelta(hours=1)
    assert await storage.record_put("login", "k", {}, expected_rev=1, expires_at=later) == 2
    assert await storage.record_get("login", "k") == Record({}, 2, later)


async def test_a_record_expires_by_the_clock(storage: Storage, clock: ManualClock) -> None:
    expires_at = clock() + timedelta(seconds=60)
    await storage.record_put("code", "k", {"v": 1}, expected_rev=None, expires_at=expires_at)
    clock.advance(59.999999)
    assert await storage.record_get("code", "k") == Record({"v": 1}, 1, expires_at)
    clock.advance(0.000001)
    assert await storage.record_get("code", "k") is None
    assert await storage.record_put("code", "k", {"v": 2}, expected_rev=1) is None
    assert await storage.record_take("code", "k") is None
    assert await storage.record_put("code", "k", {"v": 3}, expected_rev=None) == 1
    assert await storage.record_get("code", "k") == Record({"v": 3}, 1, None)


async def test_record_kinds_are_separate(storage: Storage) -> None:
    await storage.record_put("code", "k", {"kind": "code"}, expected_rev=None)
    await storage.record_put("login", "k", {"kind": "login"}, expected_rev=None)
    assert await storage.record_get("code", "k") == Record({"kind": "code"}, 1, None)
    assert await storage.record_get("login", "k") == Record({"kind": "login"}, 1, None)


async def test_record_set_writes_unconditionally(storage: Storage, clock: ManualClock) -> None:
    await storage.record_set("marker", "k", {"v": 1})
    assert await storage.record_get("marker", "k") == Record({"v": 1}, 1, None)
    expires_at = clock() + timedelta(minutes=1)
    await storage.record_set("marker", "k", {"v": 2}, expires_at=expires_at)
    assert await storage.record_get("marker", "k") == Record({"v": 2}, 2, expires_at)


async def test_record_incr_counts_every_concurrent_call_once(storage: Storage, clock: ManualClock) -> None:
    expires_at = clock() + timedelta(minutes=15)
    counts = await asyncio.gather(
        *(storage.record_incr("attempts", "ann", expires_at=expires_at) for _ in range(100))
    )
    assert sorted(counts) == list(range(1, 101))
    assert await storage.record_get("attempts", "ann") == Record({"count": 100}, 100, expires_at)


async def test_record_incr_keeps_the_first_expiry(storage: Storage, clock: ManualClock) -> None:
    first = clock() + timedelta(minutes=15)
    assert await storage.record_incr("attempts", "ann", expires_at=first) == 1
    assert await storage.record_incr("attempts", "ann", expires_at=first + timedelta(minutes=5)) == 2
    assert await storage.record_get("attempts", "ann") == Record({"count": 2}, 2, first)


async def test_record_incr_adds_an_amount_atomically(storage: Storage, clock: ManualClock) -> None:
    expires_at = clock() + timedelta(minutes=1)
    counts = await asyncio.gather(
        *(storage.record_incr("rate", "ip", expires_at=expires_at, amount=10) for _ in range(20))
    )
    assert sorted(counts) == list(range(10, 201, 10))
    assert await storage.record_get("rate", "ip") == Record({"count": 200}, 200, expires_at)
    clock.advance(60)
    later = clock() + timedelta(minutes=1)
    assert await storage.record_incr("rate", "ip", expires_at=later, amount=7) == 7
    assert await storage.record_get("rate", "ip") == Record({"count": 7}, 7, later)


@pytest.mark.parametrize("amount", [0, -1, True, 1.5])
async def test_record_incr_refuses_an_amount_that_is_not_a_positive_integer(
    storage: Storage, clock: ManualClock, amount: Any
) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        await storage.record_incr("rate", "ip", expires_at=clock() + timedelta(minutes=1), amount=amount)
    assert await storage.record_get("rate", "ip") is None


async def test_an_expired_counter_restarts_at_one_with_the_new_expiry(
    storage: Storage, clock: ManualClock
) -> None:
    first = clock() + timedelta(minutes=15)
    for _ in range(3):
        await storage.record_incr("attempts", "ann", expires_at=first)
    clock.advance(15 * 60)
    second = clock() + timedelta(minutes=15)
    assert await storage.record_incr("attempts", "ann", expires_at=second) == 1
    assert await storage.record_get("attempts", "ann") == Record({"count": 1}, 1, second)


async def test_record_take_hands_a_record_to_exactly_one_caller(storage: Storage, clock: ManualClock) -> None:
    expires_at = clock() + timedelta(minutes=1)
    await storage.record_put("code", "abc", {"user": "ann"}, expected_rev=None, expires_at=expires_at)
    taken = await asyncio.gather(*(storage.record_take("code", "abc") for _ in range(20)))
    assert [record for record in taken if record is not None] == [Record({"user": "ann"}, 1, expires_at)]
    assert await storage.record_get("code", "abc") is None


async def test_record_delete_removes_the_record(storage: Storage) -> None:
    await storage.record_put("code", "k", {}, expected_rev=None)
    await storage.record_delete("code", "k")
    assert await storage.record_get("code", "k") is None
    assert await storage.record_put("code", "k", {"again": True}, expected_rev=None) == 1


async def test_purge_expired_deletes_and_counts_expired_records(storage: Storage, clock: ManualClock) -> None:
    start = clock()
    for key, seconds in [("a", 10), ("b", 20), ("c", 30), ("d", 31)]:
        await storage.record_put(
            "code", key, {}, expected_rev=None, expires_at=start + timedelta(seconds=seconds)
        )
    await storage.record_put("code", "forever", {}, expected_rev=None)
    assert await storage.purge_expired(start + timedelta(seconds=30)) == 3
    assert await storage.purge_expired(start + timedelta(seconds=30)) == 0
    # The clock still stands at `start`, so only deletion explains a missing record.
    remaining = {
        key: await storage.record_get("code", key) is not None for key in ["a", "b", "c", "d", "forever"]
    }
    assert remaining == {"a": False, "b": False, "c": False, "d": True, "forever": True}


# --- history beside the current version ---------------------------------------------------------------


async def test_racing_replaces_leave_the_winner_in_history_and_vread(storage: Storage) -> None:
    await storage.write([Create(user("u1"))])
    results = await asyncio.gather(
        *(storage.write([Replace(user("u1", 2, writer=n), expected_version=1)]) for n in range(20)),
        return_exceptions=True,
    )
    (winner,) = [n for n, result in enumerate(results) if result is None]
    assert all(isinstance(result, VersionConflict) for result in results if result is not None)
    assert await storage.history("User", "u1") == [Stored(user("u1", 2, writer=winner)), Stored(user("u1"))]
    assert await storage.get_version("User", "u1", 2) == Stored(user("u1", 2, writer=winner))
    await storage.write([Replace(user("u1", 3), expected_version=2)])
    assert [stored.version for stored in await storage.history("User", "u1")] == [3, 2, 1]


async def test_a_failed_write_leaves_no_version_behind(storage: Storage) -> None:
    await storage.write([Create(user("u1", email="a@example.org"))])
    with pytest.raises(AlreadyExists):
        await storage.write([Create(user("u2", email="a@example.org"))])
    with pytest.raises(VersionConflict):
        await storage.write([Replace(user("u1", 3, note="stale"), expected_version=2)])
    with pytest.raises(VersionConflict):
        await storage.write([Delete(user("u1", 2), expected_version=5)])
    assert await storage.history("User", "u2") == []
    assert await storage.get_version("User", "u2", 1) is None
    assert await storage.get_version("User", "u1", 2) is None
    assert await storage.get_version("User", "u1", 3) is None
    assert await storage.history("User", "u1") == [Stored(user("u1", email="a@example.org"))]
    # The versions the failed writes named are free for the writes that succeed.
    await storage.write([Create(user("u2", email="b@example.org"))])
    await storage.write([Replace(user("u1", 2, email="a@example.org", note="next"), expected_version=1)])
    assert await storage.history("User", "u2") == [Stored(user("u2", email="b@example.org"))]
    assert await storage.get_version("User", "u1", 2) == Stored(
        user("u1", 2, email="a@example.org", note="next")
    )


async def test_purge_orphans_leaves_every_written_version(storage: Storage, clock: ManualClock) -> None:
    await storage.write([Create(user("u1"))])
    await storage.write([Replace(user("u1", 2), expected_version=1)])
    with pytest.raises(VersionConflict):
        await storage.write([Replace(user("u1", 3), expected_version=1)])
    clock.advance(3600)
    assert await storage.purge_orphans(clock()) == 0
    assert [stored.version for stored in await storage.history("User", "u1")] == [2, 1]


async def test_search_by_id_and_sorted_by_id(people: Storage) -> None:
    page = await people.search("User", where(("id", ("eve", "ann", "zed", "nobody"))))
    assert page == Page([PEOPLE["ann"], PEOPLE["eve"]], total=2)
    descending = await people.search("User", Query(sort=(("id", True),)))
    assert ids(descending) == ["eve", "dan", "cat", "bob", "ann"]
    by_age = await people.search("User", Query(sort=(("age", False), ("id", True))))
    assert ids(by_age) == ["cat", "bob", "eve", "ann", "dan"]
