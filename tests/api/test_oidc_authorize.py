"""/auth/authorize as an OpenID provider: the response types (each allowed by the client's grant types),
nonce and openid rules, the response modes (form_post included), and the ID tokens it returns.

Core §3.1.2, §3.2.2, §3.3.2; OAuth 2.0 Multiple Response Types §3, §5; Form Post Response Mode §2.
These are rules of the request, not of storage: SQLite only (test_oidc_prompt.py and
test_oidc_tokens.py cover what is stored, on both backends).
"""

from __future__ import annotations

import html
import re

import httpx2
import pytest
from starlette.testclient import TestClient

from fhirauth.clock import ManualClock
from tests.api.oidc_support import (
    CB,
    CHALLENGE,
    CODE_CB,
    IMPLICIT_CB,
    ISSUER,
    NONCE,
    RESPONSE_TYPES,
    RP_SECRET,
    answer,
    authorize,
    half_hash,
    id_token_claims,
    put_client,
    rp_request,
    setup_clients,
    sign_in,
)

_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
_FORM = re.compile(r'<form method="post" action="([^"]*)"')
_SCRIPT_NONCE = re.compile(r'<script nonce="([^"]+)">')
SIGNED_IN_AT = 1767225600  # the ManualClock's start, 2026-01-01T00:00:00Z


@pytest.fixture
def storage_url() -> str:
    return "sqlite://:memory:"


@pytest.fixture
def clients(api: TestClient) -> None:
    setup_clients(api)


def issued_sessions(api: TestClient) -> list[str]:
    bundle = api.get("/Session").json()
    return sorted(e["resource"]["type"] for e in bundle["entry"] if e["resource"]["type"] != "browser")


def form_post(response: httpx2.Response) -> tuple[str, dict[str, str]]:
    """The target and fields of a form_post page, after checking that its script may run and that
    nothing keeps a copy of it."""
    assert response.status_code == 200, response.headers.get("location")
    assert "location" not in response.headers
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert (response.headers["cache-control"], response.headers["pragma"]) == ("no-store", "no-cache")
    (nonce,) = _SCRIPT_NONCE.findall(response.text)
    assert f"'nonce-{nonce}'" in response.headers["content-security-policy"]
    assert "<noscript>" in response.text
    (action,) = _FORM.findall(response.text)
    fields = {name: html.unescape(value) for name, value in _HIDDEN.findall(response.text)}
    return html.unescape(action), fields


# Every response type: what it returns, where, and its ID token


EXPECTED_KEYS = {
    "code": {"code", "state"},
    "token": {"access_token", "token_type", "expires_in", "state"},
    "id_token": {"id_token", "state"},
    "id_token token": {"access_token", "token_type", "expires_in", "id_token", "state"},
    "code id_token": {"code", "id_token", "state"},
    "code token": {"code", "access_token", "token_type", "expires_in", "state"},
    "code id_token token": {"code", "access_token", "token_type", "expires_in", "id_token", "state"},
}


@pytest.mark.parametrize("response_type", list(RESPONSE_TYPES))
def test_each_response_type_returns_what_core_says_where_it_says(
    api: TestClient, clients: None, clock: ManualClock, response_type: str
) -> None:
    browser = sign_in(api)
    clock.advance(30)
    response = authorize(api, **rp_request(response_type))
    assert response.status_code == 302, response.text
    values = answer(response.headers["location"], CB, RESPONSE_TYPES[response_type])
    assert set(values) == EXPECTED_KEYS[response_type]
    assert values["state"] == "st-1"
    if "access_token" in values:
        # The front channel's access token is the implicit flow's (600 s), never with a refresh token.
        assert (values["token_type"], values["expires_in"]) == ("bearer", "600")
    if "id_token" not in values:
        return
    kind = "implicit" if "code" not in values else "hybrid"
    hashed = {name: values[name] for name in ("access_token", "code") if name in values}
    claims = id_token_claims(api, values["id_token"], kind=kind, now=clock(), nonce=NONCE, **hashed)
    expected = {
        "iss": ISSUER,
        "sub": "ann",
        "aud": "rp",
        "iat": SIGNED_IN_AT + 30,
        "exp": SIGNED_IN_AT + 30 + 600,
        "auth_time": SIGNED_IN_AT,
        "nonce": NONCE,
        "sid": browser,
        "amr": ["pwd"],
        "acr": "urn:fhirauth:acr:pwd",
    }
    if "access_token" in values:
        expected["at_hash"] = half_hash(values["access_token"])
    if "code" in values:
        expected["c_hash"] = half_hash(values["code"])
    assert claims == expected


