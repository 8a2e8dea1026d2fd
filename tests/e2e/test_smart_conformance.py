"""What ONC Inferno's SMART App Launch test kit checks, as tests of our own, against a real
`fhirauth serve` over HTTP (Inferno itself needs rubygems and its own services).

Grouped by the Inferno suite each check comes from (inferno-framework/smart-app-launch-test-kit,
`lib/smart_app_launch/*.rb`): discovery STU1 and STU2/2.2, standalone launch, EHR launch, OpenID
Connect, token refresh, token introspection, backend services, CORS. Each assertion names the spec
section it holds the server to: SMART App Launch 2.2 (`conformance.md`, `app-launch.md`,
`scopes-and-launch-context.md`, `token-introspection.md`, `backend-services.md`,
`client-confidential-asymmetric.md`), OpenID Connect Core/Discovery 1.0, RFC 6749/7636/7662/7523.
One server for the whole module; the browser part of a launch (sign-in, consent) is driven over HTTP
against the server's own HTML forms.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey
from support.server import ROOT_CLIENT_SECRET, LiveServer

Document = dict[str, Any]

PUBLIC = "inferno-public"
CONFIDENTIAL = "inferno-confidential"
CONFIDENTIAL_SECRET = "inferno-confidential-secret"
EHR = "inferno-ehr"
EHR_SECRET = "inferno-ehr-secret"
BACKEND = "inferno-backend"
PASSWORD = "correct horse battery staple"
APP_ORIGIN = "https://inferno.example"
# Nothing listens there: the test reads each redirect instead of following it.
REDIRECT = f"{APP_ORIGIN}/custom/smart/redirect"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
STANDALONE_SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"
EHR_SCOPE = "launch openid fhirUser offline_access user/*.rs"
BACKEND_SCOPE = "system/*.rs"
BACKEND_TOKEN_SECONDS = 300
FHIR_USER_TYPES = ("Patient", "Practitioner", "PractitionerRole", "RelatedPerson", "Person")
RS384 = RSAKey.generate_key(2048, private=True, parameters={"kid": "inferno-rs384"})
ES384 = ECKey.generate_key("P-384", private=True, parameters={"kid": "inferno-es384"})
# A key of the forger's under the client's kid (Inferno's "invalid JWT" test signs with a wrong key).
FORGER = RSAKey.generate_key(2048, private=True, parameters={"kid": "inferno-rs384"})
# Inferno's FHIR_ID_REGEX, anchored (token_payload_validation.rb).
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}(/_history/[A-Za-z0-9\-.]{1,64})?")
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_ACTION = re.compile(r'<form method="post" action="([^"]*)"')
_QUERY = re.compile(r'name="query" value="([^"]*)"')


# The server and its registrations


def _resources() -> list[Document]:
    code_flow = {"redirect_uri": REDIRECT, "refresh_token": True}
    app_scopes = [
        "launch",
        "launch/patient",
        "launch/encounter",
        "openid",
        "fhirUser",
        "profile",
        "offline_access",
        "patient/*.rs",
        "user/*.rs",
    ]
    return [
        {
            "resourceType": "Client",
            "id": PUBLIC,
            "grant_types": ["authorization_code", "refresh_token"],
            "scope": app_scopes,
            "auth": {"authorization_code": code_flow},
        },
        {
            "resourceType": "Client",
            "id": CONFIDENTIAL,
            "secret": CONFIDENTIAL_SECRET,
            "grant_types": ["authorization_code", "refresh_token"],
            "scope": app_scopes,
            "auth": {"authorization_code": code_flow},
        },
        {
            "resourceType": "Client",
            "id": EHR,
            "secret": EHR_SECRET,
            "grant_types": ["basic"],
            "smart": {"launch_registration": True},
        },
        {
            "resourceType": "Client",
            "id": BACKEND,
            "grant_types": ["client_credentials"],
            "scope": [BACKEND_SCOPE],
            # backend-services.md: expires_in SHOULD NOT exceed 300; the default is Aidbox's 3600.
            "auth": {"client_credentials": {"access_token_expiration": BACKEND_TOKEN_SECONDS}},
            "jwks": {"keys": [key.as_dict(private=False) for key in (RS384, ES384)]},
        },
        {
            "resourceType": "AccessPolicy",
            "id": "inferno-apps",
            "engine": "allow",
            "link": [{"resourceType": "Client", "id": c} for c in (PUBLIC, CONFIDENTIAL, BACKEND)],
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
            "id": "doc",
            "email": "doc@example.org",
            "password": PASSWORD,
            "fhirUser": {"resourceType": "Practitioner", "id": "d1"},
        },
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(workdir=Path(tmp_path_factory.mktemp("inferno-live"))) as live:
        with httpx2.Client(base_url=live.url, auth=("root", ROOT_CLIENT_SECRET)) as admin:
            for resource in _resources():
                path = f"/{resource['resourceType']}/{resource['id']}"
                response = admin.put(path, json=resource)
                assert response.status_code == 201, (path, response.text)
        yield live


@pytest.fixture(scope="module")
def smart_config(server: LiveServer) -> Document:
    body: Document = httpx2.get(f"{server.url}/.well-known/smart-configuration").json()
    return body


@pytest.fixture(scope="module")
def openid_config(server: LiveServer) -> Document:
    body: Document = httpx2.get(f"{server.url}/.well-known/openid-configuration").json()
    return body


# What Inferno does as the app and as the user's browser


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    return verifier, challenge.decode()


def authorize_params(server: LiveServer, scope: str, challenge: str, **extra: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": PUBLIC,
        "redirect_uri": REDIRECT,
        "scope": scope,
        # Inferno's state: a random UUID (app-launch.md §step-4: at least 122 bits).
        "state": str(uuid.uuid4()),
        "aud": server.url,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return {name: value for name, value in params.items() if value != ""}


def browse(server: LiveServer, params: dict[str, str], user: str = "ann") -> dict[str, str]:
    """A fresh browser: GET the authorize URL, sign in, allow; the query of the redirect to the app."""
    with httpx2.Client(base_url=server.url, follow_redirects=False) as browser:
        answer = browser.get(f"/auth/authorize?{urlencode(params)}")
        if answer.status_code == 302 and "/auth/login" in answer.headers["location"]:
            login_url = urljoin(server.url, answer.headers["location"])
            form = browser.get(login_url)
            (csrf,) = _CSRF.findall(form.text)
            (action,) = _ACTION.findall(form.text)
            answer = browser.post(
                urljoin(login_url, html.unescape(action)),
                data={"csrf": csrf, "username": f"{user}@example.org", "password": PASSWORD},
            )
            assert answer.status_code == 302, answer.text
            answer = browser.get(urljoin(server.url, answer.headers["location"]))
        if answer.status_code == 200 and "/auth/consent" in answer.text:
            (csrf,) = _CSRF.findall(answer.text)
            (query,) = _QUERY.findall(answer.text)
            answer = browser.post(
                "/auth/consent", data={"csrf": csrf, "query": html.unescape(query), "decision": "approve"}
            )
        assert answer.status_code == 302, answer.text
        location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT, location
    return {name: values[0] for name, values in parse_qs(location.query).items()}


def token_request(server: LiveServer, form: dict[str, str], **kwargs: Any) -> httpx2.Response:
    return httpx2.post(f"{server.url}/auth/token", data=form, **kwargs)


def exchange(
    server: LiveServer, code: str, verifier: str, *, client_id: str = PUBLIC, **kwargs: Any
) -> httpx2.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    if client_id == CONFIDENTIAL:
        kwargs["auth"] = (CONFIDENTIAL, CONFIDENTIAL_SECRET)
    else:
        form["client_id"] = client_id
    return token_request(server, form, **kwargs)


def launch(
    server: LiveServer, scope: str, *, user: str = "ann", client_id: str = PUBLIC, **extra: str
) -> tuple[dict[str, str], httpx2.Response]:
    """One whole launch: the authorize request sent, and the code exchange's answer."""
    verifier, challenge = pkce_pair()
    params = authorize_params(server, scope, challenge, client_id=client_id, **extra)
    found = browse(server, params, user)
    assert "code" in found, found
    return params, exchange(server, found["code"], verifier, client_id=client_id)


