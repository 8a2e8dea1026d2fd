"""private_key_jwt (RFC 7523, SMART Backend Services) at /auth/token, /auth/introspect and
/auth/revoke: a backend service signs a JWT with a key it registered (inline `jwks`, or a `jwks_uri`
this test serves on loopback) and gets system/ scopes; every way an assertion can be wrong is
invalid_client, with nothing written."""

from __future__ import annotations

import base64
import http.server
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey
from joserfc.jws import JWSRegistry
from starlette.testclient import TestClient

from fhirauth.app import create_app
from fhirauth.auth.client_assertion import JWT_BEARER
from fhirauth.auth.jwks_fetch import REFETCH_SECONDS
from fhirauth.clock import ManualClock
from tests.api.conftest import NO_AUTH, ROOT, settings_for

TOKEN_URL = "http://testserver/auth/token"
SCOPE = "system/User.rs system/Client.r"
RS384 = RSAKey.generate_key(2048, private=True, parameters={"kid": "rs384-1"})
ES384 = ECKey.generate_key("P-384", private=True, parameters={"kid": "es384-1"})
# Another key under RS384's kid: what a forger without the client's private key has.
FORGER = RSAKey.generate_key(2048, private=True, parameters={"kid": "rs384-1"})
KEYS = {"RS384": RS384, "ES384": ES384}
Document = dict[str, Any]


def _public(*keys: RSAKey | ECKey) -> Document:
    return {"keys": [key.as_dict(private=False) for key in keys]}


class JwksServer:
    """A JWK Set on loopback, served as set; counts the requests for it."""

    def __init__(self) -> None:
        self.document: Document = _public(ES384)
        self.cache_control = "max-age=300"
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests += 1
                body = orjson.dumps(server.document)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", server.cache_control)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/jwks.json"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


@pytest.fixture
def hanging_url() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/jwks.json"
    listener.close()


def _api(storage_url: str, clock: ManualClock, **settings: object) -> Iterator[TestClient]:
    app = create_app(settings_for(storage_url, **settings), clock=clock)
    with TestClient(app, raise_server_exceptions=False, headers={"Authorization": ROOT}) as client:
        yield client


@pytest.fixture
def api(storage_url: str, clock: ManualClock) -> Iterator[TestClient]:
    """Loopback jwks_uri allowed (the test serves it), fetches given half a second."""
    yield from _api(storage_url, clock, jwks_uri_allow_private=True, jwks_uri_timeout_seconds=0.5)


@pytest.fixture
def strict_api(clock: ManualClock) -> Iterator[TestClient]:
    """The default settings: no jwks_uri on an inner address."""
    yield from _api("sqlite://:memory:", clock)


def register(api: TestClient, id: str = "backend", **fields: Any) -> None:
    client = {"resourceType": "Client", "grant_types": ["client_credentials"], **fields}
    response = api.put(f"/Client/{id}", json=client)
    assert response.status_code in (200, 201), response.text


def assertion(
    clock: ManualClock,
    alg: str = "RS384",
    *,
    key: Any = None,
    header: Document | None = None,
    **claims: Any,
) -> str:
    now = int(clock().timestamp())
    body: Document = {
        "iss": "backend",
        "sub": "backend",
        "aud": TOKEN_URL,
        "exp": now + 240,
        "jti": str(uuid.uuid4()),
        **claims,
    }
    body = {name: value for name, value in body.items() if value is not None}
    signing_key = key if key is not None else KEYS[alg]
    protected = {"alg": alg, "typ": "JWT", "kid": signing_key.kid, **(header or {})}
    return jwt.encode(protected, body, signing_key, algorithms=[alg])


def token(api: TestClient, signed: str, scope: str | None = SCOPE, **extra: str) -> Any:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": signed,
        **extra,
    }
    if scope is not None:
        form["scope"] = scope
    return api.post("/auth/token", data=form, headers=NO_AUTH)


