"""GET /auth/authorize through the pages: login, consent once, the redirect; unsafe requests never redirect."""

from __future__ import annotations

from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest
from starlette.testclient import TestClient

from tests.api.conftest import NO_AUTH
from tests.api.pages_support import PASSWORD, call, create_user, csrf_from, form_action, login, services

CALLBACK = "https://shop.example.org/cb"


@pytest.fixture
def clients(api: TestClient) -> None:
    api.put(
        "/Client/shop",
        json={
            "resourceType": "Client",
            "name": "The <Shop>",
            "secret": "shop-secret",
            "grant_types": ["authorization_code"],
            "auth": {"authorization_code": {"redirect_uri": CALLBACK}},
        },
    )
    api.put(
        "/Client/web",
        json={
            "resourceType": "Client",
            "first_party": True,
            "grant_types": ["implicit"],
            "auth": {
                "implicit": {"redirect_uri": "http://localhost:3000/auth", "access_token_expiration": 3600}
            },
        },
    )
    create_user(api, "ann")


def shop_query(**extra: str) -> str:
    params = {
        "response_type": "code",
        "client_id": "shop",
        "redirect_uri": CALLBACK,
        "state": "st-1",
        **extra,
    }
    return urlencode(params)


def grants(api: TestClient) -> list[dict[str, object]]:
    return [entry["resource"] for entry in api.get("/Grant").json()["entry"]]