def granted(response: httpx2.Response) -> Document:
    assert response.status_code == 200, response.text
    body: Document = response.json()
    return body


def jwt_claims(token: str) -> Document:
    payload = token.split(".")[1]
    claims: Document = httpx2.Response(
        200, content=base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    ).json()
    return claims


def jwt_header(token: str) -> Document:
    head = token.split(".")[0]
    header: Document = httpx2.Response(
        200, content=base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
    ).json()
    return header


def assert_token_headers(response: httpx2.Response, where: str) -> None:
    # app-launch.md §step-5 (and §step-7 for refresh): Inferno's token_response_headers test.
    assert response.headers.get("cache-control") == "no-store", (
        f"{where}: app-launch.md §step-5: the token response SHALL carry Cache-Control: no-store"
    )
    assert response.headers.get("pragma") == "no-cache", (
        f"{where}: app-launch.md §step-5: the token response SHALL carry Pragma: no-cache"
    )


def assert_token_body(body: Document, requested: str, where: str) -> None:
    """Inferno's token_response_body test (token_payload_validation.rb)."""
    for field in ("access_token", "token_type", "expires_in", "scope"):
        assert body.get(field), f"{where}: app-launch.md §step-5: `{field}` is required (Inferno)"
    for field in ("access_token", "token_type", "scope", "refresh_token"):
        if field in body:
            assert isinstance(body[field], str), f"{where}: `{field}` must be a string (Inferno)"
    assert isinstance(body["expires_in"], int | float) and not isinstance(body["expires_in"], bool), (
        f"{where}: `expires_in` must be a number (Inferno token_payload_validation)"
    )
    assert body["token_type"].lower() == "bearer", f"{where}: app-launch.md §step-5: token_type is Bearer"
    missing = set(requested.split()) - set(body["scope"].split())
    # Inferno only warns about a narrower grant; this server grants what a permitted client asks.
    assert not missing, f"{where}: scopes requested and permitted but not granted: {sorted(missing)}"


def assert_fhir_context_stu2_2(context: object) -> None:
    """Inferno's validate_fhir_context_stu2_2 (scopes-and-launch-context.md §fhirContext)."""
    assert isinstance(context, list), "scopes-and-launch-context.md: fhirContext is an array"
    for item in context:
        assert isinstance(item, dict), "SMART 2.2: each fhirContext item is an object (not a string)"
        assert {"reference", "canonical", "identifier"} & item.keys(), (
            "SMART 2.2: a fhirContext item SHALL hold reference, canonical or identifier"
        )
        if "reference" in item:
            reference = item["reference"]
            assert isinstance(reference, str) and not reference.startswith("http"), (
                "SMART 2.2: fhirContext.reference is a relative reference"
            )
            resource_type, _, fhir_id = reference.partition("/")
            assert resource_type[:1].isupper() and FHIR_ID.fullmatch(fhir_id), reference


# Discovery, STU2 and STU2.2 (well_known_*_test.rb, discovery_stu2*_group.rb)


