"""Debian's Chromium under Playwright, and where the screenshots go."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page

CHROMIUM = "/usr/bin/chromium"
# Headless, offline-safe: no background fetches, updates, sync or QUIC to anywhere but the loopback server.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / "test-artifacts"


def artifact_name(name: str) -> str:
    """A file name from a test or step name such as `test_login[mongo-2]`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "page"


def screenshot(page: Page, name: str) -> Path:
    """A full-page screenshot in test-artifacts/<name>.png; returns its path."""
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    path = ARTIFACTS_DIR / f"{artifact_name(name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