def test_without_a_session_authorize_goes_to_login_with_the_same_query(
    api: TestClient, clients: None
) -> None:
    query = shop_query(scope="openid profile")
    response = api.get(f"/auth/authorize?{query}", follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == f"/auth/login?{query}"


def test_login_consent_and_code_redirect(api: TestClient, clients: None) -> None:
    query = shop_query(scope="openid profile")
    # 1. the login page posts back to itself with the client's query
    page = api.get(f"/auth/login?{query}")
    assert form_action(page) == f"/auth/login?{query}"
    # 2. the password sends the browser back to /auth/authorize
    res2 = login(api, "ann@example.org", query=query)
    assert (res2.status_code, res2.headers["location"]) == (302, f"/auth/authorize?{query}")
    # 3. a client that is not first-party asks for consent
    res3 = api.get(res2.headers["location"], follow_redirects=False)
    assert res3.status_code == 200
    assert "<strong>The &lt;Shop&gt;</strong> asks to access your account" in res3.text
    assert "<code>openid</code>" in res3.text and "<code>profile</code>" in res3.text
    assert form_action(res3) == "/auth/consent"
    # 4. Allow stores a Grant and redirects with a code and the state
    res4 = api.post(
        "/auth/consent",
        data={"csrf": csrf_from(res3), "query": query, "decision": "approve"},
        follow_redirects=False,
    )
    assert res4.status_code == 302
    target = urlsplit(res4.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == CALLBACK
    params = parse_qs(target.query)
    assert params["state"] == ["st-1"]
    [grant] = grants(api)
    assert (grant["client"], grant["user"], grant["scope"]) == (
        {"resourceType": "Client", "id": "shop"},
        {"resourceType": "User", "id": "ann"},
        "openid profile",
    )
    assert grant["start"] == "2026-01-01T00:00:00.000Z"
    # 5. the code works at the token endpoint
    token = api.post(
        "/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": params["code"][0],
            "redirect_uri": CALLBACK,
            "client_id": "shop",
            "client_secret": "shop-secret",
        },
        headers=NO_AUTH,
    )
    assert token.status_code == 200, token.text
    # 6. next time there is no consent page
    res6 = api.get(f"/auth/authorize?{shop_query(scope='openid')}", follow_redirects=False)
    assert res6.status_code == 302
    assert res6.headers["location"].startswith(f"{CALLBACK}?code=")
    # 7. a scope not granted yet asks again
    res7 = api.get(f"/auth/authorize?{shop_query(scope='openid email')}", follow_redirects=False)
    assert res7.status_code == 200
    assert "<code>email</code>" in res7.text


def test_deny_redirects_with_access_denied(api: TestClient, clients: None) -> None:
    login(api, "ann")
    query = shop_query()
    page = api.get(f"/auth/authorize?{query}")
    response = api.post(
        "/auth/consent",
        data={"csrf": csrf_from(page), "query": query, "decision": "deny"},
        follow_redirects=False,
    )
    assert response.status_code == 302
    target = urlsplit(response.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == CALLBACK
    params = parse_qs(target.query)
    assert (params["error"], params["state"]) == (["access_denied"], ["st-1"])
    assert "code" not in params
    assert grants(api) == []


def test_consent_needs_csrf_and_writes_nothing_without_it(api: TestClient, clients: None) -> None:
    login(api, "ann")
    query = shop_query()
    for csrf in (None, "", "f" * 64):
        data = {"query": query, "decision": "approve"} | ({"csrf": csrf} if csrf is not None else {})
        response = api.post("/auth/consent", data=data, follow_redirects=False)
        assert response.status_code == 403
        assert "location" not in response.headers
    assert grants(api) == []


def test_consent_without_a_session_goes_to_login(api: TestClient, clients: None) -> None:
    token = csrf_from(api.get("/auth/login"))
    query = shop_query()
    response = api.post(
        "/auth/consent", data={"csrf": token, "query": query, "decision": "approve"}, follow_redirects=False
    )
    assert (response.status_code, response.headers["location"]) == (302, f"/auth/login?{query}")
    assert grants(api) == []


def test_first_party_client_needs_no_consent(api: TestClient, clients: None) -> None:
    login(api, "ann")
    query = urlencode(
        {
            "response_type": "token",
            "client_id": "web",
            "redirect_uri": "http://localhost:3000/auth",
            "state": "s",
        }
    )
    response = api.get(f"/auth/authorize?{query}", follow_redirects=False)
    assert response.status_code == 302
    target = urlsplit(response.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == "http://localhost:3000/auth"
    fragment = parse_qs(target.fragment)
    assert fragment["token_type"] == ["bearer"]
    assert fragment["state"] == ["s"]
    me = api.get("/auth/userinfo", headers={"Authorization": f"Bearer {fragment['access_token'][0]}"})
    assert (me.status_code, me.json()["id"]) == (200, "ann")
    assert grants(api) == []


REDIRECT_MATRIX = [
    "https://shop.example.org/cb/",
    "https://shop.example.org/cbx",
    "https://shop.example.org/cb/evil",
    "https://shop.example.org/cb?x=1",
    "https://shop.example.org/cb#x",
    "https://shop.example.org/c",
    "https://evil.shop.example.org/cb",
    "https://shop.example.org.evil.com/cb",
    "https://shop.example.org@evil.com/cb",
    "https://evil.com/https://shop.example.org/cb",
    "https://shop.example.org:8443/cb",
    "https://shop.example.org:443/cb",
    "http://shop.example.org/cb",
    "HTTPS://shop.example.org/cb",
    "https://SHOP.example.org/cb",
    "https://shop.example.org/CB",
    "https://shop.example.org/%63b",
    "https://shop.example.org%2Fcb",
    "https%3A%2F%2Fshop.example.org%2Fcb",
    "https://shop.example.org/cb%2F..%2Fevil",
    "https://shop.example.org/cb%00",
    " https://shop.example.org/cb",
]
# An empty or missing redirect_uri means the client's only one: tests/api/test_authorize_redirects.py.


@pytest.mark.parametrize("signed_in", [False, True], ids=["anonymous", "signed-in"])
def test_redirect_uri_matrix_never_redirects(api: TestClient, clients: None, signed_in: bool) -> None:
    if signed_in:
        login(api, "ann")
    for redirect_uri in REDIRECT_MATRIX:
        query = f"response_type=code&client_id=shop&state=s&redirect_uri={quote(redirect_uri, safe='')}"
        response = api.get(f"/auth/authorize?{query}", follow_redirects=False)
        assert response.status_code == 400, redirect_uri
        assert "location" not in response.headers, redirect_uri
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert "This sign-in request is not valid" in response.text
    unknown = [
        shop_query(client_id="nobody"),
        shop_query(client_id=""),
        f"response_type=code&redirect_uri={quote(CALLBACK)}",
    ]
    for query in unknown:
        response = api.get(f"/auth/authorize?{query}", follow_redirects=False)
        assert response.status_code == 400, query
        assert "location" not in response.headers, query


def test_inactive_client_never_redirects(api: TestClient, clients: None) -> None:
    shop = api.get("/Client/shop").json()
    api.put("/Client/shop", json={**shop, "active": False})
    response = api.get(f"/auth/authorize?{shop_query()}", follow_redirects=False)
    assert response.status_code == 400
    assert "location" not in response.headers


def test_repeated_parameters_are_refused_without_redirect(api: TestClient, clients: None) -> None:
    query = shop_query() + "&redirect_uri=https%3A%2F%2Fevil.com%2Fcb"
    response = api.get(f"/auth/authorize?{query}", follow_redirects=False)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "The parameter &#39;redirect_uri&#39; is given more than once." in response.text


def test_errors_after_validation_redirect_with_the_state(api: TestClient, clients: None) -> None:
    response = api.get(f"/auth/authorize?{shop_query(response_type='bogus')}", follow_redirects=False)
    assert response.status_code == 302
    target = urlsplit(response.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == CALLBACK
    params = parse_qs(target.query)
    assert (params["error"], params["state"]) == (["unsupported_response_type"], ["st-1"])


def test_a_browser_session_for_an_inactive_user_no_longer_counts(api: TestClient, clients: None) -> None:
    login(api, "ann")
    ann = api.get("/User/ann").json()
    api.put("/User/ann", json={**ann, "inactive": True})
    response = api.get(f"/auth/authorize?{shop_query()}", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (302, f"/auth/login?{shop_query()}")


def test_an_api_token_in_the_cookie_is_not_a_browser_session(api: TestClient, clients: None) -> None:
    api.put(
        "/Client/app", json={"resourceType": "Client", "secret": "app-secret", "grant_types": ["password"]}
    )
    token = api.post(
        "/auth/token",
        data={
            "grant_type": "password",
            "username": "ann@example.org",
            "password": PASSWORD,
            "client_id": "app",
            "client_secret": "app-secret",
        },
        headers=NO_AUTH,
    ).json()["access_token"]
    api.cookies.set("asid", token)
    response = api.get(f"/auth/authorize?{shop_query()}", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (302, f"/auth/login?{shop_query()}")
    assert call(api, services(api).sessions.resolve, token) is not None