def test_discovery_stu2_well_known_is_json_whatever_the_accept_header(server: LiveServer) -> None:
    for accept in ("application/json", "text/html", "*/*"):
        response = httpx2.get(f"{server.url}/.well-known/smart-configuration", headers={"Accept": accept})
        assert response.status_code == 200, "conformance.md: the well-known document answers 200"
        assert response.headers["content-type"].startswith("application/json"), (
            f"conformance.md: application/json whatever Accept ({accept}) says"
        )
        assert isinstance(response.json(), dict), "conformance.md: a JSON object"


def test_discovery_stu2_required_fields_and_types(smart_config: Document) -> None:
    required = {
        "authorization_endpoint": str,
        "token_endpoint": str,
        "capabilities": list,
        "grant_types_supported": list,
        "code_challenge_methods_supported": list,
    }
    for field, kind in required.items():
        assert smart_config.get(field), f"conformance.md: `{field}` is required and not blank"
        assert isinstance(smart_config[field], kind), f"conformance.md: `{field}` is a {kind.__name__}"
    assert all(isinstance(c, str) for c in smart_config["capabilities"]), (
        "conformance.md: capabilities is an array of strings"
    )
    assert "authorization_code" in smart_config["grant_types_supported"], (
        "conformance.md: grant_types_supported includes authorization_code for App Launch"
    )
    assert "client_credentials" in smart_config["grant_types_supported"], (
        "conformance.md: grant_types_supported includes client_credentials for Backend Services"
    )
    assert "S256" in smart_config["code_challenge_methods_supported"], (
        "conformance.md: code_challenge_methods_supported SHALL include S256"
    )
    assert "plain" not in smart_config["code_challenge_methods_supported"], (
        "conformance.md: code_challenge_methods_supported SHALL NOT include plain"
    )


def test_discovery_stu2_issuer_and_jwks_uri_follow_sso_openid_connect(
    smart_config: Document, openid_config: Document
) -> None:
    if "sso-openid-connect" in smart_config["capabilities"]:
        assert smart_config.get("issuer") == openid_config["issuer"], (
            "conformance.md: issuer is required with sso-openid-connect, the OIDC issuer"
        )
        assert smart_config.get("jwks_uri") == openid_config["jwks_uri"], (
            "conformance.md: jwks_uri is required with sso-openid-connect"
        )
    else:
        assert "issuer" not in smart_config, "conformance.md: issuer omitted without sso-openid-connect"


def test_discovery_stu2_endpoints_are_absolute_and_agree_with_oauth_metadata(
    smart_config: Document, openid_config: Document
) -> None:
    for field in (
        "authorization_endpoint",
        "token_endpoint",
        "introspection_endpoint",
        "revocation_endpoint",
        "jwks_uri",
        "issuer",
    ):
        if field in smart_config:
            parts = urlsplit(smart_config[field])
            assert parts.scheme in ("http", "https") and parts.netloc, (
                f"conformance.md: `{field}` is an absolute URL"
            )
            assert smart_config[field] == openid_config[field], f"`{field}` agrees with RFC 8414 metadata"


def test_discovery_stu2_asymmetric_clients_have_an_rs384_or_es384_algorithm(smart_config: Document) -> None:
    assert "client-confidential-asymmetric" in smart_config["capabilities"]
    assert "private_key_jwt" in smart_config["token_endpoint_auth_methods_supported"]
    algorithms = set(smart_config["token_endpoint_auth_signing_alg_values_supported"])
    assert {"RS384", "ES384"} <= algorithms, (
        "client-confidential-asymmetric.md: servers SHALL support RS384 or ES384 (both verified here)"
    )


def test_discovery_stu2_advertises_complete_capability_sets(smart_config: Document) -> None:
    capabilities = set(smart_config["capabilities"])
    client_type = {"client-public", "client-confidential-symmetric"} & capabilities
    assert client_type, "conformance.md §capability sets: a client type"
    sets = {
        "patient access for standalone apps": {
            "launch-standalone",
            "context-standalone-patient",
            "permission-patient",
        },
        "patient access for EHR launch": {"launch-ehr", "context-ehr-patient", "permission-patient"},
        "clinician access for EHR launch": {
            "launch-ehr",
            "context-ehr-patient",
            "context-ehr-encounter",
            "permission-user",
            "permission-patient",
        },
    }
    for name, needed in sets.items():
        assert needed <= capabilities, f"conformance.md §capability sets, {name}: {needed - capabilities}"


def test_discovery_stu2_2_scopes_supported_lists_the_launch_scopes(smart_config: Document) -> None:
    supported = set(smart_config["scopes_supported"])
    for scope in ("openid", "fhirUser", "launch", "launch/patient", "offline_access"):
        assert scope in supported, f"conformance.md: scopes_supported (RECOMMENDED) lists {scope}"


# Discovery, STU1 (discovery_stu1_group.rb: the CapabilityStatement's oauth-uris)

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def test_discovery_stu1_capability_statement_has_oauth_uris_equal_to_well_known(
    server: LiveServer, smart_config: Document
) -> None:
    response = httpx2.get(f"{server.url}/metadata", headers={"Accept": "application/fhir+json"})
    assert response.status_code == 200, "SMART 1.0 conformance: GET /metadata answers"
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    security = statement["rest"][0]["security"]
    [oauth] = [ext for ext in security["extension"] if ext["url"] == OAUTH_URIS]
    uris = {ext["url"]: ext["valueUri"] for ext in oauth["extension"]}
    assert uris["authorize"] == smart_config["authorization_endpoint"], (
        "SMART 1.0 conformance: oauth-uris authorize equals the well-known authorization_endpoint"
    )
    assert uris["token"] == smart_config["token_endpoint"], (
        "SMART 1.0 conformance: oauth-uris token equals the well-known token_endpoint"
    )
    for name, field in (("introspect", "introspection_endpoint"), ("revoke", "revocation_endpoint")):
        if name in uris:
            assert uris[name] == smart_config[field], f"SMART 1.0 conformance: oauth-uris {name}"
    codes = [c["code"] for s in security["service"] for c in s["coding"]]
    assert "SMART-on-FHIR" in codes, "SMART 1.0 conformance: security.service SMART-on-FHIR"


