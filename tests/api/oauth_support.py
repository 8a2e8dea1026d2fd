"""Helpers for the OAuth endpoint tests: clients, users, token requests, and codes minted on the app's loop."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
from starlette.testclient import TestClient

from fhirauth.services import Services

PASSWORD = "correct horse battery staple"
SECRET = "app-secret"
REDIRECT = "https://app.example/callback"
NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}
# RFC 7636 Appendix B.
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def put(api: TestClient, resource_type: str, id: str, **fields: Any) -> dict[str, Any]:
    response = api.put(f"/{resource_type}/{id}", json={"resourceType": resource_type, **fields})
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


def setup_world(api: TestClient, **client_fields: Any) -> None:
    """Client/app (secret, every grant, one redirect URI, refresh tokens) and User/ann."""
    client: dict[str, Any] = {
        "secret": SECRET,
        "grant_types": ["authorization_code", "password", "client_credentials", "refresh_token"],
        "auth": {
            "authorization_code": {"redirect_uri": REDIRECT, "refresh_token": True},
            "password": {"refresh_token": True},
        },
    }
    client.update(client_fields)
    put(api, "Client", "app", **client)
    put(api, "User", "ann", email="ann@example.org", password=PASSWORD)


def token(api: TestClient, headers: dict[str, str] | None = None, **form: str) -> httpx2.Response:
    """POST /auth/token as a form; the client authenticates in the body unless `headers` say otherwise."""
    if headers is None:
        form = {"client_id": "app", "client_secret": SECRET, **form}
    return api.post("/auth/token", data=form, headers=headers or {"Authorization": ""})


def password_tokens(api: TestClient, **extra: str) -> dict[str, Any]:
    response = token(api, grant_type="password", username="ann@example.org", password=PASSWORD, **extra)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def services(api: TestClient) -> Services:
    result: Services = api.app.state.services  # type: ignore[attr-defined]
    return result


def authorization_code(
    api: TestClient, user_id: str = "ann", *, client_id: str = "app", **params: str
) -> str:
    """A code minted through /auth/authorize's domain side for a fresh browser session, on the app's loop."""
    assert api.portal is not None
    app_services = services(api)
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "state": "st",
        **params,
    }

    async def mint() -> str:
        user = await app_services.resources.read("User", user_id)
        _, browser = await app_services.sessions.create_browser_session(user, max_age=3600, ip=None)
        request = await app_services.authorization.validate(query)
        return (await app_services.authorization.complete(request, user, browser)).location()

    location = api.portal.call(mint)
    (code,) = parse_qs(urlsplit(location).query)["code"]
    return code


def error_of(response: httpx2.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]