def sessions(api: TestClient) -> int:
    bundle = api.get("/Session", params={"_count": "0", "_total": "accurate"}).json()
    return int(bundle["total"])


def refused(response: Any, reason: str) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"] == "invalid_client"
    assert reason in body["error_description"], body["error_description"]


@pytest.mark.parametrize(
    ("alg", "registration"),
    [("RS384", "jwks"), ("ES384", "jwks_uri"), ("ES384", "jwks"), ("RS384", "jwks_uri")],
)
def test_a_backend_service_gets_a_token_with_its_system_scopes(
    api: TestClient, clock: ManualClock, jwks_server: JwksServer, alg: str, registration: str
) -> None:
    jwks_server.document = _public(KEYS[alg])
    keys = {"jwks": _public(KEYS[alg])} if registration == "jwks" else {"jwks_uri": jwks_server.url}
    register(api, scope=["system/*.rs"], **keys)
    response = token(api, assertion(clock, alg))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert (body["token_type"], body["scope"], body["expires_in"]) == ("Bearer", SCOPE, 3600)
    assert response.headers["cache-control"] == "no-store"
    # The token is the client's own: it introspects it, with the same kind of assertion.
    introspected = api.post(
        "/auth/introspect",
        data={
            "token": body["access_token"],
            "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion(clock, alg),
        },
        headers=NO_AUTH,
    )
    assert introspected.status_code == 200, introspected.text
    claims = introspected.json()
    assert (claims["active"], claims["client_id"], claims["scope"]) == (True, "backend", SCOPE)
    assert jwks_server.requests == (1 if registration == "jwks_uri" else 0)


def test_the_issuer_identifier_is_an_audience_too_and_client_id_may_name_the_client(
    api: TestClient, clock: ManualClock
) -> None:
    register(api, jwks=_public(RS384))
    response = token(api, assertion(clock, aud="http://testserver"), client_id="backend")
    assert response.status_code == 200, response.text
    response = token(api, assertion(clock, aud=[TOKEN_URL]))
    assert response.status_code == 200, response.text


def test_revocation_takes_an_assertion(api: TestClient, clock: ManualClock) -> None:
    register(api, jwks=_public(RS384))
    issued = token(api, assertion(clock)).json()["access_token"]
    form = {"token": issued, "client_assertion_type": JWT_BEARER, "client_assertion": assertion(clock)}
    assert api.post("/auth/revoke", data=form, headers=NO_AUTH).status_code == 200
    assert api.get("/auth/userinfo", headers={"Authorization": f"Bearer {issued}"}).status_code == 401
    # A refused assertion revokes nothing.
    other = token(api, assertion(clock)).json()["access_token"]
    bad = {
        "token": other,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion(clock, jti=None),
    }
    refused(api.post("/auth/revoke", data=bad, headers=NO_AUTH), "'jti'")
    check = {"token": other, "client_assertion_type": JWT_BEARER, "client_assertion": assertion(clock)}
    assert api.post("/auth/introspect", data=check, headers=NO_AUTH).json()["active"] is True


def _none_alg(clock: ManualClock) -> str:
    def segment(value: Document) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()

    now = int(clock().timestamp())
    claims = {"iss": "backend", "sub": "backend", "aud": TOKEN_URL, "exp": now + 60, "jti": "n"}
    return f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(claims)}."


def _critical(clock: ManualClock) -> str:
    """Signed right, with an extension marked critical (joserfc's encode refuses to make one)."""

    def segment(value: Document) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()

    now = int(clock().timestamp())
    header = {"alg": "RS384", "kid": RS384.kid, "crit": ["x-ext"], "x-ext": 1}
    claims = {"iss": "backend", "sub": "backend", "aud": TOKEN_URL, "exp": now + 60, "jti": "c"}
    signing_input = f"{segment(header)}.{segment(claims)}"
    signature = JWSRegistry.algorithms["RS384"].sign(signing_input.encode(), RS384)
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