# Standalone launch (standalone_launch_group*.rb: app redirect, code received, token exchange,
# token response body and headers)


@pytest.fixture(scope="module")
def standalone(server: LiveServer) -> tuple[dict[str, str], httpx2.Response]:
    return launch(server, STANDALONE_SCOPE)


def test_standalone_redirect_carries_a_code_and_the_exact_state(server: LiveServer) -> None:
    verifier, challenge = pkce_pair()
    # A state with characters that must survive encoding both ways.
    params = authorize_params(server, STANDALONE_SCOPE, challenge, state="a b+c/d=e&f~" + uuid.uuid4().hex)
    found = browse(server, params)
    assert "error" not in found, f"app-launch.md §step-4: no error in the redirect: {found}"
    assert found["state"] == params["state"], "app-launch.md §step-4: state is the exact value received"
    assert found["code"], "app-launch.md §step-4: code is required"
    assert granted(exchange(server, found["code"], verifier))["access_token"]


def test_standalone_token_exchange_response(standalone: tuple[dict[str, str], httpx2.Response]) -> None:
    params, response = standalone
    assert response.headers["content-type"].startswith("application/json"), "RFC 6749 §5.1: JSON"
    assert_token_headers(response, "code exchange")
    body = granted(response)
    assert_token_body(body, params["scope"], "code exchange")
    assert isinstance(body.get("refresh_token"), str), "app-launch.md §step-5: offline_access gives one"
    assert "id_token" in body, "scopes-and-launch-context.md: openid granted gives an id_token"
    # scopes-and-launch-context.md: launch/patient in a standalone launch establishes the patient,
    # an id (not a reference).
    assert body.get("patient") == "p1", "scopes-and-launch-context.md: patient context is the id"
    if "fhirContext" in body:
        assert_fhir_context_stu2_2(body["fhirContext"])


def test_standalone_access_token_lifetime_is_at_most_an_hour(
    standalone: tuple[dict[str, str], httpx2.Response],
) -> None:
    assert 0 < granted(standalone[1])["expires_in"] <= 3600, (
        "app-launch.md §step-5: access tokens SHOULD have a lifetime no greater than one hour"
    )


def test_standalone_access_token_reads_the_fhir_api(
    server: LiveServer, standalone: tuple[dict[str, str], httpx2.Response]
) -> None:
    token = granted(standalone[1])["access_token"]
    response = httpx2.get(f"{server.url}/User/ann", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, "app-launch.md §step-6: the token reads the patient's data"
    other = httpx2.get(f"{server.url}/Client/{PUBLIC}", headers={"Authorization": f"Bearer {token}"})
    assert other.status_code == 403, "scopes-and-launch-context.md: patient/*.rs reaches no Client"


def test_standalone_code_is_single_use(server: LiveServer) -> None:
    verifier, challenge = pkce_pair()
    code = browse(server, authorize_params(server, STANDALONE_SCOPE, challenge))["code"]
    assert granted(exchange(server, code, verifier))
    again = exchange(server, code, verifier)
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant"), (
        "app-launch.md §step-4, RFC 6749 §4.1.2: an authorization code is used once"
    )


def test_standalone_token_exchange_needs_the_right_code_verifier(server: LiveServer) -> None:
    _, challenge = pkce_pair()
    code = browse(server, authorize_params(server, STANDALONE_SCOPE, challenge))["code"]
    for verifier in ("", pkce_pair()[0]):
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
        if verifier:
            form["code_verifier"] = verifier
        response = token_request(server, {**form, "client_id": PUBLIC})
        assert response.status_code == 400, "app-launch.md §step-5: code_verifier SHALL be present and valid"
        assert response.json()["error"] in ("invalid_grant", "invalid_request"), response.text
        assert_token_headers(response, "refused code exchange")


def test_standalone_token_exchange_needs_the_same_redirect_uri(server: LiveServer) -> None:
    verifier, challenge = pkce_pair()
    code = browse(server, authorize_params(server, STANDALONE_SCOPE, challenge))["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": f"{REDIRECT}/other",
        "code_verifier": verifier,
        "client_id": PUBLIC,
    }
    response = token_request(server, form)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant"), (
        "app-launch.md §step-5, RFC 6749 §4.1.3: redirect_uri is the one of the authorization request"
    )


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "", "code_challenge_method": ""}, "invalid_request"),
        ({"aud": "https://counterfeit.example/fhir"}, "invalid_request"),
        ({"aud": ""}, "invalid_request"),
    ],
    ids=["pkce-plain", "pkce-missing", "aud-foreign", "aud-missing"],
)
def test_standalone_authorize_refuses_what_smart_forbids(
    server: LiveServer, change: dict[str, str], error: str
) -> None:
    _, challenge = pkce_pair()
    params = {**authorize_params(server, STANDALONE_SCOPE, challenge), **change}
    found = browse(server, {name: value for name, value in params.items() if value})
    assert "code" not in found, f"app-launch.md §step-4 (PKCE S256, aud SHALL): refused {change}"
    assert (found["error"], found["state"]) == (error, params["state"]), found


