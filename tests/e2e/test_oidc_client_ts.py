"""oidc-client-ts 3 (the npm registry's browser OpenID client) in Chromium against `fhirauth serve`:
code flow with PKCE, the UserInfo claims loaded by the library (a cross-origin fetch), a silent
renew (prompt=none in a hidden iframe, whose 302 lands on the relying party's own page), and the
sign-out through end_session_endpoint.

The relying party is a static site on another loopback port (rp_site.py); the library does not check
the ID token's signature, so the test checks it against the published JWKS.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from playwright.sync_api import Page, expect
from rp_site import RelyingParty, relying_party
from support.server import ROOT_CLIENT_SECRET, LiveServer, LiveServerFactory

PASSWORD = "correct horse battery staple"
ACR_PWD = "urn:fhirauth:acr:pwd"


@pytest.fixture
def server(live_server_factory: LiveServerFactory) -> LiveServer:
    return live_server_factory()


@pytest.fixture
def rp(server: LiveServer, tmp_path: Path) -> Iterator[RelyingParty]:
    with relying_party(
        tmp_path / "rp", server.url, "spa", scope="openid profile email", loadUserInfo=True
    ) as site:
        with httpx2.Client(base_url=server.url, auth=("root", ROOT_CLIENT_SECRET)) as api:
            for path, body in {
                # A public client (no secret): PKCE, and no refresh token, so a renew needs the iframe.
                "/Client/spa": {
                    "resourceType": "Client",
                    "first_party": True,
                    "grant_types": ["authorization_code"],
                    "auth": {
                        "authorization_code": {"redirect_uri": [site.callback, site.silent], "pkce": True}
                    },
                    "post_logout_redirect_uris": [site.signed_out],
                },
                "/User/ann": {
                    "resourceType": "User",
                    "email": "ann@example.org",
                    "password": PASSWORD,
                    "name": {"givenName": "Ann", "familyName": "Lee"},
                },
            }.items():
                response = api.put(path, json=body)
                assert response.status_code in (200, 201), response.text
        yield site


def outcome(page: Page, title: str) -> Any:
    expect(page).to_have_title(title)
    return page.evaluate("window.outcome")


def verified_claims(server: LiveServer, id_token: str) -> dict[str, Any]:
    keys = KeySet.import_key_set(httpx2.get(f"{server.url}/.well-known/jwks.json").json())
    decoded = jwt.decode(id_token, keys, algorithms=["RS256"])
    assert decoded.claims["iss"] == server.url
    assert decoded.claims["aud"] == "spa"
    return dict(decoded.claims)


def active_browser_sessions(server: LiveServer) -> int:
    with httpx2.Client(base_url=server.url, auth=("root", ROOT_CLIENT_SECRET)) as api:
        total: int = api.get("/Session", params={"type": "browser", "active": "true"}).json()["total"]
    return total


def test_sign_in_silent_renew_and_sign_out(server: LiveServer, rp: RelyingParty, page: Page) -> None:
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    # 1. signinRedirect: the login page, then the callback page with the user
    page.goto(rp.url("index.html"))
    page.evaluate("() => { mgr.signinRedirect(); }")
    expect(page.get_by_label("E-mail or username")).to_be_visible()
    page.get_by_label("E-mail or username").fill("ann@example.org")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    user = outcome(page, "signed in")
    authorize_requests = [url for url in seen if url.startswith(f"{server.url}/auth/authorize")]
    first = parse_qs(urlsplit(authorize_requests[0]).query)
    assert (first["code_challenge_method"], first["response_type"]) == (["S256"], ["code"])
    claims = verified_claims(server, user["id_token"])
    assert (claims["sub"], claims["amr"], claims["acr"]) == ("ann", ["pwd"], ACR_PWD)
    # The profile joins the ID token's claims and UserInfo's (loadUserInfo, a cross-origin fetch).
    profile = user["profile"]
    assert (profile["sub"], profile["email"], profile["email_verified"], profile["name"]) == (
        "ann",
        "ann@example.org",
        False,
        "Ann Lee",
    )
    assert "refresh_token" not in user or user["refresh_token"] is None

    # 2. signinSilent: prompt=none in a hidden iframe, answered by a redirect to silent.html
    renewed = page.evaluate("mgr.signinSilent().then((u) => JSON.parse(JSON.stringify(u)))")
    authorize_requests = [url for url in seen if url.startswith(f"{server.url}/auth/authorize")]
    silent = parse_qs(urlsplit(authorize_requests[-1]).query)
    assert silent["prompt"] == ["none"]
    assert silent["redirect_uri"] == [rp.silent]
    assert renewed["access_token"] != user["access_token"]
    renewed_claims = verified_claims(server, renewed["id_token"])
    assert (renewed_claims["sub"], renewed_claims["sid"], renewed_claims["auth_time"]) == (
        "ann",
        claims["sid"],
        claims["auth_time"],
    )

    # 3. signoutRedirect: end_session_endpoint with the ID token as hint, back to signed-out.html
    page.evaluate("() => { mgr.signoutRedirect({state: {from: 'test'}}); }")
    signed_out = outcome(page, "signed out")
    (logout,) = [url for url in seen if url.startswith(f"{server.url}/auth/logout")]
    asked = parse_qs(urlsplit(logout).query)
    assert asked["id_token_hint"] == [renewed["id_token"]]
    assert asked["post_logout_redirect_uri"] == [rp.signed_out]
    # Bound to this sign-in by the hint: no confirmation page, straight back with the state.
    assert parse_qs(urlsplit(page.url).query)["state"] == asked["state"]
    assert signed_out["userState"] == {"from": "test"}
    assert active_browser_sessions(server) == 0

    # 4. the sign-in is over: a silent renew now hears login_required
    failed = page.evaluate("mgr.signinSilent().then(() => 'renewed', (error) => error.error)")
    assert failed == "login_required"