def test_the_order_of_the_response_type_values_does_not_matter(api: TestClient, clients: None) -> None:
    # OAuth 2.0 Multiple Response Types §2.
    sign_in(api)
    response = authorize(api, **rp_request("token id_token code"))
    values = answer(response.headers["location"], CB, "fragment")
    assert set(values) == EXPECTED_KEYS["code id_token token"]


def test_token_with_openid_stays_plain_oauth(api: TestClient, clients: None) -> None:
    # `token` is not an OpenID response type: no ID token, no nonce needed (Core §3.1.2.2 keeps OAuth as is).
    sign_in(api)
    params = rp_request("token")
    del params["nonce"]
    values = answer(authorize(api, **params).headers["location"], CB, "fragment")
    assert set(values) == {"access_token", "token_type", "expires_in", "state"}


def test_code_token_needs_no_nonce(api: TestClient, clients: None) -> None:
    # Core §3.3.2.11: only the response types that return an ID token from this endpoint need one.
    sign_in(api)
    params = rp_request("code token")
    del params["nonce"]
    values = answer(authorize(api, **params).headers["location"], CB, "fragment")
    assert set(values) == {"code", "access_token", "token_type", "expires_in", "state"}


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_a_clients_id_token_signed_response_alg_signs_its_id_tokens(
    api: TestClient, clients: None, clock: ManualClock, alg: str
) -> None:
    # Dynamic Client Registration §2: the client's choice for both endpoints' ID tokens; at_hash and
    # c_hash follow it (SHA-512 for Ed25519, Core errata set 2).
    put_client(
        api,
        "rp-alg",
        first_party=True,
        secret=RP_SECRET,
        id_token_signed_response_alg=alg,
        grant_types=["authorization_code", "implicit"],
        auth={"authorization_code": {"redirect_uri": CB}, "implicit": {"redirect_uri": CB}},
    )
    sign_in(api)
    response = authorize(api, **{**rp_request("code id_token token"), "client_id": "rp-alg"})
    values = answer(response.headers["location"], CB, "fragment")
    front = id_token_claims(
        api,
        values["id_token"],
        kind="hybrid",
        now=clock(),
        client_id="rp-alg",
        alg=alg,
        nonce=NONCE,
        code=values["code"],
        access_token=values["access_token"],
    )
    assert (front["c_hash"], front["at_hash"]) == (
        half_hash(values["code"], alg),
        half_hash(values["access_token"], alg),
    )
    form = {"grant_type": "authorization_code", "code": values["code"], "redirect_uri": CB}
    body = api.post("/auth/token", data=form, auth=("rp-alg", RP_SECRET)).json()
    back = id_token_claims(
        api,
        body["id_token"],
        kind="code",
        now=clock(),
        client_id="rp-alg",
        alg=alg,
        access_token=body["access_token"],
    )
    assert back["at_hash"] == half_hash(body["access_token"], alg)


# Refusals, each going back to the client in the mode its response type uses


def error_at(response: httpx2.Response, target: str, where: str) -> tuple[str, str, str | None]:
    assert response.status_code == 302, response.text
    values = answer(response.headers["location"], target, where)
    assert set(values) <= {"error", "error_description", "state"}
    return values["error"], values["error_description"], values.get("state")


SIGNED_IN = pytest.mark.parametrize("signed_in", [False, True], ids=["anonymous", "signed-in"])


@SIGNED_IN
@pytest.mark.parametrize(
    "response_type", ["id_token", "id_token token", "code id_token", "code id_token token"]
)
def test_a_missing_nonce_is_invalid_request(
    api: TestClient, clients: None, signed_in: bool, response_type: str
) -> None:
    if signed_in:
        sign_in(api)
    for nonce in (None, ""):
        params = rp_request(response_type)
        if nonce is None:
            del params["nonce"]
        else:
            params["nonce"] = nonce
        assert error_at(authorize(api, **params), CB, "fragment") == (
            "invalid_request",
            "Missing 'nonce': it is required when an ID token comes from the authorization endpoint",
            "st-1",
        )
    assert issued_sessions(api) == []


def test_a_nonce_longer_than_512_characters_is_invalid_request(api: TestClient, clients: None) -> None:
    sign_in(api)
    response = authorize(api, **rp_request("id_token", nonce="n" * 513))
    assert error_at(response, CB, "fragment") == (
        "invalid_request",
        "'nonce' is longer than 512 characters",
        "st-1",
    )
    accepted = authorize(api, **rp_request("id_token", nonce="n" * 512))
    assert "id_token" in answer(accepted.headers["location"], CB, "fragment")


