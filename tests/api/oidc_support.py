"""Helpers for the OpenID Connect tests: clients, the redirect's parameters, and ID tokens checked the
way a relying party checks them (signature against the published JWKS, then authlib's claim rules)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
from authlib.oidc.core import CodeIDToken, HybridIDToken, ImplicitIDToken
from authlib.oidc.core.util import create_half_hash
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import KeySet
from starlette.testclient import TestClient

from tests.api.conftest import NO_AUTH
from tests.api.pages_support import create_user, login

ISSUER = "http://testserver"
CB = "https://rp.example.org/cb"
CODE_CB = "https://code.example.org/cb"
IMPLICIT_CB = "https://implicit.example.org/cb"
THIRD_CB = "https://third.example.org/cb"
RP_SECRET = "rp-secret"
NONCE = "n-0S6_WzA2Mj"
# RFC 7636 Appendix B.
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
# Where each response type's answer goes by default (Core §3.1.2.5, §3.2.2.5, §3.3.2.5).
RESPONSE_TYPES = {
    "code": "query",
    "token": "fragment",
    "id_token": "fragment",
    "id_token token": "fragment",
    "code id_token": "fragment",
    "code token": "fragment",
    "code id_token token": "fragment",
}
_CLAIM_CLASSES = {"code": CodeIDToken, "implicit": ImplicitIDToken, "hybrid": HybridIDToken}


def put_client(api: TestClient, id: str, **fields: Any) -> None:
    response = api.put(f"/Client/{id}", json={"resourceType": "Client", **fields})
    assert response.status_code in (200, 201), response.text


def setup_clients(api: TestClient) -> None:
    """rp (every flow, first-party), code-only, implicit-only, a third party (consent), and User/ann."""
    put_client(
        api,
        "rp",
        first_party=True,
        secret=RP_SECRET,
        grant_types=["authorization_code", "implicit", "refresh_token"],
        auth={
            "authorization_code": {"redirect_uri": CB, "refresh_token": True, "access_token_expiration": 900},
            "implicit": {"redirect_uri": CB, "access_token_expiration": 600},
        },
    )
    put_client(
        api,
        "code-only",
        first_party=True,
        secret="code-secret",
        grant_types=["authorization_code"],
        # An implicit redirect URI without the implicit grant type: refusals of it go back to the client.
        auth={"authorization_code": {"redirect_uri": CODE_CB}, "implicit": {"redirect_uri": CODE_CB}},
    )
    put_client(
        api,
        "implicit-only",
        first_party=True,
        grant_types=["implicit"],
        auth={"implicit": {"redirect_uri": IMPLICIT_CB}},
    )
    put_client(
        api,
        "third",
        name="Third",
        secret="third-secret",
        grant_types=["authorization_code"],
        auth={"authorization_code": {"redirect_uri": THIRD_CB}},
    )
    create_user(api, "ann")


def authorize(api: TestClient, **params: str) -> httpx2.Response:
    return api.get(f"/auth/authorize?{urlencode(params)}", follow_redirects=False)


def rp_request(response_type: str, **extra: str) -> dict[str, str]:
    """An OpenID request of `rp` for `response_type`, with openid, a nonce and a state."""
    return {
        "client_id": "rp",
        "response_type": response_type,
        "redirect_uri": CB,
        "scope": "openid",
        "nonce": NONCE,
        "state": "st-1",
        **extra,
    }


def answer(location: str, target: str, where: str) -> dict[str, str]:
    """The parameters of a redirect to `target`, which must all be in `where` (query or fragment)."""
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == target, location
    inside, outside = (parts.query, parts.fragment) if where == "query" else (parts.fragment, parts.query)
    assert outside == "", location
    values = parse_qs(inside, keep_blank_values=True)
    assert all(len(v) == 1 for v in values.values()), location
    return {name: value[0] for name, value in values.items()}


def sign_in(api: TestClient, user: str = "ann") -> str:
    """Sign `user` in through the login page; the browser Session's id."""
    response = login(api, user)
    assert response.status_code == 302, response.text
    return browser_session_id(api)


def browser_session_id(api: TestClient) -> str:
    bundle = api.get("/Session", params={"type": "browser", "active": "true"}).json()
    ids = [entry["resource"]["id"] for entry in bundle["entry"]]
    assert len(ids) == 1, ids
    session_id: str = ids[0]
    return session_id


def half_hash(value: str, alg: str = "RS256") -> str:
    """at_hash / c_hash as authlib (the relying party's library) computes them for `alg`."""
    result: bytes = create_half_hash(value, alg)
    return result.decode("ascii")


def id_token_claims(
    api: TestClient,
    token: str,
    *,
    kind: str,
    now: datetime,
    client_id: str = "rp",
    alg: str = "RS256",
    **params: str,
) -> dict[str, Any]:
    """The claims of an ID token that verifies against /.well-known/jwks.json with `alg` and passes
    authlib's checks for `kind` (code, implicit or hybrid) with `params` (nonce, access_token, code,
    max_age); at_hash and c_hash are checked with the hash of the token's own `alg`."""
    keys = KeySet.import_key_set(api.get("/.well-known/jwks.json", headers=NO_AUTH).json())
    if alg == "EdDSA":
        # joserfc warns that RFC 9864 prefers "Ed25519"; relying parties know "EdDSA".
        with pytest.warns(SecurityWarning):
            decoded = jwt.decode(token, keys, algorithms=[alg])
    else:
        decoded = jwt.decode(token, keys, algorithms=[alg])
    assert decoded.header["alg"] == alg
    assert decoded.header["kid"] in {key["kid"] for key in keys.as_dict()["keys"]}
    claims_class = _CLAIM_CLASSES[kind]
    options = {"iss": {"essential": True, "value": ISSUER}, "aud": {"essential": True, "value": client_id}}
    claims = claims_class(decoded.claims, decoded.header, options, {"client_id": client_id, **params})
    claims.validate(now=int(now.timestamp()))
    return dict(decoded.claims)