def test_standalone_aud_equal_to_the_fhir_base_with_a_slash_is_accepted(server: LiveServer) -> None:
    params, response = launch(server, "launch/patient patient/*.rs", aud=f"{server.url}/")
    assert granted(response)["patient"] == "p1", "app-launch.md §step-4: aud is the FHIR base URL"


def test_standalone_authorize_accepts_post(server: LiveServer) -> None:
    verifier, challenge = pkce_pair()
    params = authorize_params(server, STANDALONE_SCOPE, challenge)
    with httpx2.Client(base_url=server.url, follow_redirects=False) as browser:
        answer = browser.post("/auth/authorize", data=params)
    assert answer.status_code in (200, 302, 303), (
        "app-launch.md §step-4 (from OIDC Core §3.1.2.1): authorization servers SHALL support "
        f"GET and POST at the authorization endpoint; POST answered {answer.status_code}"
    )


def test_standalone_confidential_symmetric_client_authenticates_with_basic(server: LiveServer) -> None:
    params, response = launch(server, STANDALONE_SCOPE, client_id=CONFIDENTIAL)
    assert_token_headers(response, "confidential code exchange")
    assert_token_body(granted(response), params["scope"], "confidential code exchange")
    verifier, challenge = pkce_pair()
    code = browse(server, authorize_params(server, STANDALONE_SCOPE, challenge, client_id=CONFIDENTIAL))
    wrong = token_request(
        server,
        {
            "grant_type": "authorization_code",
            "code": code["code"],
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
        auth=(CONFIDENTIAL, "wrong"),
    )
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client"), (
        "client-confidential-symmetric.md, RFC 6749 §5.2: a wrong secret is invalid_client"
    )


# EHR launch (ehr_launch_group*.rb: launch received, app redirect, token exchange, context)

EHR_CONTEXT: Document = {
    "patient": "p9",
    "encounter": "e1",
    "fhirContext": [{"reference": "Observation/o1"}, {"reference": "DocumentReference/d7", "role": "source"}],
    "need_patient_banner": True,
    "smart_style_url": "https://ehr.example/style/v1.json",
    "intent": "reconcile-medications",
}


def register_launch(server: LiveServer, **context: Any) -> str:
    response = httpx2.post(
        f"{server.url}/auth/smart/launch", json={"client": PUBLIC, **context}, auth=(EHR, EHR_SECRET)
    )
    assert response.status_code == 201, response.text
    launch_id: str = response.json()["launch"]
    return launch_id


@pytest.fixture(scope="module")
def ehr_launch(server: LiveServer) -> tuple[dict[str, str], httpx2.Response]:
    launch_id = register_launch(server, **EHR_CONTEXT)
    # app-launch.md §step-3: the EHR opens the app with iss (= the FHIR base) and launch; aud = iss.
    return launch(server, EHR_SCOPE + " launch/encounter", user="doc", launch=launch_id)


def test_ehr_launch_token_response_carries_the_launch_context(
    ehr_launch: tuple[dict[str, str], httpx2.Response], smart_config: Document
) -> None:
    params, response = ehr_launch
    assert_token_headers(response, "EHR code exchange")
    body = granted(response)
    assert_token_body(body, params["scope"], "EHR code exchange")
    assert (body["patient"], body["encounter"]) == ("p9", "e1"), (
        "scopes-and-launch-context.md: patient and encounter are the launch's, as ids"
    )
    assert_fhir_context_stu2_2(body["fhirContext"])
    assert body["fhirContext"] == EHR_CONTEXT["fhirContext"]
    if "context-banner" in smart_config["capabilities"]:
        assert body["need_patient_banner"] is True, "context-banner: need_patient_banner, a boolean"
    if "context-style" in smart_config["capabilities"]:
        assert body["smart_style_url"] == EHR_CONTEXT["smart_style_url"], "context-style: smart_style_url"
    assert body["intent"] == EHR_CONTEXT["intent"], "scopes-and-launch-context.md: intent"


def test_ehr_launch_id_is_used_once(
    server: LiveServer, ehr_launch: tuple[dict[str, str], httpx2.Response]
) -> None:
    _, challenge = pkce_pair()
    params = authorize_params(server, EHR_SCOPE, challenge, launch=ehr_launch[0]["launch"])
    found = browse(server, params, "doc")
    assert "code" not in found and found["error"] == "invalid_request", (
        "app-launch.md §step-4: a launch id is bound to one launch"
    )


# OpenID Connect (openid_connect_group*.rb)


def test_openid_configuration_is_retrieved_from_the_issuer(
    server: LiveServer, smart_config: Document
) -> None:
    response = httpx2.get(f"{smart_config['issuer'].rstrip('/')}/.well-known/openid-configuration")
    assert response.status_code == 200, "OIDC Discovery §4: {issuer}/.well-known/openid-configuration"
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["issuer"] == smart_config["issuer"], "OIDC Discovery §4.3: issuer matches"


def test_openid_configuration_required_fields(openid_config: Document) -> None:
    for field in (
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "response_types_supported",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
    ):
        assert openid_config.get(field), f"OIDC Discovery §3: `{field}` is REQUIRED"
    assert "RS256" in openid_config["id_token_signing_alg_values_supported"], (
        "OIDC Discovery §3, scopes-and-launch-context.md: RS256 SHALL be supported"
    )


@pytest.fixture(scope="module")
def jwks(server: LiveServer, openid_config: Document) -> Document:
    response = httpx2.get(openid_config["jwks_uri"])
    assert response.status_code == 200, "OIDC Discovery §3: jwks_uri answers"
    body: Document = response.json()
    return body