@SIGNED_IN
@pytest.mark.parametrize(
    "response_type", ["id_token", "id_token token", "code id_token", "code token", "code id_token token"]
)
@pytest.mark.parametrize("scope", [None, "profile"])
def test_openid_response_types_without_openid_are_invalid_request(
    api: TestClient, clients: None, signed_in: bool, response_type: str, scope: str | None
) -> None:
    if signed_in:
        sign_in(api)
    params = rp_request(response_type)
    if scope is None:
        del params["scope"]
    else:
        params["scope"] = scope
    assert error_at(authorize(api, **params), CB, "fragment") == (
        "invalid_request",
        f"response_type '{response_type}' needs 'openid' in 'scope'",
        "st-1",
    )
    assert issued_sessions(api) == []


@SIGNED_IN
@pytest.mark.parametrize(
    ("client_id", "target", "response_type", "flow"),
    [
        # implicit needs the implicit grant type; hybrid needs authorization_code and implicit.
        ("code-only", CODE_CB, "id_token", "implicit"),
        ("code-only", CODE_CB, "id_token token", "implicit"),
        ("code-only", CODE_CB, "code id_token", "implicit"),
        ("code-only", CODE_CB, "code token", "implicit"),
        ("implicit-only", IMPLICIT_CB, "code id_token", "authorization_code"),
        ("implicit-only", IMPLICIT_CB, "code id_token token", "authorization_code"),
    ],
)
def test_a_response_type_the_clients_grant_types_do_not_allow_is_unauthorized_client(
    api: TestClient,
    clients: None,
    signed_in: bool,
    client_id: str,
    target: str,
    response_type: str,
    flow: str,
) -> None:
    if signed_in:
        sign_in(api)
    params = {**rp_request(response_type), "client_id": client_id, "redirect_uri": target}
    assert error_at(authorize(api, **params), target, "fragment") == (
        "unauthorized_client",
        f"This client may not use the {flow} flow",
        "st-1",
    )
    assert issued_sessions(api) == []


def test_hybrid_takes_a_redirect_uri_registered_for_either_flow(api: TestClient, clients: None) -> None:
    sign_in(api)
    put_client(
        api,
        "split",
        first_party=True,
        secret="split-secret",
        grant_types=["authorization_code", "implicit"],
        auth={"authorization_code": {"redirect_uri": CODE_CB}, "implicit": {"redirect_uri": IMPLICIT_CB}},
    )
    for target in (CODE_CB, IMPLICIT_CB):
        params = {**rp_request("code id_token"), "client_id": "split", "redirect_uri": target}
        assert set(answer(authorize(api, **params).headers["location"], target, "fragment")) == {
            "code",
            "id_token",
            "state",
        }
    # Left out, it is ambiguous between the two.
    params = {**rp_request("code id_token"), "client_id": "split"}
    del params["redirect_uri"]
    response = authorize(api, **params)
    assert (response.status_code, "location" in response.headers) == (400, False)


@SIGNED_IN
@pytest.mark.parametrize("response_type", ["none", "code code", "id_token bogus", "code  token"])
def test_unsupported_response_types_are_refused(
    api: TestClient, clients: None, signed_in: bool, response_type: str
) -> None:
    if signed_in:
        sign_in(api)
    assert error_at(authorize(api, **rp_request(response_type)), CB, "query") == (
        "unsupported_response_type",
        "Unsupported 'response_type'; use one of: code, token, id_token, id_token token, code id_token, "
        "code token, code id_token token",
        "st-1",
    )


# Response modes


@SIGNED_IN
@pytest.mark.parametrize(
    "response_type",
    ["token", "id_token", "id_token token", "code id_token", "code token", "code id_token token"],
)
def test_query_mode_for_tokens_is_refused_in_the_fragment(
    api: TestClient, clients: None, signed_in: bool, response_type: str
) -> None:
    # Core §3.2.2.5, MRT §5: tokens never travel in the query (logs, Referer).
    if signed_in:
        sign_in(api)
    response = authorize(api, **rp_request(response_type, response_mode="query"))
    assert error_at(response, CB, "fragment") == (
        "invalid_request",
        f"response_mode 'query' cannot carry the tokens of response_type '{response_type}'; "
        "use 'fragment' or 'form_post'",
        "st-1",
    )
    assert issued_sessions(api) == []


def test_code_may_go_in_the_query_or_the_fragment(api: TestClient, clients: None) -> None:
    sign_in(api)
    for mode in ("query", "fragment"):
        params = rp_request(
            "code", response_mode=mode, code_challenge=CHALLENGE, code_challenge_method="S256"
        )
        assert set(answer(authorize(api, **params).headers["location"], CB, mode)) == {"code", "state"}