# Each: what is wrong, the assertion, and what the refusal says.
WRONG = [
    ("expired", lambda c: assertion(c, exp=int(c().timestamp()) - 61), "expired"),
    ("exp too far ahead", lambda c: assertion(c, exp=int(c().timestamp()) + 361), "more than 300 s ahead"),
    ("no exp", lambda c: assertion(c, exp=None), "needs 'exp'"),
    ("exp not a number", lambda c: assertion(c, exp="soon"), "needs 'exp'"),
    ("nbf ahead", lambda c: assertion(c, nbf=int(c().timestamp()) + 120), "not valid yet"),
    ("wrong aud", lambda c: assertion(c, aud="https://elsewhere.example/token"), "'aud'"),
    ("aud of two", lambda c: assertion(c, aud=[TOKEN_URL, "https://other.example"]), "'aud'"),
    ("wrong iss", lambda c: assertion(c, iss="someone", sub="someone"), "Unknown client"),
    ("sub not iss", lambda c: assertion(c, sub="other"), "'sub'"),
    ("no iss", lambda c: assertion(c, iss=None), "'iss'"),
    ("unknown kid", lambda c: assertion(c, header={"kid": "nope"}), "No key of this client fits"),
    ("bad signature", lambda c: assertion(c, key=FORGER), "signature does not verify"),
    ("alg none", _none_alg, "'alg' must be one of"),
    (
        "HS256",
        lambda c: assertion(
            c, "HS256", key=OctKey.import_key("backend-secret-0123456789abcdef", {"kid": "rs384-1"})
        ),
        "'alg'",
    ),
    (
        "RS512",
        lambda c: jwt.encode({"alg": "RS512"}, {"iss": "backend"}, RS384, algorithms=["RS512"]),
        "'alg'",
    ),
    ("no jti", lambda c: assertion(c, jti=None), "'jti'"),
    ("not a JWT", lambda c: "not.a-jwt", "not a signed JWT"),
    ("typ not JWT", lambda c: assertion(c, header={"typ": "at+jwt"}), "'typ'"),
    ("crit", lambda c: _critical(c), "'crit'"),
    ("bad base64", lambda c: assertion(c).replace(".", ".*", 1), "not a signed JWT"),
]


@pytest.mark.parametrize(("case", "make", "reason"), WRONG, ids=[case for case, _, _ in WRONG])
def test_a_wrong_assertion_is_refused_and_nothing_is_written(
    api: TestClient, clock: ManualClock, case: str, make: Any, reason: str
) -> None:
    register(api, jwks=_public(RS384, ES384))
    before = sessions(api)
    refused(token(api, make(clock)), reason)
    assert sessions(api) == before
    # The same client with a right assertion still gets its token: nothing was spent or locked.
    assert token(api, assertion(clock)).status_code == 200


def test_a_client_id_that_is_not_the_assertions_issuer_is_refused(
    api: TestClient, clock: ManualClock
) -> None:
    register(api, jwks=_public(RS384))
    register(api, "other", jwks=_public(ES384))
    refused(token(api, assertion(clock), client_id="other"), "'client_id' does not match")


def test_an_assertion_is_used_once(api: TestClient, clock: ManualClock) -> None:
    register(api, jwks=_public(RS384))
    signed = assertion(clock)
    assert token(api, signed).status_code == 200
    refused(token(api, signed), "used before")
    # Another jti is another assertion.
    assert token(api, assertion(clock)).status_code == 200


def test_a_spent_jti_is_kept_until_the_assertion_could_no_longer_pass(
    api: TestClient, clock: ManualClock
) -> None:
    register(api, jwks=_public(RS384))
    exp = int(clock().timestamp()) + 30
    signed = assertion(clock, exp=exp, jti="once")
    assert token(api, signed).status_code == 200
    # Up to the leeway past exp the assertion itself would still pass: the jti refuses it.
    clock.advance(30 + 59)
    refused(token(api, signed), "used before")
    clock.advance(1)
    refused(token(api, signed), "expired")