def test_openid_jwks_keys_have_kids(jwks: Document) -> None:
    keys = jwks["keys"]
    assert keys, "scopes-and-launch-context.md: the JWKS SHALL be published"
    assert any(key["kty"] == "RSA" for key in keys), "an RSA key for RS256"
    if len(keys) > 1:
        assert all(key.get("kid") for key in keys), "Inferno: a JWKS of several keys needs a kid on each"
    for key in keys:
        assert "d" not in key and "p" not in key, "RFC 7517: no private part in a published key"


def test_openid_id_token_header_and_signature(
    standalone: tuple[dict[str, str], httpx2.Response], jwks: Document, openid_config: Document
) -> None:
    id_token = granted(standalone[1])["id_token"]
    header = jwt_header(id_token)
    assert header["alg"] == "RS256", "scopes-and-launch-context.md §OIDC: the ID token is RS256"
    [key] = [k for k in jwks["keys"] if k.get("kid") == header.get("kid")]
    assert key["kty"] == "RSA", "Inferno openid_token_header: the kid names an RS256 (RSA) key"
    keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    token = jwt.decode(id_token, keys, algorithms=["RS256"])
    claims = token.claims
    for claim in ("iss", "sub", "aud", "exp", "iat"):
        assert claim in claims, f"OIDC Core §2: `{claim}` is required in the ID token"
    assert claims["iss"] == openid_config["issuer"], "OIDC Core §3.1.3.7: iss is the discovery issuer"
    assert claims["aud"] in (PUBLIC, [PUBLIC]), "OIDC Core §3.1.3.7: aud is the client_id"
    assert claims["exp"] > time.time(), "OIDC Core §3.1.3.7: exp in the future"
    assert isinstance(claims["sub"], str) and 0 < len(claims["sub"]) <= 255, "OIDC Core §2: sub ≤ 255"


def test_openid_id_token_fhir_user_claim(standalone: tuple[dict[str, str], httpx2.Response]) -> None:
    claims = jwt_claims(granted(standalone[1])["id_token"])
    fhir_user = claims.get("fhirUser")
    assert fhir_user, "scopes-and-launch-context.md: fhirUser SHALL be in the ID token with openid fhirUser"
    path = urlsplit(fhir_user).path if fhir_user.startswith("http") else fhir_user
    resource_type, fhir_id = path.rsplit("/", 2)[-2:]
    assert resource_type in FHIR_USER_TYPES and FHIR_ID.fullmatch(fhir_id), (
        f"scopes-and-launch-context.md: fhirUser names a {FHIR_USER_TYPES}: {fhir_user}"
    )


@pytest.mark.xfail(
    strict=True,
    reason="fhirauth holds no clinical resources: the fhirUser Patient/Practitioner is not readable here",
)
def test_openid_fhir_user_can_be_read_with_the_access_token(
    server: LiveServer, standalone: tuple[dict[str, str], httpx2.Response]
) -> None:
    body = granted(standalone[1])
    fhir_user = jwt_claims(body["id_token"])["fhirUser"]
    url = fhir_user if fhir_user.startswith("http") else f"{server.url}/{fhir_user}"
    response = httpx2.get(url, headers={"Authorization": f"Bearer {body['access_token']}"})
    assert response.status_code == 200, "Inferno openid_fhir_user_claim: the fhirUser resource is readable"


# Token refresh (token_refresh_*_test.rb)


def refresh(server: LiveServer, refresh_token: str, scope: str | None) -> httpx2.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": PUBLIC}
    if scope is not None:
        form["scope"] = scope
    return token_request(server, form)


@pytest.mark.parametrize("with_scope", [True, False], ids=["with-scope", "without-scope"])
def test_token_refresh_response(server: LiveServer, with_scope: bool) -> None:
    params, first = launch(server, STANDALONE_SCOPE)
    original = granted(first)
    response = refresh(server, original["refresh_token"], original["scope"] if with_scope else None)
    assert_token_headers(response, "refresh")
    body = granted(response)
    # app-launch.md §step-7: expires_in and scope are required on refresh.
    assert_token_body(body, params["scope"], "refresh")
    extra = set(body["scope"].split()) - set(original["scope"].split())
    assert not extra, f"app-launch.md §step-7: the refreshed scope is within the original: {extra}"
    if "refresh_token" in body:
        assert isinstance(body["refresh_token"], str)
    new_token = body["access_token"]
    read = httpx2.get(f"{server.url}/User/ann", headers={"Authorization": f"Bearer {new_token}"})
    assert read.status_code == 200, "app-launch.md §step-7: the new access token works"


def test_token_refresh_with_a_narrower_scope_and_not_a_wider_one(server: LiveServer) -> None:
    _, first = launch(server, "launch/patient patient/*.rs offline_access")
    original = granted(first)
    narrower = granted(refresh(server, original["refresh_token"], "patient/*.rs offline_access"))
    assert narrower["scope"] == "patient/*.rs offline_access", "app-launch.md §step-7: a strict subset"
    refresh_token = str(narrower.get("refresh_token") or original["refresh_token"])
    wider = refresh(server, refresh_token, "patient/*.rs offline_access user/*.rs")
    assert (wider.status_code, wider.json()["error"]) == (400, "invalid_scope"), (
        "RFC 6749 §6: a refresh may not widen the scope"
    )


# Token introspection (token_introspection_*_test.rb)


def introspect(server: LiveServer, token: str) -> httpx2.Response:
    return httpx2.post(
        f"{server.url}/auth/introspect", data={"token": token}, auth=(CONFIDENTIAL, CONFIDENTIAL_SECRET)
    )


