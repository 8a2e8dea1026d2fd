from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.mongo import drop_database, with_database

from fhirauth.clock import ManualClock
from fhirauth.storage.backends import open_storage
from fhirauth.storage.base import Index, Storage

INDEXES = (
    Index("User", "email", unique=True),
    Index("User", "name.family"),
    Index("Session", "token"),
)


@pytest.fixture
def indexes() -> tuple[Index, ...]:
    return INDEXES


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def _storage_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "sqlite-memory":
        return "sqlite://:memory:"
    if backend == "sqlite-file":
        return f"sqlite:///{tmp_path / 'fhirauth.db'}"
    # Every test gets its own database, so tests never see each other's data.
    return with_database(request.getfixturevalue("mongo_uri"), f"test_{uuid.uuid4().hex}")


@pytest.fixture(params=["sqlite-memory", "sqlite-file", "mongo"])
async def storage(
    request: pytest.FixtureRequest, clock: ManualClock, indexes: tuple[Index, ...], tmp_path: Path
) -> AsyncIterator[Storage]:
    url = _storage_url(request.param, request, tmp_path)
    storage = open_storage(url, clock)
    await storage.start(indexes)
    yield storage
    await storage.close()
    if request.param == "mongo":
        drop_database(url)