@pytest.mark.parametrize(
    "scope",
    ["patient/*.rs", "user/User.rs", "openid", "system/User.rs launch", "system/User.rs fhirUser", None],
)
def test_a_backend_service_gets_system_scopes_only(
    api: TestClient, clock: ManualClock, scope: str | None
) -> None:
    register(api, jwks=_public(RS384))
    before = sessions(api)
    response = token(api, assertion(clock), scope=scope)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_scope"
    assert sessions(api) == before


def test_a_client_with_keys_may_not_pass_for_public_and_one_that_says_private_key_jwt_may_not_use_a_secret(
    api: TestClient, clock: ManualClock
) -> None:
    register(api, jwks=_public(RS384))
    response = api.post(
        "/auth/token", data={"grant_type": "client_credentials", "client_id": "backend"}, headers=NO_AUTH
    )
    refused(response, "must authenticate with a client assertion")
    register(api, "both", secret="s3cret", token_endpoint_auth_method="private_key_jwt", jwks=_public(ES384))
    response = api.post("/auth/token", data={"grant_type": "client_credentials"}, auth=("both", "s3cret"))
    refused(response, "must authenticate with a client assertion")
    register(
        api,
        "secretive",
        secret="s3cret",
        token_endpoint_auth_method="client_secret_basic",
        jwks=_public(ES384),
    )
    refused(
        token(api, assertion(clock, "ES384", iss="secretive", sub="secretive")),
        "authenticates with its secret",
    )


def test_a_client_with_keys_and_a_leftover_secret_may_not_use_the_secret(api: TestClient) -> None:
    """Registered keys without a stated method mean assertions, on the secret path as on the public one."""
    register(api, "keyed", secret="s3cret", jwks=_public(ES384))
    response = api.post("/auth/token", data={"grant_type": "client_credentials"}, auth=("keyed", "s3cret"))
    refused(response, "must authenticate with a client assertion")
    response = api.post("/auth/introspect", data={"token": "x"}, auth=("keyed", "s3cret"))
    refused(response, "must authenticate with a client assertion")


def test_one_method_at_a_time(api: TestClient, clock: ManualClock) -> None:
    register(api, jwks=_public(RS384), secret="s3cret")
    form = {
        "grant_type": "client_credentials",
        "scope": SCOPE,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion(clock),
    }
    response = api.post("/auth/token", data=form, auth=("backend", "s3cret"))
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")
    response = api.post("/auth/token", data={**form, "client_secret": "s3cret"}, headers=NO_AUTH)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")
    response = api.post("/auth/token", data={**form, "client_assertion_type": "urn:x:saml"}, headers=NO_AUTH)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")
    assert "client_assertion_type" in response.json()["error_description"]
    response = api.post(
        "/auth/token", data={k: v for k, v in form.items() if k != "client_assertion"}, headers=NO_AUTH
    )
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


def test_registration_is_checked(api: TestClient) -> None:
    private = {"keys": [RS384.as_dict(private=True)]}
    cases = [
        {"jwks": private},
        {"jwks": {"keys": "no"}},
        {"jwks": _public(RS384), "jwks_uri": "https://a.example/j"},
    ]
    cases += [{"jwks_uri": "ftp://a.example/j"}, {"token_endpoint_auth_method": "magic"}]
    for fields in cases:
        response = api.put("/Client/bad", json={"resourceType": "Client", **fields})
        assert response.status_code == 422, (fields, response.text)
    assert api.get("/Client/bad").status_code == 404


