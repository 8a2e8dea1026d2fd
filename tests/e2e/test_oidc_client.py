"""Real OpenID Connect relying parties against a real `fhirauth serve`: authlib's client (its OpenID
app, as a Starlette site registers it, reading discovery) validating every ID token against the
published JWKS with authlib's own claim rules, and Chromium posting a form_post answer under the
pages' Content-Security-Policy.

The browser part of each flow (authorize → login page → back to authorize → the answer) is driven
over HTTP against the server's own login form, CSRF field included; the answer is never fetched.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx2
import pytest
from authlib.common.security import generate_token
from authlib.integrations.starlette_client import OAuth, StarletteOAuth2App
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import HybridIDToken, ImplicitIDToken
from joserfc import jwt
from joserfc.errors import InvalidClaimError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry
from playwright.sync_api import Page, Request, Route
from support.server import ROOT_CLIENT_SECRET, LiveServer

PASSWORD = "correct horse battery staple"
# Loopback redirect URIs count as secure transport for authlib (RFC 8252); nothing listens there.
REDIRECT = "http://127.0.0.1:9/callback"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_ACTION = re.compile(r'<form method="post" action="([^"]*)"')
LEEWAY = 120


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(workdir=Path(tmp_path_factory.mktemp("oidc-live"))) as live:
        with httpx2.Client(base_url=live.url, auth=("root", ROOT_CLIENT_SECRET)) as admin:
            resources: list[dict[str, Any]] = [
                # A public single-page app: code with PKCE, implicit and hybrid, refresh tokens.
                {
                    "resourceType": "Client",
                    "id": "spa",
                    "first_party": True,
                    "grant_types": ["authorization_code", "implicit"],
                    "auth": {
                        "authorization_code": {"redirect_uri": REDIRECT, "refresh_token": True},
                        "implicit": {"redirect_uri": REDIRECT, "access_token_expiration": 600},
                    },
                },
                {"resourceType": "User", "id": "ann", "email": "ann@example.org", "password": PASSWORD},
            ]
            for resource in resources:
                path = f"/{resource['resourceType']}/{resource['id']}"
                assert admin.put(path, json=resource).status_code == 201
        yield live


def relying_party(server: LiveServer, **client_kwargs: str) -> StarletteOAuth2App:
    """The app as a Starlette site registers it with authlib: everything else comes from discovery."""
    oauth = OAuth()
    oauth.register(
        "fhirauth",
        client_id="spa",
        server_metadata_url=f"{server.url}/.well-known/openid-configuration",
        client_kwargs={
            "scope": "openid",
            "code_challenge_method": "S256",
            "token_endpoint_auth_method": "none",
            **client_kwargs,
        },
    )
    app: StarletteOAuth2App = oauth.create_client("fhirauth")
    return app


def sign_in_and_authorize(server: LiveServer, authorization_url: str) -> str:
    """What a browser does: follow /auth/authorize to the login form, submit it, and return the final
    redirect to the client (never fetched)."""
    with httpx2.Client(base_url=server.url, follow_redirects=False) as browser:
        to_login = browser.get(authorization_url)
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
        back = browser.get(urljoin(server.url, signed_in.headers["location"]))
        assert back.status_code == 302, back.text
        location: str = back.headers["location"]
    assert location.startswith(REDIRECT)
    return location


def fragment_of(callback: str) -> dict[str, str]:
    parts = urlsplit(callback)
    assert parts.query == "", callback
    return {name: values[0] for name, values in parse_qs(parts.fragment).items()}


async def validated(
    app: StarletteOAuth2App, id_token: str, claims_class: type[ImplicitIDToken], **params: str
) -> dict[str, Any]:
    """What authlib's parse_id_token does (discovery's algorithms, the JWKS, the issuer), with the code
    or access token it leaves out handed to the claim class, so c_hash and at_hash are checked too."""
    metadata = await app.load_server_metadata()
    keys = KeySet.import_key_set(await app.fetch_jwk_set())
    registry = JWSRegistry(algorithms=metadata["id_token_signing_alg_values_supported"])
    decoded = jwt.decode(id_token, keys, registry=registry)
    options = {"iss": {"values": [metadata["issuer"]]}, "aud": {"values": ["spa"]}}
    claims = claims_class(decoded.claims, decoded.header, options, {"client_id": "spa", **params})
    claims.validate(leeway=LEEWAY)
    return dict(decoded.claims)


async def test_code_flow_with_pkce_and_nonce(server: LiveServer) -> None:
    app = relying_party(server)
    started = int(time.time())
    request = await app.create_authorization_url(REDIRECT)
    query = parse_qs(urlsplit(request["url"]).query)
    assert (query["scope"], query["nonce"], query["code_challenge_method"]) == (
        ["openid"],
        [request["nonce"]],
        ["S256"],
    )
    callback = sign_in_and_authorize(server, request["url"])
    params = parse_qs(urlsplit(callback).query)
    assert params["state"] == [request["state"]]
    token = await app.fetch_access_token(
        redirect_uri=REDIRECT, code=params["code"][0], code_verifier=request["code_verifier"]
    )
    # authlib's own check: JWKS signature, discovery's algorithms and issuer, nonce, at_hash (CodeIDToken).
    options = {"iss": {"values": [server.url]}, "aud": {"values": ["spa"]}}
    userinfo = await app.parse_id_token(token, nonce=request["nonce"], claims_options=options)
    assert (userinfo["sub"], userinfo["aud"], userinfo["iss"]) == ("ann", "spa", server.url)
    assert started - 1 <= userinfo["auth_time"] <= userinfo["iat"] <= int(time.time())
    assert userinfo["at_hash"] and userinfo["sid"]
    # A nonce other than the one sent is refused by the same check.
    with pytest.raises(InvalidClaimError):
        await app.parse_id_token(token, nonce="another-nonce")
    # The refresh: a new ID token for the same subject and sign-in, without the nonce (Core §12.2).
    async with httpx2.AsyncClient(base_url=server.url) as http:
        refreshed = (
            await http.post(
                "/auth/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": token["refresh_token"],
                    "client_id": "spa",
                },
            )
        ).json()
    renewed = await app.parse_id_token(refreshed, nonce=None)
    assert (renewed["sub"], renewed["auth_time"], renewed["sid"]) == (
        userinfo["sub"],
        userinfo["auth_time"],
        userinfo["sid"],
    )
    assert "nonce" not in renewed


async def test_hybrid_code_id_token_with_c_hash(server: LiveServer) -> None:
    app = relying_party(server)
    # authlib adds PKCE for response_type=code only; a public client must send it with any code.
    verifier = generate_token(48)
    request = await app.create_authorization_url(
        REDIRECT,
        response_type="code id_token",
        code_verifier=verifier,
        code_challenge=create_s256_code_challenge(verifier),
        code_challenge_method="S256",
    )
    answer = fragment_of(sign_in_and_authorize(server, request["url"]))
    assert set(answer) == {"code", "id_token", "state"}
    assert answer["state"] == request["state"]
    front = await validated(
        app, answer["id_token"], HybridIDToken, nonce=request["nonce"], code=answer["code"]
    )
    assert front["sub"] == "ann"
    # The c_hash is the code's: another code does not match it.
    with pytest.raises(InvalidClaimError):
        await validated(
            app, answer["id_token"], HybridIDToken, nonce=request["nonce"], code=answer["code"] + "x"
        )
    token = await app.fetch_access_token(
        redirect_uri=REDIRECT, code=answer["code"], code_verifier=request["code_verifier"]
    )
    back = await app.parse_id_token(token, nonce=request["nonce"])
    # Core §3.3.3.6: the token endpoint's ID token names the same issuer and subject.
    assert (back["iss"], back["sub"], back["auth_time"]) == (front["iss"], front["sub"], front["auth_time"])


async def test_implicit_id_token_token_with_at_hash(server: LiveServer) -> None:
    app = relying_party(server)
    request = await app.create_authorization_url(REDIRECT, response_type="id_token token")
    answer = fragment_of(sign_in_and_authorize(server, request["url"]))
    assert set(answer) == {"access_token", "token_type", "expires_in", "id_token", "state"}
    claims = await validated(
        app, answer["id_token"], ImplicitIDToken, nonce=request["nonce"], access_token=answer["access_token"]
    )
    assert (claims["sub"], claims["nonce"], claims["exp"] - claims["iat"]) == ("ann", request["nonce"], 600)
    with pytest.raises(InvalidClaimError):
        await validated(
            app, answer["id_token"], ImplicitIDToken, nonce=request["nonce"], access_token="another-token"
        )
    # The access token the ID token was hashed with is live, and ann's.
    async with httpx2.AsyncClient(base_url=server.url, auth=("root", ROOT_CLIENT_SECRET)) as root:
        introspected = (await root.post("/auth/introspect", data={"token": answer["access_token"]})).json()
    assert (introspected["active"], introspected["sub"], introspected["client_id"]) == (True, "ann", "spa")


async def test_discovery_is_what_the_relying_party_reads(server: LiveServer) -> None:
    metadata = await relying_party(server).load_server_metadata()
    assert metadata["issuer"] == server.url
    assert "code id_token token" in metadata["response_types_supported"]
    assert metadata["response_modes_supported"] == ["query", "fragment", "form_post"]
    assert metadata["end_session_endpoint"] == f"{server.url}/auth/logout"


# Chromium last: its sync API keeps an event loop running that the async tests above cannot share.


def test_form_post_submits_itself_in_a_browser_under_the_pages_policy(server: LiveServer, page: Page) -> None:
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text) if message.type == "error" else None)

    def client_app(route: Route) -> None:
        route.fulfill(status=200, content_type="text/html", body="<!doctype html><title>client</title>")

    page.route("http://127.0.0.1:9/**", client_app)
    params = {
        "client_id": "spa",
        "response_type": "code id_token",
        "response_mode": "form_post",
        "redirect_uri": REDIRECT,
        "scope": "openid",
        "nonce": "n-browser",
        "state": "st-browser",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }
    page.goto(f"{server.url}/auth/authorize?{urlencode(params)}")
    page.get_by_label("E-mail or username").fill("ann@example.org")
    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_request(lambda request: request.url == REDIRECT) as posted:
        page.get_by_role("button", name="Sign in").click()
    callback: Request = posted.value
    assert callback.method == "POST"
    assert callback.headers["content-type"] == "application/x-www-form-urlencoded"
    fields = {name: values[0] for name, values in parse_qs(callback.post_data or "").items()}
    assert set(fields) == {"code", "id_token", "state"}
    assert fields["state"] == "st-browser"
    assert refused == []
