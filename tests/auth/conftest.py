"""Domain services over real storage (in-memory SQLite and MongoDB) for the OAuth unit tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from support.mongo import drop_database, with_database

from fhirauth.app import INDEXES, build_services
from fhirauth.clock import ManualClock
from fhirauth.services import Services
from fhirauth.settings import Settings
from fhirauth.storage.backends import open_storage

BASE_URL = "http://issuer.test"


def oauth_settings(storage: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        storage=storage,
        secret_key="oauth-test-master-secret",
        root_client_secret="secret",
        base_url=BASE_URL,
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["sqlite", "mongo"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every backend; a module whose rules do not touch storage semantics overrides this with one."""
    return str(request.param)


@pytest.fixture
async def services(
    backend: str, request: pytest.FixtureRequest, clock: ManualClock
) -> AsyncIterator[Services]:
    if backend == "sqlite":
        url = "sqlite://:memory:"
    else:
        url = with_database(request.getfixturevalue("mongo_uri"), f"oauth{uuid.uuid4().hex[:12]}")
    storage = open_storage(url, clock)
    await storage.start(INDEXES)
    services = build_services(oauth_settings(url), storage, clock)
    yield services
    await services.keys.close()
    await storage.close()
    if backend == "mongo":
        drop_database(url)
