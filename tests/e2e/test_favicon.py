"""The site icon: browsers ask every page's origin for it, and a 404 is a console error on every page."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from playwright.sync_api import ConsoleMessage, Page
from support.server import REPO_ROOT, LiveServer

ICO_MAGIC = b"\x00\x00\x01\x00"


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer() as live:
        yield live


def test_favicon_ico_is_served_with_a_long_cache_lifetime(server: LiveServer) -> None:
    response = httpx2.get(f"{server.url}/favicon.ico")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/x-icon"
    assert response.headers["cache-control"] == "public, max-age=604800"
    assert response.content == (REPO_ROOT / "fhirauth" / "static" / "favicon.ico").read_bytes()
    assert response.content.startswith(ICO_MAGIC)


def test_the_svg_icon_the_pages_link_is_served(server: LiveServer) -> None:
    response = httpx2.get(f"{server.url}/static/favicon.svg")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    assert response.content.startswith(b"<svg ")


def test_the_login_page_loads_its_icon_without_a_console_error(server: LiveServer, page: Page) -> None:
    errors: list[str] = []
    page.on("console", lambda message: _collect_error(message, errors))
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    # Playwright's own network events leave out the icon, which the browser fetches for the tab.
    icons: dict[str, int] = {}
    finished: set[str] = set()
    network = page.context.new_cdp_session(page)
    network.send("Network.enable")
    network.on("Network.responseReceived", lambda event: _record_icon(event, icons))
    network.on("Network.loadingFinished", lambda event: finished.add(event["requestId"]))
    network.on("Network.loadingFailed", lambda event: finished.add(event["requestId"]))
    page.goto(f"{server.url}/auth/login")
    deadline = time.monotonic() + 10
    while not (icons and icons.keys() <= finished) and time.monotonic() < deadline:
        page.wait_for_timeout(20)
    assert sorted(icons.values()) == [200], icons
    assert errors == []


def _record_icon(event: dict[str, Any], icons: dict[str, int]) -> None:
    if "favicon" in event["response"]["url"]:
        icons[event["requestId"]] = event["response"]["status"]


def _collect_error(message: ConsoleMessage, errors: list[str]) -> None:
    if message.type == "error":
        errors.append(f"{message.text} ({message.location.get('url')})")
