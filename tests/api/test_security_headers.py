"""Browser-facing defences: CSP with a nonce on every page, no framing, no referrer, HSTS on https."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from fhirauth.app import create_app
from tests.api.conftest import NO_AUTH, ROOT, settings_for

PAGES = ["/auth/login", "/auth/signup", "/auth/logout", "/auth/authorize?client_id=nobody", "/demo"]


@pytest.fixture
def demo_api(storage_url: str) -> Iterator[TestClient]:
    """The app with the demo page (FHIRAUTH_DEMO), one of the pages checked."""
    app = create_app(settings_for(storage_url, demo=True))
    with TestClient(app, raise_server_exceptions=False, headers={"Authorization": ROOT}) as client:
        yield client


def test_every_page_has_a_strict_policy_with_a_fresh_nonce(demo_api: TestClient) -> None:
    nonces = set()
    for path in PAGES:
        res = demo_api.get(path, headers=NO_AUTH)
        policy = res.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy, path
        assert "object-src 'none'" in policy and "base-uri 'none'" in policy, path
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, path
        assert res.headers["x-frame-options"] == "DENY", path
        assert res.headers["referrer-policy"] == "no-referrer", path
        assert res.headers["x-content-type-options"] == "nosniff", path
        assert "strict-transport-security" not in res.headers, path
        nonce = re.search(r"'nonce-([^']+)'", policy)
        if nonce:
            nonces.add(nonce.group(1))
        # No inline script or style anywhere without the nonce of this response.
        for tag in re.findall(r"<script\b[^>]*>", res.text):
            assert "src=" in tag or (nonce and f'nonce="{nonce.group(1)}"' in tag), (path, tag)
        assert not re.search(r"\sstyle=", res.text), path
        assert not re.search(r"\son[a-z]+=", res.text), path
    assert len(nonces) == 4  # every HTML page but the static demo page carries its own nonce


def test_api_answers_get_the_strictest_policy(api: TestClient) -> None:
    for res in (api.get("/User"), api.get("/User", headers=NO_AUTH), api.get("/health")):
        assert (
            res.headers["content-security-policy"]
            == "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
        )
        assert res.headers["x-frame-options"] == "DENY"


def test_theme_stylesheet_origin_is_allowed(api: TestClient) -> None:
    api.put(
        "/AuthConfig/app",
        json={"resourceType": "AuthConfig", "theme": {"styleUrl": "https://cdn.example.org/x.css"}},
    )
    policy = api.get("/auth/login", headers=NO_AUTH).headers["content-security-policy"]
    assert "style-src 'self' https://cdn.example.org;" in policy


def test_hsts_on_https(storage_url: str) -> None:
    app = create_app(settings_for(storage_url, base_url="https://auth.example.org"))
    with TestClient(app, base_url="https://auth.example.org") as client:
        res = client.get("/health")
        assert res.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
        assert client.get("/auth/login").headers["strict-transport-security"].startswith("max-age=")