def test_token_introspection_of_an_active_token(server: LiveServer) -> None:
    _, response = launch(server, STANDALONE_SCOPE, client_id=CONFIDENTIAL)
    tokens = granted(response)
    answer = introspect(server, tokens["access_token"])
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    claims = answer.json()
    assert claims["active"] is True, "RFC 7662 §2.2: active"
    assert claims["scope"] == tokens["scope"], "token-introspection.md: scope SHALL be the granted scope"
    assert claims["client_id"] == CONFIDENTIAL, "token-introspection.md: client_id SHALL be included"
    assert isinstance(claims["exp"], int), "token-introspection.md: exp SHALL be included"
    assert abs(claims["exp"] - (time.time() + tokens["expires_in"])) < 60, "exp matches expires_in"
    assert claims["patient"] == tokens["patient"], "token-introspection.md: launch context SHALL appear"
    id_claims = jwt_claims(tokens["id_token"])
    assert (claims["iss"], claims["sub"]) == (id_claims["iss"], id_claims["sub"]), (
        "token-introspection.md: iss and sub of the ID token SHALL appear when one was issued"
    )
    assert claims.get("fhirUser") == id_claims["fhirUser"], "token-introspection.md: fhirUser SHOULD"


def test_token_introspection_carries_the_ehr_launch_context(
    server: LiveServer, ehr_launch: tuple[dict[str, str], httpx2.Response]
) -> None:
    tokens = granted(ehr_launch[1])
    answer = httpx2.post(
        f"{server.url}/auth/introspect",
        data={"token": tokens["access_token"]},
        auth=("root", ROOT_CLIENT_SECRET),
    )
    claims = answer.json()
    for name in ("patient", "encounter", "fhirContext", "need_patient_banner", "smart_style_url", "intent"):
        assert claims.get(name) == tokens[name], (
            f"token-introspection.md: the launch context parameter `{name}` SHALL be in the response"
        )


def test_token_introspection_of_an_inactive_token(server: LiveServer) -> None:
    for token in ("not-a-token", secrets.token_urlsafe(32)):
        answer = introspect(server, token)
        assert (answer.status_code, answer.json()) == (200, {"active": False}), (
            'RFC 7662 §2.2: an unknown token is 200 {"active": false}'
        )


def test_token_introspection_needs_an_authenticated_caller(server: LiveServer) -> None:
    answer = httpx2.post(f"{server.url}/auth/introspect", data={"token": "x"})
    assert answer.status_code == 401, "token-introspection.md: callers MAY be required to authenticate"


# Backend services (backend_services_*_test.rb)


def backend_assertion(
    server: LiveServer, key: RSAKey | ECKey = RS384, alg: str = "RS384", **claims: Any
) -> str:
    now = int(time.time())
    body = {
        "iss": BACKEND,
        "sub": BACKEND,
        "aud": f"{server.url}/auth/token",
        "exp": now + 240,
        "jti": str(uuid.uuid4()),
        **claims,
    }
    header = {"alg": alg, "kid": key.kid, "typ": "JWT"}
    return jwt.encode(header, {k: v for k, v in body.items() if v is not None}, key, algorithms=[alg])


def backend_form(assertion: str, **change: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "scope": BACKEND_SCOPE,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
        **change,
    }


