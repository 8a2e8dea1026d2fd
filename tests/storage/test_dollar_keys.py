"""Property names starting with `$` (matcho operators, JSON Schema keywords) are stored and read back
as written on every backend, through every way a document comes back."""

from __future__ import annotations

from typing import Any

from fhirauth.storage.base import Create, Delete, Document, Query, Replace, Storage

# `$ref` beside `$id` is what pymongo reads back as a DBRef, not as an object.
SCHEMA = {
    "$id": "urn:example:policy",
    "$ref": "#/$defs/get",
    "$defs": {"get": {"properties": {"request-method": {"const": "get"}}}},
}
MATCHO = {"request-method": {"$enum": ["get"]}, "params": {"$one-of": [{"id": {"$contains": "a"}}]}}
# Keys that start with what an escaping scheme might use: they must come back unchanged too.
ODD_KEYS = {"~": 1, "~$x": 2, "~~": 3, "\uff04x": 4, "a$": 5}


def policy(version: int, **fields: Any) -> Document:
    return {
        "resourceType": "AccessPolicy",
        "id": "p",
        "meta": {"versionId": str(version)},
        "engine": "complex",
        "or": [{"engine": "matcho", "matcho": MATCHO}, {"engine": "json-schema", "schema": SCHEMA}],
        "data": ODD_KEYS,
        **fields,
    }


async def test_dollar_keys_round_trip_through_every_read(storage: Storage) -> None:
    first, second = policy(1), policy(2, description="second")
    await storage.write([Create(first)])
    await storage.write([Replace(second, 1)])
    stored = await storage.get("AccessPolicy", "p")
    assert stored is not None and stored.document == second
    assert (await storage.get_many("AccessPolicy", ["p"]))["p"].document == second
    old = await storage.get_version("AccessPolicy", "p", 1)
    assert old is not None and old.document == first
    assert [version.document for version in await storage.history("AccessPolicy", "p")] == [second, first]
    assert (await storage.search("AccessPolicy", Query())).items == [second]
    assert await storage.all_resources("AccessPolicy") == [second]
    await storage.write([Delete(policy(3), 2)])
    tombstone = await storage.get("AccessPolicy", "p")
    assert tombstone is not None and tombstone.deleted and tombstone.document == policy(3)


async def test_keys_like_an_escape_come_back_unchanged_without_dollar_keys(storage: Storage) -> None:
    document = {"resourceType": "User", "id": "u", "meta": {"versionId": "1"}, "data": ODD_KEYS}
    await storage.write([Create(document)])
    stored = await storage.get("User", "u")
    assert stored is not None and stored.document == document
    assert (await storage.search("User", Query())).items == [document]
