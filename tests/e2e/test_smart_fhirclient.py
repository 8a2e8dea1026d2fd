"""SMART on FHIR's own Python client (fhirclient 4.4) against a real `fhirauth serve`: discovery
through /metadata, a standalone patient launch (PKCE S256, aud), the launch context, reads and
refused writes through the client, and a refresh. The browser part (login, consent) is driven over
HTTP against the server's own HTML forms, CSRF fields included.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
import pytest
from fhirclient.client import FHIRClient
from fhirclient.server import FHIRPermissionDeniedException
from support.server import ROOT_CLIENT_SECRET, LiveServer

APP = "fhirclient-app"
PASSWORD = "correct horse battery staple"
# Loopback: nothing listens there; the test reads the redirect instead of following it.
REDIRECT = "http://127.0.0.1:9/smart-callback"
SCOPE = "openid fhirUser patient/User.rs offline_access"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_ACTION = re.compile(r'<form method="post" action="([^"]*)"')
_QUERY = re.compile(r'name="query" value="([^"]*)"')


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(workdir=Path(tmp_path_factory.mktemp("smart-live"))) as live:
        with httpx2.Client(base_url=live.url, auth=("root", ROOT_CLIENT_SECRET)) as admin:
            resources: list[dict[str, Any]] = [
                {
                    "resourceType": "Client",
                    "id": APP,
                    "name": "fhirclient demo",
                    "grant_types": ["authorization_code", "refresh_token"],
                    "scope": [
                        "launch",
                        "launch/patient",
                        "openid",
                        "fhirUser",
                        "offline_access",
                        "patient/*.rs",
                    ],
                    "auth": {"authorization_code": {"redirect_uri": REDIRECT, "refresh_token": True}},
                },
                {
                    "resourceType": "AccessPolicy",
                    "id": "fhirclient-app",
                    "engine": "allow",
                    "link": [{"resourceType": "Client", "id": APP}],
                },
                {
                    "resourceType": "User",
                    "id": "ann",
                    "email": "ann@example.org",
                    "password": PASSWORD,
                    "fhirUser": {"resourceType": "Patient", "id": "p1"},
                },
                {
                    "resourceType": "User",
                    "id": "bob",
                    "email": "bob@example.org",
                    "password": PASSWORD,
                    "fhirUser": {"resourceType": "Patient", "id": "p2"},
                },
            ]
            for resource in resources:
                path = f"/{resource['resourceType']}/{resource['id']}"
                assert admin.put(path, json=resource).status_code == 201, path
        yield live


def smart_client(server: LiveServer, **settings: Any) -> FHIRClient:
    return FHIRClient(
        settings={
            "app_id": APP,
            "api_base": f"{server.url}/",
            "redirect_uri": REDIRECT,
            "scope": SCOPE,
            **settings,
        }
    )


def browse(server: LiveServer, authorize_url: str) -> str:
    """What the user's browser does: sign in, allow on the consent page; the redirect to the app."""
    with httpx2.Client(base_url=server.url, follow_redirects=False) as browser:
        to_login = browser.get(authorize_url)
        if to_login.status_code == 302 and to_login.headers["location"].startswith(REDIRECT):
            return str(to_login.headers["location"])
        assert to_login.status_code == 302, to_login.text
        login_url = urljoin(server.url, to_login.headers["location"])
        form = browser.get(login_url)
        (csrf,) = _CSRF.findall(form.text)
        (action,) = _ACTION.findall(form.text)
        signed_in = browser.post(
            urljoin(login_url, html.unescape(action)),
            data={"csrf": csrf, "username": "ann@example.org", "password": PASSWORD},
        )
        assert signed_in.status_code == 302, signed_in.text
        consent = browser.get(urljoin(server.url, signed_in.headers["location"]))
        if consent.status_code == 200:
            assert "Read and search the selected patient&#39;s User records" in consent.text
            (csrf,) = _CSRF.findall(consent.text)
            (query,) = _QUERY.findall(consent.text)
            consent = browser.post(
                "/auth/consent", data={"csrf": csrf, "query": html.unescape(query), "decision": "approve"}
            )
        assert consent.status_code == 302, consent.text
        location = str(consent.headers["location"])
    assert location.startswith(REDIRECT), location
    return location


def test_a_standalone_patient_launch_with_fhirclient(server: LiveServer) -> None:
    client = smart_client(server)
    # 1. discovery: fhirclient reads the endpoints from /metadata's oauth-uris
    authorize_url = client.authorize_url
    config = httpx2.get(f"{server.url}/.well-known/smart-configuration").json()
    assert authorize_url.startswith(config["authorization_endpoint"] + "?")
    assert client.server.auth._token_uri == config["token_endpoint"]
    sent = {name: values[0] for name, values in parse_qs(urlsplit(authorize_url).query).items()}
    assert (sent["code_challenge_method"], sent["aud"]) == ("S256", f"{server.url}/")
    assert sent["scope"] == f"launch/patient {SCOPE}"
    # 2. the user signs in and allows; 3. fhirclient exchanges the code (with its PKCE verifier)
    client.handle_callback(browse(server, authorize_url))
    assert client.ready
    assert client.patient_id == "p1"
    context = client.launch_context
    assert context["scope"] == f"launch/patient {SCOPE}"
    assert context["token_type"] == "Bearer"
    assert context["fhirUser"] == "Patient/p1"
    # 4. a read through fhirclient: the patient's own User
    user = client.server.request_json("User/ann")
    assert (user["resourceType"], user["id"], user["email"]) == ("User", "ann", "ann@example.org")
    assert "password" not in user
    found = client.server.request_json("User?fhirUser.resourceType=Patient&fhirUser.id=p1")
    assert [entry["resource"]["id"] for entry in found["entry"]] == ["ann"]
    # 5. another patient's record, another type, and any write are refused by the scopes
    for path in ("User/bob", "Client/fhirclient-app"):
        with pytest.raises(FHIRPermissionDeniedException):
            client.server.request_json(path)
    with pytest.raises(FHIRPermissionDeniedException):
        client.server.put_json("User/ann", {**user, "displayName": "Ann"})
    # 6. a refresh keeps the patient and the scope
    assert client.reauthorize()
    assert client.patient_id == "p1"
    assert client.launch_context["scope"] == f"launch/patient {SCOPE}"
    assert client.server.request_json("User/ann")["id"] == "ann"


def test_a_scope_the_client_may_not_have_is_refused(server: LiveServer) -> None:
    client = smart_client(server, scope="patient/User.cruds")
    location = browse(server, client.authorize_url)
    error = parse_qs(urlsplit(location).query)
    assert error["error"] == ["invalid_scope"]
    with pytest.raises(Exception, match="Scope 'patient/User.cruds' is not allowed for this client"):
        client.handle_callback(location)
    assert not client.ready


def test_an_unknown_launch_id_is_refused(server: LiveServer) -> None:
    client = smart_client(server, launch_token="no-such-launch")
    location = browse(server, client.authorize_url)
    with pytest.raises(Exception, match="Unknown or expired 'launch'"):
        client.handle_callback(location)


def test_a_public_client_without_pkce_is_refused(server: LiveServer) -> None:
    client = smart_client(server)
    without_pkce = re.sub(r"&code_challenge(_method)?=[^&]*", "", client.authorize_url)
    assert "code_challenge" not in without_pkce
    location = browse(server, without_pkce)
    error = {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}
    assert (error["error"], error["error_description"]) == (
        "invalid_request",
        "Missing 'code_challenge': this client must use PKCE",
    )
