"""authlib's OpenID client (registered from discovery, as a Starlette site does) asking a real
`fhirauth serve` for the password grant with the openid scope, the way a Keycloak direct-grant client
does: the response's ID token passes authlib's own parse_id_token (the JWKS signature, the
discovered issuer and algorithms, at_hash), and its amr says password, or password and TOTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from authlib.integrations.starlette_client import OAuth, StarletteOAuth2App
from support.server import ROOT_CLIENT_SECRET, LiveServer

from fhirauth.twofactor import totp

PASSWORD = "correct horse battery staple"
SECRET = totp.new_secret()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(workdir=Path(tmp_path_factory.mktemp("password-oidc-live"))) as live:
        with httpx2.Client(base_url=live.url, auth=("root", ROOT_CLIENT_SECRET)) as admin:
            resources: list[dict[str, Any]] = [
                {
                    "resourceType": "Client",
                    "id": "direct",
                    "secret": "direct-secret",
                    "grant_types": ["password"],
                },
                {"resourceType": "User", "id": "ann", "email": "ann@example.org", "password": PASSWORD},
                {
                    "resourceType": "User",
                    "id": "bob",
                    "email": "bob@example.org",
                    "password": PASSWORD,
                    "twoFactor": {"enabled": True, "secretKey": SECRET},
                },
            ]
            for resource in resources:
                path = f"/{resource['resourceType']}/{resource['id']}"
                assert admin.put(path, json=resource).status_code == 201
        yield live


def relying_party(server: LiveServer) -> StarletteOAuth2App:
    oauth = OAuth()
    oauth.register(
        "fhirauth",
        client_id="direct",
        client_secret="direct-secret",
        server_metadata_url=f"{server.url}/.well-known/openid-configuration",
        client_kwargs={"scope": "openid"},
    )
    app: StarletteOAuth2App = oauth.create_client("fhirauth")
    return app


async def test_the_password_grant_id_token_passes_authlibs_checks(server: LiveServer) -> None:
    app = relying_party(server)
    started = int(time.time())
    token = await app.fetch_access_token(username="ann@example.org", password=PASSWORD)
    options = {"iss": {"values": [server.url]}, "aud": {"values": ["direct"]}}
    claims = await app.parse_id_token(token, nonce=None, claims_options=options)
    assert (claims["sub"], claims["aud"], claims["amr"], claims["acr"]) == (
        "ann",
        "direct",
        ["pwd"],
        "urn:fhirauth:acr:pwd",
    )
    assert started - 1 <= claims["auth_time"] <= claims["iat"] <= int(time.time())
    assert claims["at_hash"] and claims["sid"]


async def test_with_a_totp_code_the_id_token_says_mfa(server: LiveServer) -> None:
    app = relying_party(server)
    code = totp.code_at(SECRET, totp.step_at(time.time()))
    token = await app.fetch_access_token(username="bob@example.org", password=PASSWORD, totp=code)
    claims = await app.parse_id_token(token, nonce=None)
    assert (claims["sub"], claims["amr"], claims["acr"]) == (
        "bob",
        ["pwd", "otp", "mfa"],
        "urn:fhirauth:acr:mfa",
    )
