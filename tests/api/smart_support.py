"""Helpers for the SMART App Launch tests: a SMART app (public) and an EHR app (confidential), users
linked to FHIR records through fhirUser, and the browser part of a launch driven over HTTP."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
from starlette.testclient import TestClient

from tests.api.conftest import NO_AUTH
from tests.api.pages_support import create_user, csrf_from, login

BASE = "http://testserver"
PUBLIC = "smart-app"
CONFIDENTIAL = "ehr-app"
EHR = "ehr"
EHR_SECRET = "ehr-secret"
APP_SECRET = "ehr-app-secret"
REDIRECT = "https://app.example/smart/callback"
# RFC 7636 Appendix B.
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
PKCE = {"code_challenge": CHALLENGE, "code_challenge_method": "S256"}


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def setup_smart(api: TestClient, **public_fields: Any) -> None:
    """Client/smart-app (public), Client/ehr-app (confidential), Client/ehr (registers launches),
    an allow-all AccessPolicy for the two apps (so what a token may do is decided by its scopes), and
    Users ann (Patient/p1), bob (Patient/p2), doc (Practitioner/d1) and eve (no fhirUser)."""
    code_flow = {"redirect_uri": REDIRECT, "refresh_token": True}
    clients: list[dict[str, Any]] = [
        {
            "id": PUBLIC,
            "name": "Smart App",
            "grant_types": ["authorization_code", "refresh_token"],
            "auth": {"authorization_code": code_flow},
            **public_fields,
        },
        {
            "id": CONFIDENTIAL,
            "secret": APP_SECRET,
            "grant_types": ["authorization_code", "client_credentials", "password", "refresh_token"],
            "auth": {"authorization_code": code_flow, "password": {"refresh_token": True}},
        },
        {"id": EHR, "secret": EHR_SECRET, "grant_types": ["basic"], "smart": {"launch_registration": True}},
    ]
    for client in clients:
        response = api.put(f"/Client/{client['id']}", json={"resourceType": "Client", **client})
        assert response.status_code == 201, response.text
    policy = {
        "resourceType": "AccessPolicy",
        "engine": "allow",
        "link": [{"resourceType": "Client", "id": PUBLIC}, {"resourceType": "Client", "id": CONFIDENTIAL}],
    }
    assert api.put("/AccessPolicy/smart-apps", json=policy).status_code == 201
    create_user(api, "ann", fhirUser={"resourceType": "Patient", "id": "p1"})
    create_user(api, "bob", fhirUser={"resourceType": "Patient", "id": "p2"})
    create_user(api, "doc", fhirUser={"resourceType": "Practitioner", "id": "d1"})
    create_user(api, "eve")


def authorize_query(**params: str) -> str:
    values = {
        "response_type": "code",
        "client_id": PUBLIC,
        "redirect_uri": REDIRECT,
        "state": "st-1",
        "aud": BASE,
        **PKCE,
        **params,
    }
    return urlencode({name: value for name, value in values.items() if value != ""})


def authorize(api: TestClient, **params: str) -> httpx2.Response:
    """GET /auth/authorize for the signed-in browser; Allow on the consent page if it is shown."""
    query = authorize_query(**params)
    return consented(api, api.get(f"/auth/authorize?{query}", follow_redirects=False, headers=NO_AUTH), query)


def consented(api: TestClient, response: httpx2.Response, query: str) -> httpx2.Response:
    """The answer to the authorization request `query`, past the consent page if it is shown."""
    if response.status_code == 200 and "/auth/consent" in response.text:
        response = api.post(
            "/auth/consent",
            data={"csrf": csrf_from(response), "query": query, "decision": "approve"},
            follow_redirects=False,
            headers=NO_AUTH,
        )
    return response


def redirect_params(response: httpx2.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    target = urlsplit(response.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == REDIRECT, response.headers["location"]
    return {name: values[0] for name, values in parse_qs(target.query).items()}


def sign_in(api: TestClient, user: str) -> None:
    assert login(api, f"{user}@example.org").status_code == 302


def code_for(api: TestClient, user: str, **params: str) -> str:
    sign_in(api, user)
    found = redirect_params(authorize(api, **params))
    assert "code" in found, found
    return found["code"]


def exchange(api: TestClient, code: str, client_id: str = PUBLIC, **extra: str) -> httpx2.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER,
        "client_id": client_id,
        **extra,
    }
    headers = basic(CONFIDENTIAL, APP_SECRET) if client_id == CONFIDENTIAL else NO_AUTH
    return api.post("/auth/token", data=form, headers=headers)


def smart_tokens(api: TestClient, user: str, scope: str, **params: str) -> dict[str, Any]:
    response = exchange(api, code_for(api, user, scope=scope, **params), params.get("client_id", PUBLIC))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def register_launch(api: TestClient, **context: Any) -> str:
    response = api.post(
        "/auth/smart/launch", json={"client": PUBLIC, **context}, headers=basic(EHR, EHR_SECRET)
    )
    assert response.status_code == 201, response.text
    launch: str = response.json()["launch"]
    return launch
