"""Every RFC 6749 §5.2 error of POST /auth/token, over HTTP on both backends: status, body, headers."""

from __future__ import annotations

import base64
import json

import pytest
from starlette.testclient import TestClient

from tests.api.oauth_support import NO_STORE, PASSWORD, REDIRECT, SECRET, basic, setup_world, token

NO_AUTH = {"Authorization": ""}


@pytest.fixture
def world(api: TestClient) -> TestClient:
    setup_world(api)
    return api


def assert_oauth_error(response: object, status: int, error: str, description: str) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.json() == {"error": error, "error_description": description}  # type: ignore[attr-defined]
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["content-type"] == "application/json"
    assert (headers["cache-control"], headers["pragma"]) == (NO_STORE["cache-control"], NO_STORE["pragma"])


# invalid_request


def test_missing_grant_type(world: TestClient) -> None:
    assert_oauth_error(token(world), 400, "invalid_request", "Missing 'grant_type'")


def test_repeated_parameter(world: TestClient) -> None:
    body = "grant_type=client_credentials&grant_type=password&client_id=app&client_secret=app-secret"
    response = world.post(
        "/auth/token",
        content=body,
        headers={**NO_AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_oauth_error(response, 400, "invalid_request", "Parameter 'grant_type' is repeated")


def test_unsupported_content_type(world: TestClient) -> None:
    response = world.post(
        "/auth/token", content="grant_type: password", headers={**NO_AUTH, "Content-Type": "text/yaml"}
    )
    assert_oauth_error(
        response,
        400,
        "invalid_request",
        "Send parameters as application/x-www-form-urlencoded or application/json",
    )


@pytest.mark.parametrize(
    ("body", "description"),
    [
        (b"{not json", "Malformed JSON body"),
        (b"[1, 2]", "The JSON body must be an object"),
        (b'{"grant_type": ["password"]}', "Parameter 'grant_type' must be a string"),
        (b'{"grant_type": true}', "Parameter 'grant_type' must be a string"),
        (b'{"grant_type": {"$ne": 1}}', "Parameter 'grant_type' must be a string"),
        (b'{"grant_type": "password\\u0000"}', "Parameters may not contain NUL characters"),
    ],
)
def test_malformed_json_body(world: TestClient, body: bytes, description: str) -> None:
    response = world.post(
        "/auth/token", content=body, headers={**NO_AUTH, "Content-Type": "application/json"}
    )
    assert_oauth_error(response, 400, "invalid_request", description)


def test_malformed_form_body(world: TestClient) -> None:
    response = world.post(
        "/auth/token",
        content=b"grant_type=\xff\xfe",
        headers={**NO_AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_oauth_error(response, 400, "invalid_request", "Malformed form body")


def test_oversized_body(world: TestClient) -> None:
    response = world.post(
        "/auth/token", data={"grant_type": "password", "username": "a" * 70000}, headers=NO_AUTH
    )
    assert_oauth_error(response, 400, "invalid_request", "Request body is larger than 65536 bytes")


def test_client_credentials_in_both_header_and_body(world: TestClient) -> None:
    response = token(world, basic("app", SECRET), grant_type="client_credentials", client_secret=SECRET)
    assert_oauth_error(
        response,
        400,
        "invalid_request",
        "Client credentials sent twice: use HTTP Basic or the body, not both",
    )


def test_body_client_id_contradicting_basic(world: TestClient) -> None:
    response = token(world, basic("app", SECRET), grant_type="client_credentials", client_id="other")
    assert_oauth_error(response, 400, "invalid_request", "'client_id' does not match the Basic credentials")


@pytest.mark.parametrize(
    ("form", "description"),
    [
        ({"grant_type": "password", "password": PASSWORD}, "Missing 'username'"),
        ({"grant_type": "password", "username": "ann", "password": ""}, "Missing 'password'"),
        ({"grant_type": "authorization_code", "redirect_uri": REDIRECT}, "Missing 'code'"),
        ({"grant_type": "refresh_token"}, "Missing 'refresh_token'"),
    ],
)
def test_missing_grant_parameter(world: TestClient, form: dict[str, str], description: str) -> None:
    assert_oauth_error(token(world, **form), 400, "invalid_request", description)


# invalid_client


def test_unknown_client_in_the_body_is_401_without_a_challenge(world: TestClient) -> None:
    response = token(world, NO_AUTH, grant_type="client_credentials", client_id="nobody", client_secret="x")
    assert_oauth_error(response, 401, "invalid_client", "Invalid client credentials")
    assert "www-authenticate" not in response.headers


def test_wrong_secret_with_basic_is_401_with_a_basic_challenge(world: TestClient) -> None:
    response = token(world, basic("app", "wrong"), grant_type="client_credentials")
    assert_oauth_error(response, 401, "invalid_client", "Invalid client credentials")
    assert response.headers["www-authenticate"] == 'Basic realm="fhirauth"'


def test_malformed_basic_credentials(world: TestClient) -> None:
    response = token(world, {"Authorization": "Basic !!!"}, grant_type="client_credentials")
    assert_oauth_error(response, 401, "invalid_client", "Malformed Basic credentials")
    assert response.headers["www-authenticate"] == 'Basic realm="fhirauth"'


def test_bearer_at_the_token_endpoint(world: TestClient) -> None:
    response = token(world, {"Authorization": "Bearer abc"}, grant_type="client_credentials")
    assert_oauth_error(
        response, 401, "invalid_client", "Authenticate the client with HTTP Basic or in the body"
    )
    assert response.headers["www-authenticate"] == 'Basic realm="fhirauth"'


def test_no_client_at_all(world: TestClient) -> None:
    response = token(world, NO_AUTH, grant_type="client_credentials")
    assert_oauth_error(
        response, 401, "invalid_client", "Client authentication required: HTTP Basic or 'client_id'"
    )


def test_confidential_client_without_its_secret(world: TestClient) -> None:
    response = token(
        world, NO_AUTH, grant_type="password", client_id="app", username="ann", password=PASSWORD
    )
    assert_oauth_error(response, 401, "invalid_client", "This client must authenticate with its secret")


# invalid_grant


def test_wrong_password(world: TestClient) -> None:
    response = token(world, grant_type="password", username="ann@example.org", password="wrong")
    assert_oauth_error(response, 400, "invalid_grant", "Invalid username or password")


def test_inactive_user(world: TestClient) -> None:
    world.patch("/User/ann", json={"inactive": True})
    response = token(world, grant_type="password", username="ann@example.org", password=PASSWORD)
    assert_oauth_error(response, 400, "invalid_grant", "User is inactive")


def test_unknown_code(world: TestClient) -> None:
    response = token(world, grant_type="authorization_code", code="nope", redirect_uri=REDIRECT)
    assert_oauth_error(response, 400, "invalid_grant", "Invalid or expired authorization code")


def test_unknown_refresh_token(world: TestClient) -> None:
    response = token(world, grant_type="refresh_token", refresh_token="nope")
    assert_oauth_error(response, 400, "invalid_grant", "Invalid refresh token")


# unauthorized_client, unsupported_grant_type, invalid_scope


def test_grant_missing_from_grant_types(world: TestClient) -> None:
    setup_world(world, grant_types=["client_credentials"])
    response = token(world, grant_type="password", username="ann", password=PASSWORD)
    assert_oauth_error(response, 400, "unauthorized_client", "This client may not use the password grant")


def test_unknown_grant_type(world: TestClient) -> None:
    response = token(world, grant_type="urn:ietf:params:oauth:grant-type:jwt-bearer")
    assert_oauth_error(
        response,
        400,
        "unsupported_grant_type",
        "Unsupported 'grant_type'; use one of authorization_code, password, client_credentials, refresh_token",
    )


def test_malformed_scope(world: TestClient) -> None:
    response = token(world, grant_type="client_credentials", scope="a\\b")
    assert_oauth_error(
        response, 400, "invalid_scope", "Malformed 'scope': space-separated tokens of printable ASCII"
    )


def test_scope_not_allowed_to_the_client(world: TestClient) -> None:
    setup_world(world, scope=["read"])
    response = token(world, grant_type="client_credentials", scope="read write")
    assert_oauth_error(response, 400, "invalid_scope", "Scope 'write' is not allowed for this client")


# Nothing malformed becomes a 500


@pytest.mark.parametrize(
    "body",
    [
        "",
        "=",
        "&&&",
        "grant_type",
        "grant_type=password&username=%00&password=x&client_id=app&client_secret=app-secret",
        "grant_type=password&username[$ne]=1&password=x&client_id=app&client_secret=app-secret",
        "grant_type=refresh_token&refresh_token=" + "x" * 5000 + "&client_id=app&client_secret=app-secret",
        "grant_type=authorization_code&code=" + "%FF" * 10 + "&client_id=app&client_secret=app-secret",
        "grant_type=client_credentials&client_id=" + "\u00e9" + "&client_secret=x",
        "&".join(f"p{n}=1" for n in range(100)),
    ],
)
def test_garbage_is_a_4xx_oauth_error(world: TestClient, body: str) -> None:
    response = world.post(
        "/auth/token", content=body, headers={**NO_AUTH, "Content-Type": "application/x-www-form-urlencoded"}
    )
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()) == {"error", "error_description"}


def test_json_body_is_accepted_like_a_form(world: TestClient) -> None:
    body = {"grant_type": "client_credentials", "client_id": "app", "client_secret": SECRET, "expires": 1}
    response = world.post(
        "/auth/token", content=json.dumps(body), headers={**NO_AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 200
    assert response.json()["token_type"] == "Bearer"


def test_basic_credentials_from_a_standard_client(world: TestClient) -> None:
    header = "Basic " + base64.b64encode(b"app:app-secret").decode()
    response = token(world, {"Authorization": header}, grant_type="client_credentials")
    assert response.status_code == 200
