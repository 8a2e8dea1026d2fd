"""A real OAuth client library (authlib's AsyncOAuth2Client, on httpx2) against a real `fhirauth serve`.

The browser part of the code and implicit flows (authorize → login page → back to authorize →
redirect) is driven over HTTP against the server's own HTML login form, CSRF field included.
"""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
import pytest
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, InvalidClaimError
from joserfc.jwk import KeySet
from support.server import ROOT_CLIENT_SECRET, SECRET_KEY, LiveServer, LiveServerFactory

from fhirauth.auth.keys import KEY, KIND
from fhirauth.clock import system_clock
from fhirauth.storage.backends import open_storage

PASSWORD = "correct horse battery staple"
SECRET = "app-secret"
# Loopback redirect URIs count as secure transport for authlib (RFC 8252); nothing listens there.
REDIRECT = "http://127.0.0.1:9/callback"
# RFC 7636 Appendix B.
APPENDIX_B_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
APPENDIX_B_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_ACTION = re.compile(r'<form method="post" action="([^"]*)"')


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(workdir=Path(tmp_path_factory.mktemp("oauth-live"))) as live:
        with httpx2.Client(base_url=live.url, auth=("root", ROOT_CLIENT_SECRET)) as admin:
            resources: list[dict[str, Any]] = [
                {
                    "resourceType": "Client",
                    "id": "app",
                    "secret": SECRET,
                    "grant_types": ["password", "client_credentials", "refresh_token"],
                    "auth": {
                        "password": {"refresh_token": True},
                        "client_credentials": {"token_format": "jwt", "access_token_expiration": 300},
                    },
                },
                {
                    "resourceType": "Client",
                    "id": "spa",
                    "first_party": True,
                    "grant_types": ["code", "implicit"],
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


def app_client(server: LiveServer, **options: Any) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(client_id="app", client_secret=SECRET, base_url=server.url, **options)


def sign_in_and_authorize(server: LiveServer, authorization_url: str) -> str:
    """What a browser does: follow /auth/authorize to the login form, submit it, and return the final
    redirect to the client (never fetched)."""
    with httpx2.Client(base_url=server.url, follow_redirects=False) as browser:
        to_login = browser.get(authorization_url)
        assert to_login.status_code == 302, to_login.text
        login_url = urljoin(server.url, to_login.headers["location"])
        form = browser.get(login_url)
        assert form.status_code == 200
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


async def userinfo(server: LiveServer, access_token: str) -> httpx2.Response:
    async with httpx2.AsyncClient(base_url=server.url) as http:
        return await http.get("/auth/userinfo", headers={"Authorization": f"Bearer {access_token}"})


async def test_password_grant(server: LiveServer) -> None:
    async with app_client(server) as client:
        token = await client.fetch_token("/auth/token", username="ann@example.org", password=PASSWORD)
    assert (token["token_type"], token["expires_in"]) == ("Bearer", 3600)
    assert token["userinfo"]["id"] == "ann"
    assert "password" not in token["userinfo"]
    assert (await userinfo(server, token["access_token"])).json()["email"] == "ann@example.org"


async def test_wrong_password_is_an_oauth_error(server: LiveServer) -> None:
    async with app_client(server) as client:
        with pytest.raises(OAuthError) as caught:
            await client.fetch_token("/auth/token", username="ann@example.org", password="wrong")
    assert (caught.value.error, caught.value.description) == ("invalid_grant", "Invalid username or password")


async def test_refresh_rotation(server: LiveServer) -> None:
    async with app_client(server) as client:
        first = await client.fetch_token("/auth/token", username="ann@example.org", password=PASSWORD)
        second = await client.refresh_token("/auth/token", refresh_token=first["refresh_token"])
        assert second["refresh_token"] != first["refresh_token"]
        assert (await userinfo(server, second["access_token"])).status_code == 200
        assert (await userinfo(server, first["access_token"])).status_code == 401
        with pytest.raises(OAuthError) as caught:
            await client.refresh_token("/auth/token", refresh_token=first["refresh_token"])
    assert caught.value.error == "invalid_grant"


async def test_client_credentials_jwt_verifies_with_the_published_jwks(server: LiveServer) -> None:
    async with app_client(server) as client:
        token = await client.fetch_token("/auth/token", grant_type="client_credentials")
        jwks = (await client.get("/.well-known/jwks.json")).json()
    assert token["expires_in"] == 300
    decoded = jwt.decode(token["access_token"], KeySet.import_key_set(jwks), algorithms=["RS256"])
    registry = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": server.url},
        aud={"essential": True, "value": "app"},
        sub={"essential": True, "value": "app"},
        exp={"essential": True},
    )
    registry.validate(decoded.claims)
    assert decoded.claims["exp"] - decoded.claims["iat"] == 300
    with pytest.raises(InvalidClaimError):
        jwt.JWTClaimsRegistry(aud={"essential": True, "value": "someone-else"}).validate(decoded.claims)
    with pytest.raises(ExpiredTokenError):
        jwt.JWTClaimsRegistry(now=decoded.claims["exp"] + 1, exp={"essential": True}).validate(decoded.claims)


async def test_introspection_and_revocation(server: LiveServer) -> None:
    async with app_client(server) as client:
        token = await client.fetch_token("/auth/token", username="ann@example.org", password=PASSWORD)
        active = (await client.introspect_token("/auth/introspect", token=token["access_token"])).json()
        assert (active["active"], active["sub"], active["client_id"], active["iss"]) == (
            True,
            "ann",
            "app",
            server.url,
        )
        revoked = await client.revoke_token(
            "/auth/revoke", token=token["refresh_token"], token_type_hint="refresh_token"
        )
        assert revoked.status_code == 200
        after = (await client.introspect_token("/auth/introspect", token=token["access_token"])).json()
        assert after == {"active": False}
        unknown = await client.revoke_token("/auth/revoke", token="never-issued")
        assert unknown.status_code == 200


async def test_authorization_code_with_pkce_through_the_login_page(server: LiveServer) -> None:
    async with AsyncOAuth2Client(
        client_id="spa",
        token_endpoint_auth_method="none",
        redirect_uri=REDIRECT,
        scope="openid",
        code_challenge_method="S256",
        base_url=server.url,
    ) as client:
        url, state = client.create_authorization_url(
            f"{server.url}/auth/authorize", code_verifier=APPENDIX_B_VERIFIER
        )
        assert parse_qs(urlsplit(url).query)["code_challenge"] == [APPENDIX_B_CHALLENGE]
        callback = sign_in_and_authorize(server, url)
        assert parse_qs(urlsplit(callback).query)["state"] == [state]
        token = await client.fetch_token(
            "/auth/token", authorization_response=callback, code_verifier=APPENDIX_B_VERIFIER
        )
        assert (token["scope"], token["userinfo"]["id"]) == ("openid", "ann")
        assert (await userinfo(server, token["access_token"])).status_code == 200
        refreshed = await client.refresh_token("/auth/token", refresh_token=token["refresh_token"])
        assert (await userinfo(server, refreshed["access_token"])).status_code == 200
        # The code is single use: a replay is refused and revokes what the first exchange issued.
        with pytest.raises(OAuthError) as caught:
            await client.fetch_token(
                "/auth/token", authorization_response=callback, code_verifier=APPENDIX_B_VERIFIER
            )
        assert caught.value.error == "invalid_grant"
        assert (await userinfo(server, refreshed["access_token"])).status_code == 401


async def test_authorization_code_with_a_wrong_verifier_is_refused(server: LiveServer) -> None:
    async with AsyncOAuth2Client(
        client_id="spa",
        token_endpoint_auth_method="none",
        redirect_uri=REDIRECT,
        code_challenge_method="S256",
        base_url=server.url,
    ) as client:
        url, _ = client.create_authorization_url(
            f"{server.url}/auth/authorize", code_verifier=generate_token(48)
        )
        callback = sign_in_and_authorize(server, url)
        with pytest.raises(OAuthError) as caught:
            await client.fetch_token(
                "/auth/token", authorization_response=callback, code_verifier=generate_token(48)
            )
    assert (caught.value.error, caught.value.description) == (
        "invalid_grant",
        "'code_verifier' does not match the code challenge",
    )


async def test_implicit_flow_through_the_login_page(server: LiveServer) -> None:
    async with AsyncOAuth2Client(client_id="spa", redirect_uri=REDIRECT, base_url=server.url) as client:
        url, state = client.create_authorization_url(f"{server.url}/auth/authorize", response_type="token")
        callback = sign_in_and_authorize(server, url)
        token = client.token_from_fragment(callback)
    assert (token["token_type"], token["expires_in"], token["state"]) == ("bearer", "600", state)
    assert (await userinfo(server, token["access_token"])).json()["id"] == "ann"


async def test_workers_starting_together_publish_one_signing_key(
    live_server_factory: LiveServerFactory,
) -> None:
    server = live_server_factory(workers=2)
    # A fresh connection per request, so the kernel hands them to both workers.
    limits = httpx2.Limits(max_keepalive_connections=0)
    async with httpx2.AsyncClient(base_url=server.url, limits=limits) as http:
        answers = await asyncio.gather(*(http.get("/.well-known/jwks.json") for _ in range(40)))
    kids = {tuple(key["kid"] for key in answer.json()["keys"]) for answer in answers}
    storage = open_storage(server.storage, system_clock)
    await storage.start(())
    record = await storage.record_get(KIND, KEY)
    await storage.close()
    assert record is not None
    # One key per algorithm (RS256, ES256, EdDSA), the same from every worker.
    sets = [record.document[field] for field in ("keys", "es256Keys", "eddsaKeys")]
    assert kids == {tuple(entry["kid"] for entries in sets for entry in entries)}
    assert [len(entries) for entries in sets] == [1, 1, 1]
    assert SECRET_KEY not in str(record.document)