@pytest.mark.parametrize(("alg", "key"), [("RS384", RS384), ("ES384", ES384)], ids=["RS384", "ES384"])
def test_backend_services_token_response(server: LiveServer, alg: str, key: RSAKey | ECKey) -> None:
    response = token_request(server, backend_form(backend_assertion(server, key, alg)))
    assert response.status_code == 200, f"backend-services.md: a valid {alg} assertion is accepted"
    assert_token_headers(response, "backend services")
    body = response.json()
    assert_token_body(body, BACKEND_SCOPE, "backend services")
    assert body["expires_in"] == BACKEND_TOKEN_SECONDS, (
        "backend-services.md: expires_in SHOULD NOT exceed 300 (the client's registered lifetime)"
    )
    assert "refresh_token" not in body, "backend-services.md: refresh tokens SHOULD NOT be issued"
    read = httpx2.get(f"{server.url}/User/ann", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert read.status_code == 200, "backend-services.md: the token reads with its system/ scopes"


def test_backend_services_invalid_grant_type(server: LiveServer) -> None:
    response = token_request(server, backend_form(backend_assertion(server), grant_type="not_a_grant_type"))
    assert (response.status_code, response.json()["error"]) == (400, "unsupported_grant_type"), (
        "backend-services.md, RFC 6749 §5.2: an unknown grant_type is 400 unsupported_grant_type"
    )


def test_backend_services_invalid_client_assertion_type(server: LiveServer) -> None:
    response = token_request(
        server, backend_form(backend_assertion(server), client_assertion_type="not_an_assertion_type")
    )
    assert response.status_code == 400, (
        "backend-services.md, RFC 6749 §5.2 (an unsupported parameter value is invalid_request): "
        f"Inferno asserts 400 for a bad client_assertion_type; got {response.status_code} {response.text}"
    )
    assert response.json()["error"] == "invalid_request"
    assert_token_headers(response, "refused backend request")


@pytest.mark.parametrize(
    "assertion",
    [
        pytest.param(lambda s: backend_assertion(s, FORGER), id="wrong-key"),
        pytest.param(lambda s: backend_assertion(s, aud="https://counterfeit.example/token"), id="aud"),
        pytest.param(lambda s: backend_assertion(s, exp=int(time.time()) + 3600), id="exp-too-far"),
        pytest.param(lambda s: backend_assertion(s, exp=int(time.time()) - 60), id="expired"),
        pytest.param(lambda s: backend_assertion(s, sub="someone-else"), id="sub-not-iss"),
        pytest.param(lambda s: backend_assertion(s, jti=None), id="no-jti"),
        pytest.param(
            lambda s: jwt.encode(
                {"alg": "HS256", "kid": RS384.kid, "typ": "JWT"},
                {"iss": BACKEND, "sub": BACKEND, "aud": f"{s.url}/auth/token", "exp": int(time.time()) + 60},
                OctKey.import_key(secrets.token_bytes(32)),
                algorithms=["HS256"],
            ),
            id="hs256",
        ),
        pytest.param(lambda s: "not.a.jwt", id="garbage"),
    ],
)
def test_backend_services_invalid_jwt(server: LiveServer, assertion: Any) -> None:
    response = token_request(server, backend_form(assertion(server)))
    assert response.status_code in (400, 401), (
        "backend-services.md, client-confidential-asymmetric.md: an invalid assertion is refused (400/401)"
    )
    assert response.json()["error"] == "invalid_client", "RFC 7521 §4.2.1: invalid_client"


def _signed(server: LiveServer, header: Document) -> str:
    now = int(time.time())
    claims = {
        "iss": BACKEND,
        "sub": BACKEND,
        "aud": f"{server.url}/auth/token",
        "exp": now + 240,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(header, claims, RS384, algorithms=["RS384"])


def test_backend_services_a_jku_other_than_the_registered_one_fails(server: LiveServer) -> None:
    header = {"alg": "RS384", "kid": RS384.kid, "typ": "JWT", "jku": "https://counterfeit.example/jwks"}
    response = token_request(server, backend_form(_signed(server, header)))
    assert response.status_code == 401, (
        "client-confidential-asymmetric.md §Signature Verification 1a: a jku that is not the "
        "registered JWKS URL SHALL fail verification (invalid_client)"
    )


def test_backend_services_an_assertion_without_kid_fails(server: LiveServer) -> None:
    response = token_request(server, backend_form(_signed(server, {"alg": "RS384", "typ": "JWT"})))
    assert response.status_code == 401, (
        "client-confidential-asymmetric.md: kid is required; §Signature Verification 3 SHALL pick "
        "the single key whose kid matches the header's, else verification fails"
    )


def test_backend_services_assertion_is_used_once(server: LiveServer) -> None:
    signed = backend_assertion(server)
    assert token_request(server, backend_form(signed)).status_code == 200
    replay = token_request(server, backend_form(signed))
    assert (replay.status_code, replay.json()["error"]) == (401, "invalid_client"), (
        "backend-services.md: a jti is not used twice"
    )


def test_backend_services_grant_only_system_scopes(server: LiveServer) -> None:
    response = token_request(server, backend_form(backend_assertion(server), scope="user/*.rs"))
    assert (response.status_code, response.json()["error"]) == (400, "invalid_scope"), (
        "backend-services.md: scope within the client's pre-authorised system/ scopes"
    )


# CORS (cors_*_test.rb; app-launch.md §CORS)


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/smart-configuration",
        "/metadata",
        "/.well-known/openid-configuration",
        "/.well-known/jwks.json",
    ],
)
def test_cors_discovery_documents_answer_any_origin(server: LiveServer, path: str) -> None:
    response = httpx2.get(f"{server.url}{path}", headers={"Origin": "https://any-app.example"})
    assert response.status_code == 200
    assert response.headers.get("access-control-allow-origin") in ("*", "https://any-app.example"), (
        f"app-launch.md §CORS: {path} is readable from any origin"
    )


def test_cors_token_exchange_of_a_public_client(server: LiveServer) -> None:
    verifier, challenge = pkce_pair()
    code = browse(server, authorize_params(server, STANDALONE_SCOPE, challenge))["code"]
    origin = {"Origin": APP_ORIGIN}
    preflight = httpx2.options(
        f"{server.url}/auth/token",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code in (200, 204), "app-launch.md §CORS: the token endpoint's preflight"
    assert preflight.headers.get("access-control-allow-origin") in ("*", APP_ORIGIN)
    assert "POST" in preflight.headers.get("access-control-allow-methods", "")
    response = exchange(server, code, verifier, headers=origin)
    assert response.status_code == 200
    assert response.headers.get("access-control-allow-origin") in ("*", APP_ORIGIN), (
        "app-launch.md §CORS (Inferno cors_token_exchange): the app's origin may read the token"
    )
    token = response.json()["access_token"]
    read = httpx2.get(f"{server.url}/User/ann", headers={**origin, "Authorization": f"Bearer {token}"})
    assert read.headers.get("access-control-allow-origin") in ("*", APP_ORIGIN), (
        "app-launch.md §CORS: the FHIR API answers the app's origin"
    )


def test_cors_token_endpoint_errors_carry_the_header(server: LiveServer) -> None:
    response = token_request(
        server,
        {
            "grant_type": "authorization_code",
            "code": "no-such-code",
            "redirect_uri": REDIRECT,
            "code_verifier": "x" * 43,
            "client_id": PUBLIC,
        },
        headers={"Origin": APP_ORIGIN},
    )
    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")
    assert response.headers.get("access-control-allow-origin") in ("*", APP_ORIGIN), (
        "app-launch.md §CORS: an error the app must read carries the CORS header too"
    )


def test_cors_is_not_granted_to_a_foreign_origin_on_the_token_endpoint(server: LiveServer) -> None:
    response = token_request(
        server, {"grant_type": "client_credentials"}, headers={"Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in response.headers, (
        "app-launch.md §CORS: the token endpoint is for the client's registered origins"
    )
