"""/auth/authorize by form POST (OpenID Connect Core §3.1.2.1: GET and POST MUST be supported; SMART App
Launch: SHALL): the same request as by GET, read from an urlencoded body, with the same answers.
Rules of the request, not of storage: SQLite only."""

from __future__ import annotations

from urllib.parse import urlencode

import httpx2
import pytest
from starlette.testclient import TestClient

from tests.api.oidc_support import CB, answer, rp_request, setup_clients, sign_in

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def storage_url() -> str:
    return "sqlite://:memory:"


@pytest.fixture
def clients(api: TestClient) -> None:
    setup_clients(api)


def post(api: TestClient, body: str | bytes, headers: dict[str, str] = FORM) -> httpx2.Response:
    return api.post("/auth/authorize", content=body, headers=headers, follow_redirects=False)


def test_a_signed_out_browser_is_sent_to_sign_in_with_the_request(api: TestClient, clients: None) -> None:
    query = urlencode(rp_request("code"))
    response = post(api, query)
    assert (response.status_code, response.headers["location"]) == (302, f"/auth/login?{query}")


def test_a_signed_in_browser_gets_the_same_answer_as_by_get(api: TestClient, clients: None) -> None:
    sign_in(api)
    response = post(api, urlencode(rp_request("code")))
    assert response.status_code == 302, response.text
    params = answer(response.headers["location"], CB, "query")
    assert sorted(params) == ["code", "state"] and params["state"] == "st-1"
    token = api.post(
        "/auth/token",
        data={"grant_type": "authorization_code", "code": params["code"], "redirect_uri": CB},
        auth=("rp", "rp-secret"),
    )
    assert token.status_code == 200 and "id_token" in token.json(), token.text


def test_its_errors_are_those_of_get(api: TestClient, clients: None) -> None:
    """A repeated parameter (Core §3.1.2.1) goes back to the client, as by GET."""
    repeated = urlencode(rp_request("code")) + "&scope=profile"
    by_post, by_get = post(api, repeated), api.get(f"/auth/authorize?{repeated}", follow_redirects=False)
    assert by_post.status_code == by_get.status_code == 302
    assert by_post.headers["location"] == by_get.headers["location"]
    assert answer(by_post.headers["location"], CB, "query")["error"] == "invalid_request"
    unknown = post(api, urlencode({**rp_request("code"), "client_id": "nobody"}))
    assert unknown.status_code == 400 and "text/html" in unknown.headers["content-type"]


@pytest.mark.parametrize(
    ("body", "headers", "status", "text"),
    [
        (b"client_id=rp", {"Content-Type": "application/json"}, 415, "Expected an HTML form."),
        (b"client_id=rp", {}, 415, "Expected an HTML form."),
        (b"a=" + b"x" * 70_000, FORM, 413, "The form is too large."),
        (b"client_id=\xff", FORM, 400, "The form could not be read."),
    ],
)
def test_a_body_that_is_no_form_is_refused_with_a_page(
    api: TestClient, clients: None, body: bytes, headers: dict[str, str], status: int, text: str
) -> None:
    response = post(api, body, headers)
    assert response.status_code == status
    assert "text/html" in response.headers["content-type"]
    assert text in response.text