def test_a_rotated_key_is_fetched_once_and_unknown_kids_do_not_fetch_again_and_again(
    api: TestClient, clock: ManualClock, jwks_server: JwksServer
) -> None:
    register(api, jwks_uri=jwks_server.url)
    assert token(api, assertion(clock, "ES384")).status_code == 200
    assert token(api, assertion(clock, "ES384")).status_code == 200
    assert jwks_server.requests == 1
    # The client adds an RS384 key: the first assertion naming it fetches the set again, once ten
    # seconds have passed since the last fetch.
    jwks_server.document = _public(ES384, RS384)
    refused(token(api, assertion(clock)), "No key of this client fits")
    assert jwks_server.requests == 1
    clock.advance(REFETCH_SECONDS)
    assert token(api, assertion(clock)).status_code == 200
    assert jwks_server.requests == 2
    # Kids the set lacks fetch again at most once every ten seconds.
    for _ in range(3):
        refused(token(api, assertion(clock, header={"kid": "unknown"})), "No key of this client fits")
    assert jwks_server.requests == 2
    clock.advance(REFETCH_SECONDS)
    refused(token(api, assertion(clock, header={"kid": "unknown"})), "No key of this client fits")
    assert jwks_server.requests == 3


def test_the_set_is_cached_as_its_cache_control_says_within_bounds(
    api: TestClient, clock: ManualClock, jwks_server: JwksServer
) -> None:
    register(api, jwks_uri=jwks_server.url)
    jwks_server.cache_control = "public, max-age=120"
    assert token(api, assertion(clock, "ES384")).status_code == 200
    clock.advance(119)
    assert token(api, assertion(clock, "ES384")).status_code == 200
    assert jwks_server.requests == 1
    clock.advance(1)
    jwks_server.cache_control = "no-store"
    assert token(api, assertion(clock, "ES384")).status_code == 200
    assert jwks_server.requests == 2
    # no-store: kept the least time, a minute, not fetched per request.
    clock.advance(59)
    assert token(api, assertion(clock, "ES384")).status_code == 200
    assert jwks_server.requests == 2
    clock.advance(1)
    jwks_server.cache_control = "max-age=999999"
    assert token(api, assertion(clock, "ES384")).status_code == 200
    assert jwks_server.requests == 3
    # At most an hour.
    clock.advance(3600)
    assert token(api, assertion(clock, "ES384")).status_code == 200
    assert jwks_server.requests == 4


def test_a_jwks_uri_on_loopback_or_over_http_is_refused_without_the_setting(
    strict_api: TestClient, clock: ManualClock, jwks_server: JwksServer
) -> None:
    register(strict_api, jwks_uri=jwks_server.url.replace("http://", "https://"))
    refused(token(strict_api, assertion(clock, "ES384")), "not a public address")
    register(strict_api, jwks_uri="https://localhost/jwks.json")
    refused(token(strict_api, assertion(clock, "ES384")), "not a public address")
    register(strict_api, jwks_uri=jwks_server.url)
    refused(token(strict_api, assertion(clock, "ES384")), "must be an https URL")
    assert jwks_server.requests == 0


def test_a_jwks_uri_that_hangs_is_refused_quickly(
    api: TestClient, clock: ManualClock, hanging_url: str
) -> None:
    register(api, jwks_uri=hanging_url)
    started = time.monotonic()
    refused(token(api, assertion(clock, "ES384")), "no answer within 0.5 s")
    assert time.monotonic() - started < 2
    # The failure is remembered for REFETCH_SECONDS: the next request does not wait again.
    started = time.monotonic()
    refused(token(api, assertion(clock, "ES384")), "no answer within 0.5 s")
    assert time.monotonic() - started < 0.4
    clock.advance(REFETCH_SECONDS)
    started = time.monotonic()
    refused(token(api, assertion(clock, "ES384")), "no answer within 0.5 s")
    assert time.monotonic() - started >= 0.5


def test_discovery_lists_private_key_jwt(api: TestClient) -> None:
    metadata = api.get("/.well-known/openid-configuration", headers=NO_AUTH).json()
    for endpoint in ("token", "introspection", "revocation"):
        assert "private_key_jwt" in metadata[f"{endpoint}_endpoint_auth_methods_supported"]
        assert metadata[f"{endpoint}_endpoint_auth_signing_alg_values_supported"] == [
            "RS384",
            "ES384",
            "RS256",
            "ES256",
        ]
