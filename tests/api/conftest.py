from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from fhirauth.app import create_app
from fhirauth.clock import ManualClock
from fhirauth.settings import Settings

ROOT = "Basic " + base64.b64encode(b"root:secret").decode()


def settings_for(storage: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "storage": storage,
        "secret_key": "test-master-secret",
        "root_client_secret": "secret",
        "base_url": "http://testserver",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "mongo"])
def storage_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return "sqlite://:memory:"
    mongo_uri: str = request.getfixturevalue("mongo_uri")
    return f"{mongo_uri.rstrip('/')}/t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def api(storage_url: str, clock: ManualClock) -> Iterator[TestClient]:
    app = create_app(settings_for(storage_url), clock=clock)
    with TestClient(app, raise_server_exceptions=False, headers={"Authorization": ROOT}) as client:
        yield client


NO_AUTH = {"Authorization": ""}
