"""The demo app at /demo and its webhook receiver are served only when FHIRAUTH_DEMO asks for them, and a
production server refuses to start with it."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from fhirauth.app import create_app
from tests.api.conftest import ROOT, settings_for

OTPAUTH = "otpauth://totp/fhirauth%20demo:ann%40example.org?secret=JBSWY3DPEHPK3PXP&issuer=fhirauth%20demo"
DEMO_REQUESTS = [
    ("GET", "/demo", None),
    ("GET", "/demo/auth", None),
    ("GET", "/demo/demo.js", None),
    ("GET", "/demo/demo.css", None),
    ("POST", "/demo/qr", OTPAUTH.encode()),
    ("POST", "/demo/webhook/two-factor-confirmation", b'{"user": {"id": "ann"}, "token": "123456"}'),
]


def test_by_default_every_demo_route_is_404() -> None:
    with TestClient(create_app(settings_for("sqlite://:memory:")), headers={"Authorization": ROOT}) as client:
        for method, path, body in DEMO_REQUESTS:
            response = client.request(method, path, content=body)
            assert response.status_code == 404, path
            assert response.json()["issue"][0]["code"] == "not-found", path


def test_asked_for_the_demo_is_served() -> None:
    with TestClient(create_app(settings_for("sqlite://:memory:", demo=True))) as client:
        page = client.get("/demo")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert client.get("/demo/auth").text == page.text
        assert client.get("/demo/demo.js").headers["content-type"] == "text/javascript; charset=utf-8"
        assert client.get("/demo/demo.css").headers["content-type"] == "text/css; charset=utf-8"
        qr = client.post("/demo/qr", content=OTPAUTH)
        assert (qr.status_code, qr.headers["content-type"]) == (200, "image/svg+xml")
        received = client.post(
            "/demo/webhook/two-factor-confirmation",
            json={"user": {"id": "ann"}, "token": "123456"},
            headers={"Authorization": ROOT},
        )
        assert (received.status_code, received.json()) == (200, {})


async def test_production_refuses_to_start_with_the_demo() -> None:
    app = create_app(settings_for("sqlite://:memory:", demo=True, env="production"))
    with pytest.raises(SystemExit) as refused:
        async with app.router.lifespan_context(app):
            pass
    assert str(refused.value) == (
        "fhirauth: FHIRAUTH_DEMO must not be set with FHIRAUTH_ENV=production "
        "(the demo's webhook receiver logs two-factor codes)"
    )


def test_production_without_the_demo_starts_and_serves_no_demo() -> None:
    with TestClient(create_app(settings_for("sqlite://:memory:", env="production"))) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/demo").status_code == 404
