"""`fhirauth serve` tunes the garbage collector of its worker processes; the app as a library does not."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from fhirauth import collector
from fhirauth.app import create_app, create_served_app
from tests.api.conftest import settings_for


@pytest.fixture
def restored_collector() -> Iterator[None]:
    gc.unfreeze()
    threshold = gc.get_threshold()
    yield
    gc.set_threshold(*threshold)
    gc.unfreeze()


def test_a_served_app_collects_less_often_and_freezes_what_start_up_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restored_collector: None
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FHIRAUTH_STORAGE", f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setenv("FHIRAUTH_SECRET_KEY", "collector-test-secret")
    middle, oldest = gc.get_threshold()[1:]
    app = create_served_app()
    assert gc.get_threshold() == (collector.YOUNGEST_THRESHOLD, middle, oldest)
    assert gc.get_freeze_count() == 0
    with TestClient(app) as client:
        assert gc.get_freeze_count() > 10_000
        assert client.get("/health").json() == {"status": "ok"}


def test_the_app_as_a_library_leaves_the_collector_alone(tmp_path: Path, restored_collector: None) -> None:
    threshold = gc.get_threshold()
    with TestClient(create_app(settings_for(f"sqlite:///{tmp_path / 'x.db'}"))) as client:
        assert client.get("/health").status_code == 200
        assert gc.get_threshold() == threshold
        assert gc.get_freeze_count() == 0
