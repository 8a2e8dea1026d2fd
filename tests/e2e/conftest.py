"""End-to-end fixtures: live `fhirauth serve` processes and a real Chromium."""

from __future__ import annotations

import os
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from support.browser import CHROMIUM, CHROMIUM_ARGS, screenshot
from support.mongo import drop_database, with_database
from support.server import LiveServer, LiveServerFactory, StorageFor

E2E_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def live_server_factory(tmp_path: Path) -> Iterator[LiveServerFactory]:
    """`start(storage=None, workers=1, seed=(), env=None, ready_statuses=(200,))` → a running LiveServer.

    Without `storage` the server gets its own SQLite file. Every server started is stopped at teardown.
    """
    servers: list[LiveServer] = []

    def start(
        *,
        storage: str | None = None,
        workers: int = 1,
        seed: Sequence[str | os.PathLike[str]] = (),
        env: Mapping[str, str] | None = None,
        ready_statuses: Collection[int] = (200,),
    ) -> LiveServer:
        server = LiveServer(
            storage=storage,
            workers=workers,
            seed=seed,
            env=env,
            workdir=tmp_path / f"server{len(servers)}",
            ready_statuses=ready_statuses,
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def storage_for(request: pytest.FixtureRequest) -> Iterator[StorageFor]:
    """`storage_for("sqlite")` → None (the server's own file); `storage_for("mongo")` → a fresh database.

    The Mongo server is asked for only when a test uses it, so SQLite-only runs never start one.
    """
    databases: list[str] = []

    def storage(backend: str) -> str | None:
        if backend == "sqlite":
            return None
        assert backend == "mongo", f"unknown backend {backend!r}"
        mongo_uri: str = request.getfixturevalue("mongo_uri")
        databases.append(with_database(mongo_uri, f"e2e{uuid.uuid4().hex[:12]}"))
        return databases[-1]

    yield storage
    for database in databases:
        drop_database(database)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium, shared by the tests of one module.

    Not session-wide: the sync API keeps its own event loop marked as running while it is alive, and
    pytest-asyncio refuses to run async tests under it. So a module that uses the browser keeps its
    async tests (if any) before its first browser test, or in another module.
    """
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page in a fresh context (no cookies shared between tests); screenshotted at teardown."""
    context = browser.new_context()
    page = context.new_page()
    yield page
    screenshot(page, request.node.name)
    context.close()
