"""Server-made ids are RFC 9562 version 7 UUIDs: unique, random, and ordered by creation time."""

from __future__ import annotations

import time
import uuid

from fhirauth.resources.service import new_id


def test_an_id_is_a_version_7_uuid_carrying_its_creation_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    id = new_id()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(id)
    assert str(parsed) == id
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert before <= parsed.int >> 80 <= after


def test_ids_of_later_milliseconds_sort_later_and_never_repeat() -> None:
    ids = []
    for _ in range(3):
        ids.append(new_id())
        time.sleep(0.002)
    assert ids == sorted(ids)
    many = {new_id() for _ in range(100_000)}
    assert len(many) == 100_000
    # 74 random bits: within one millisecond the order is random, not a counter.
    assert len({id[19:] for id in many}) == 100_000