@SIGNED_IN
@pytest.mark.parametrize("mode", ["bogus", "FRAGMENT", "query.jwt"])
def test_an_unknown_response_mode_shows_the_error_page(
    api: TestClient, clients: None, signed_in: bool, mode: str
) -> None:
    # Core §3.1.2.6: with no way to know how to answer the client, nothing is sent to it.
    if signed_in:
        sign_in(api)
    response = authorize(api, **rp_request("code id_token", response_mode=mode))
    assert (response.status_code, "location" in response.headers) == (400, False)
    assert "This sign-in request is not valid" in response.text
    assert "Unsupported &#39;response_mode&#39;; use query, fragment or form_post" in response.text
    assert issued_sessions(api) == []


def test_a_repeated_response_mode_shows_the_error_page(api: TestClient, clients: None) -> None:
    sign_in(api)
    query = "client_id=rp&response_type=code&response_mode=query&response_mode=form_post&state=s"
    response = api.get(f"/auth/authorize?{query}", follow_redirects=False)
    assert (response.status_code, "location" in response.headers) == (400, False)
    assert "The parameter &#39;response_mode&#39; is given more than once." in response.text


@pytest.mark.parametrize("response_type", list(RESPONSE_TYPES))
def test_form_post_posts_the_answer_with_a_page_that_submits_itself(
    api: TestClient, clients: None, clock: ManualClock, response_type: str
) -> None:
    sign_in(api)
    response = authorize(api, **rp_request(response_type, response_mode="form_post"))
    action, fields = form_post(response)
    assert action == CB
    assert set(fields) == EXPECTED_KEYS[response_type]
    assert fields["state"] == "st-1"
    if "id_token" in fields:
        kind = "implicit" if "code" not in fields else "hybrid"
        hashed = {name: fields[name] for name in ("access_token", "code") if name in fields}
        claims = id_token_claims(api, fields["id_token"], kind=kind, now=clock(), nonce=NONCE, **hashed)
        assert claims["nonce"] == NONCE


def test_form_post_carries_errors_too_and_escapes_what_it_echoes(api: TestClient, clients: None) -> None:
    params = rp_request("id_token", response_mode="form_post", state='"><script>alert(1)</script>')
    del params["nonce"]
    action, fields = form_post(authorize(api, **params))
    assert action == CB
    assert fields == {
        "error": "invalid_request",
        "error_description": "Missing 'nonce': it is required when an ID token comes from the authorization endpoint",
        "state": '"><script>alert(1)</script>',
    }
    response = authorize(api, **params)
    assert "<script>alert(1)" not in response.text


def test_form_post_for_a_registered_uri_with_a_query_keeps_it_in_the_action(
    api: TestClient, clients: None
) -> None:
    sign_in(api)
    tenant = "https://tenant.example.org/cb?tenant=7&x=a%20b"
    put_client(
        api,
        "tenant",
        first_party=True,
        grant_types=["implicit"],
        auth={"implicit": {"redirect_uri": tenant}},
    )
    params = {**rp_request("id_token", response_mode="form_post"), "client_id": "tenant"}
    del params["redirect_uri"]
    action, fields = form_post(authorize(api, **params))
    assert action == tenant
    assert set(fields) == {"id_token", "state"}


# Parameters this provider does not support


@SIGNED_IN
@pytest.mark.parametrize(
    ("name", "error"),
    [("request", "request_not_supported"), ("request_uri", "request_uri_not_supported")],
)
def test_request_objects_are_refused_with_their_own_codes(
    api: TestClient, clients: None, signed_in: bool, name: str, error: str
) -> None:
    # Core §3.1.2.6, §6: discovery says request_parameter_supported / request_uri_parameter_supported false.
    if signed_in:
        sign_in(api)
    response = authorize(api, **rp_request("code id_token", **{name: "eyJhbGciOiJub25lIn0.e30."}))
    assert error_at(response, CB, "fragment") == (error, f"The '{name}' parameter is not supported", "st-1")
    assert issued_sessions(api) == []


@SIGNED_IN
@pytest.mark.parametrize("name", ["nonce", "prompt", "max_age", "response_mode"])
def test_repeated_openid_parameters(api: TestClient, clients: None, signed_in: bool, name: str) -> None:
    if signed_in:
        sign_in(api)
    value = {"nonce": NONCE, "prompt": "login", "max_age": "60", "response_mode": "fragment"}[name]
    query = f"client_id=rp&response_type=id_token&scope=openid&nonce={NONCE}&state=st-1&{name}={value}&{name}={value}"
    response = api.get(f"/auth/authorize?{query}", follow_redirects=False)
    if name == "response_mode":
        assert (response.status_code, "location" in response.headers) == (400, False)
        return
    assert error_at(response, CB, "fragment") == (
        "invalid_request",
        f"The parameter '{name}' is given more than once.",
        "st-1",
    )
