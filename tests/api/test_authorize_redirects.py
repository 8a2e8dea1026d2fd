"""/auth/authorize: which redirect URI a request goes back to, and which errors go back there.

RFC 6749 §3.1.2.3: a client with exactly one redirect URI registered for the flow may leave
`redirect_uri` out (Aidbox's demo frontend does). RFC 6749 §4.1.2.1 and §4.2.2.1: once the client and
the redirect URI are known to be good, the errors the client caused go back to it (in the query for
codes, in the fragment for tokens) with the state; before that, only an HTML page, never a redirect.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
from starlette.testclient import TestClient

from tests.api.conftest import NO_AUTH
from tests.api.pages_support import PASSWORD, create_user, csrf_from, login

SHOP_CB = "https://shop.example.org/cb"
SPA = "http://localhost:3000/auth"
WIDGET_CB = "https://widget.example.org/cb"
TENANT_CB = "https://tenant.example.org/cb?tenant=7"
# RFC 7636 Appendix B.
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def put_client(api: TestClient, id: str, **fields: Any) -> None:
    response = api.put(f"/Client/{id}", json={"resourceType": "Client", **fields})
    assert response.status_code in (200, 201), response.text


@pytest.fixture
def clients(api: TestClient) -> None:
    # shop: confidential, code flow, one redirect URI, asks for consent.
    put_client(
        api,
        "shop",
        name="Shop",
        secret="shop-secret",
        grant_types=["authorization_code"],
        auth={"authorization_code": {"redirect_uri": SHOP_CB}},
    )
    # web: exactly as Aidbox's 2FA demo registers it.
    put_client(
        api,
        "web",
        first_party=True,
        grant_types=["implicit"],
        auth={"implicit": {"redirect_uri": SPA, "access_token_expiration": 3600}},
    )
    # multi: two redirect URIs for the code flow, none for the implicit flow.
    put_client(
        api,
        "multi",
        first_party=True,
        secret="multi-secret",
        grant_types=["authorization_code", "implicit"],
        auth={
            "authorization_code": {"redirect_uri": ["https://a.example.org/cb", "https://b.example.org/cb"]}
        },
    )
    # spa: public (no secret), so PKCE is required; may only ask for openid and profile.
    put_client(
        api,
        "spa",
        first_party=True,
        scope=["openid", "profile"],
        grant_types=["authorization_code", "implicit"],
        auth={"authorization_code": {"redirect_uri": SPA}, "implicit": {"redirect_uri": SPA}},
    )
    # widget: implicit flow, not first-party (consent page); its registered URI carries no query.
    put_client(api, "widget", grant_types=["implicit"], auth={"implicit": {"redirect_uri": WIDGET_CB}})
    # tenant: a URI registered for the code flow but the flow missing from grant_types.
    put_client(
        api,
        "tenant",
        secret="tenant-secret",
        grant_types=["password"],
        auth={"authorization_code": {"redirect_uri": TENANT_CB}},
    )
    create_user(api, "ann")


def authorize(api: TestClient, **params: str) -> httpx2.Response:
    return api.get(f"/auth/authorize?{urlencode(params)}", follow_redirects=False)


def issued_sessions(api: TestClient) -> list[str]:
    """The types of every Session but the browser sign-ins: what an authorization request issued."""
    bundle = api.get("/Session").json()
    return sorted(e["resource"]["type"] for e in bundle["entry"] if e["resource"]["type"] != "browser")


def fragment_of(location: str, base: str) -> dict[str, list[str]]:
    assert location.startswith(f"{base}#"), location
    return parse_qs(urlsplit(location).fragment)


def code_of(location: str, base: str) -> str:
    assert location.startswith(f"{base}?code="), location
    (code,) = parse_qs(urlsplit(location).query)["code"]
    return code


def exchange(api: TestClient, code: str, **extra: str) -> httpx2.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": "shop",
        "client_secret": "shop-secret",
    }
    return api.post("/auth/token", data={**form, **extra}, headers=NO_AUTH)


def assert_error_page(response: httpx2.Response, message: str) -> None:
    assert response.status_code == 400, response.headers.get("location")
    assert "location" not in response.headers
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "This sign-in request is not valid" in response.text
    assert message in response.text


# redirect_uri left out: the one registered URI of the flow


def test_implicit_without_redirect_uri_goes_to_the_one_registered_uri(api: TestClient, clients: None) -> None:
    login(api, "ann")
    response = authorize(api, client_id="web", response_type="token", state="eyJuZXh0VXJsIjoiL2FwcCJ9")
    assert response.status_code == 302
    fragment = fragment_of(response.headers["location"], SPA)
    assert set(fragment) == {"access_token", "token_type", "expires_in", "state"}
    assert (fragment["token_type"], fragment["expires_in"], fragment["state"]) == (
        ["bearer"],
        ["3600"],
        ["eyJuZXh0VXJsIjoiL2FwcCJ9"],
    )
    me = api.get("/auth/userinfo", headers={"Authorization": f"Bearer {fragment['access_token'][0]}"})
    assert (me.status_code, me.json()["id"]) == (200, "ann")
    assert issued_sessions(api) == ["implicit"]


def test_an_empty_redirect_uri_counts_as_left_out(api: TestClient, clients: None) -> None:
    # RFC 6749 §3.1: a parameter sent without a value is treated as omitted.
    login(api, "ann")
    response = authorize(api, client_id="web", response_type="token", redirect_uri="", state="s")
    assert response.status_code == 302
    assert fragment_of(response.headers["location"], SPA)["state"] == ["s"]


def test_code_flow_without_redirect_uri_and_the_exchange_without_it(api: TestClient, clients: None) -> None:
    query = urlencode({"client_id": "shop", "response_type": "code", "state": "st-1"})
    # 1. anonymous: the login page, with the query carried on
    res1 = api.get(f"/auth/authorize?{query}", follow_redirects=False)
    assert (res1.status_code, res1.headers["location"]) == (302, f"/auth/login?{query}")
    # 2. the password sends the browser back to /auth/authorize
    res2 = login(api, "ann@example.org", query=query)
    assert (res2.status_code, res2.headers["location"]) == (302, f"/auth/authorize?{query}")
    # 3. shop is not first-party: the consent page carries the query (still without redirect_uri)
    res3 = api.get(res2.headers["location"], follow_redirects=False)
    assert res3.status_code == 200
    assert f'name="query" value="{query.replace("&", "&amp;")}"' in res3.text
    # 4. Allow: the code goes to the one registered URI, with the state
    res4 = api.post(
        "/auth/consent",
        data={"csrf": csrf_from(res3), "query": query, "decision": "approve"},
        follow_redirects=False,
    )
    assert res4.status_code == 302
    location = res4.headers["location"]
    code = code_of(location, SHOP_CB)
    assert location == f"{SHOP_CB}?code={code}&state=st-1"
    # 5. RFC 6749 §4.1.3: the token request needs no redirect_uri either
    res5 = exchange(api, code)
    assert res5.status_code == 200, res5.text
    assert issued_sessions(api) == ["authorization_code"]
    # 6. a new code (no consent this time) is bound to the URI it went to: naming another is refused
    res6 = authorize(api, client_id="shop", response_type="code", state="st-2")
    other = exchange(
        api, code_of(res6.headers["location"], SHOP_CB), redirect_uri="https://shop.example.org/x"
    )
    assert (other.status_code, other.json()) == (
        400,
        {
            "error": "invalid_grant",
            "error_description": "'redirect_uri' does not match the authorization request",
        },
    )
    # 7. and naming the one it went to is accepted
    res7 = authorize(api, client_id="shop", response_type="code")
    named = exchange(api, code_of(res7.headers["location"], SHOP_CB), redirect_uri=SHOP_CB)
    assert named.status_code == 200, named.text
    assert issued_sessions(api) == ["authorization_code", "authorization_code"]


def test_a_uri_registered_twice_is_still_the_only_one(api: TestClient, clients: None) -> None:
    login(api, "ann")
    put_client(
        api,
        "shop",
        first_party=True,
        secret="shop-secret",
        grant_types=["authorization_code"],
        auth={"authorization_code": {"redirect_uri": [SHOP_CB, SHOP_CB]}},
    )
    code = code_of(authorize(api, client_id="shop", response_type="code").headers["location"], SHOP_CB)
    response = exchange(api, code)
    assert response.status_code == 200, response.text
    assert issued_sessions(api) == ["authorization_code"]


def test_a_code_whose_client_registered_a_second_uri_meanwhile_needs_the_redirect_uri(
    api: TestClient, clients: None
) -> None:
    login(api, "ann")
    put_client(
        api,
        "shop",
        first_party=True,
        secret="shop-secret",
        grant_types=["authorization_code"],
        auth={"authorization_code": {"redirect_uri": SHOP_CB}},
    )
    code = code_of(authorize(api, client_id="shop", response_type="code").headers["location"], SHOP_CB)
    put_client(
        api,
        "shop",
        first_party=True,
        secret="shop-secret",
        grant_types=["authorization_code"],
        auth={"authorization_code": {"redirect_uri": [SHOP_CB, "https://shop.example.org/other"]}},
    )
    response = exchange(api, code)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "invalid_request", "error_description": "Missing 'redirect_uri'"},
    )
    assert issued_sessions(api) == []


@pytest.mark.parametrize("signed_in", [False, True], ids=["anonymous", "signed-in"])
def test_without_redirect_uri_several_or_no_registered_uris_show_the_error_page(
    api: TestClient, clients: None, signed_in: bool
) -> None:
    if signed_in:
        login(api, "ann")
    several = authorize(api, client_id="multi", response_type="code", state="s")
    assert_error_page(
        several,
        "Missing &#39;redirect_uri&#39;: this client has several registered, so the request must name one",
    )
    none = authorize(api, client_id="multi", response_type="token", state="s")
    assert_error_page(none, "Missing &#39;redirect_uri&#39;: this client has none registered for this flow")
    # With several, naming one of them works.
    named = authorize(api, client_id="multi", response_type="code", redirect_uri="https://b.example.org/cb")
    assert named.status_code == 302
    if signed_in:
        assert named.headers["location"].startswith("https://b.example.org/cb?code=")
    assert issued_sessions(api) == []


def test_signup_continuation_without_redirect_uri_completes(
    api: TestClient, clients: None, capsys: pytest.CaptureFixture[str]
) -> None:
    put_provider = api.put(
        "/AidboxConfig/provider",
        json={
            "resourceType": "AidboxConfig",
            "provider": {"default": "console", "console": {"type": "console"}},
        },
    )
    assert put_provider.status_code in (200, 201)
    # Aidbox's demo frontend: getSignupUrl() → /auth/signup?client_id=web&response_type=token
    query = urlencode({"client_id": "web", "response_type": "token", "state": "st"})
    page = api.get(f"/auth/signup?{query}")
    capsys.readouterr()
    sent = api.post(f"/auth/signup?{query}", data={"csrf": csrf_from(page), "email": "new@example.org"})
    assert sent.status_code == 200
    [line] = [line for line in capsys.readouterr().out.splitlines() if "/auth/signup/confirm/" in line]
    link = urlsplit(line.strip())
    registration_id = link.path.rsplit("/", 1)[1]
    (token,) = parse_qs(link.query)["token"]
    done = api.post(
        f"/auth/signup/confirm/{registration_id}",
        data={"csrf": csrf_from(page), "token": token, "password": "a new password 1"},
        follow_redirects=False,
    )
    assert (done.status_code, done.headers["location"]) == (302, f"/auth/authorize?{query}")
    final = api.get(done.headers["location"], follow_redirects=False)
    assert final.status_code == 302
    fragment = fragment_of(final.headers["location"], SPA)
    assert fragment["state"] == ["st"]
    me = api.get("/auth/userinfo", headers={"Authorization": f"Bearer {fragment['access_token'][0]}"})
    assert (me.status_code, me.json()["email"]) == (200, "new@example.org")


def test_login_page_continuation_without_redirect_uri_completes(api: TestClient, clients: None) -> None:
    # Aidbox's documented login URL: /auth/login?client_id=web&response_type=token
    query = urlencode({"client_id": "web", "response_type": "token"})
    res1 = login(api, "ann", PASSWORD, query=query)
    assert (res1.status_code, res1.headers["location"]) == (302, f"/auth/authorize?{query}")
    res2 = api.get(res1.headers["location"], follow_redirects=False)
    assert res2.status_code == 302
    fragment = fragment_of(res2.headers["location"], SPA)
    assert set(fragment) == {"access_token", "token_type", "expires_in"}
    assert issued_sessions(api) == ["implicit"]


# Errors the client caused go back to it


SIGNED_IN = pytest.mark.parametrize("signed_in", [False, True], ids=["anonymous", "signed-in"])

REDIRECTED_ERRORS = [
    pytest.param(
        {"client_id": "shop", "redirect_uri": SHOP_CB, "state": "st-1"},
        f"{SHOP_CB}?error=invalid_request&error_description=Missing+%27response_type%27&state=st-1",
        id="missing-response_type",
    ),
    pytest.param(
        {"client_id": "shop", "response_type": "code bogus", "state": "st-1"},
        f"{SHOP_CB}?error=unsupported_response_type"
        "&error_description=Unsupported+%27response_type%27%3B+use+one+of%3A+code%2C+token%2C+id_token%2C"
        "+id_token+token%2C+code+id_token%2C+code+token%2C+code+id_token+token&state=st-1",
        id="unsupported-response_type",
    ),
    pytest.param(
        {"client_id": "tenant", "response_type": "code", "state": "st-1"},
        f"{TENANT_CB}&error=unauthorized_client"
        "&error_description=This+client+may+not+use+the+authorization_code+flow&state=st-1",
        id="unauthorized_client-keeps-the-registered-query",
    ),
    pytest.param(
        {"client_id": "web", "response_type": "token", "scope": "openid  profile", "state": "st-1"},
        f"{SPA}#error=invalid_scope"
        "&error_description=Malformed+%27scope%27%3A+space-separated+tokens+of+printable+ASCII&state=st-1",
        id="malformed-scope-in-the-fragment",
    ),
    pytest.param(
        {"client_id": "spa", "response_type": "token", "scope": "openid admin", "state": "st-1"},
        f"{SPA}#error=invalid_scope"
        "&error_description=Scope+%27admin%27+is+not+allowed+for+this+client&state=st-1",
        id="scope-not-allowed",
    ),
    pytest.param(
        {"client_id": "spa", "response_type": "code", "state": "st-1"},
        f"{SPA}?error=invalid_request"
        "&error_description=Missing+%27code_challenge%27%3A+this+client+must+use+PKCE&state=st-1",
        id="pkce-required",
    ),
    pytest.param(
        {
            "client_id": "spa",
            "response_type": "code",
            "code_challenge": CHALLENGE,
            "code_challenge_method": "S1",
        },
        f"{SPA}?error=invalid_request"
        "&error_description=Unsupported+%27code_challenge_method%27%3B+use+S256+or+plain",
        id="pkce-bad-method-no-state",
    ),
    pytest.param(
        {"client_id": "spa", "response_type": "code", "code_challenge": "short", "state": "st-1"},
        f"{SPA}?error=invalid_request&error_description=Invalid+%27code_challenge%27&state=st-1",
        id="pkce-bad-challenge",
    ),
    pytest.param(
        {"client_id": "spa", "response_type": "code", "code_challenge_method": "S256", "state": "st-1"},
        f"{SPA}?error=invalid_request"
        "&error_description=%27code_challenge_method%27+given+without+%27code_challenge%27&state=st-1",
        id="pkce-method-without-challenge",
    ),
]


@SIGNED_IN
@pytest.mark.parametrize(("params", "location"), REDIRECTED_ERRORS)
def test_client_errors_redirect_to_the_client(
    api: TestClient, clients: None, signed_in: bool, params: dict[str, str], location: str
) -> None:
    if signed_in:
        login(api, "ann")
    response = authorize(api, **params)
    assert (response.status_code, response.headers["location"]) == (302, location)
    assert issued_sessions(api) == []


@SIGNED_IN
def test_a_repeated_parameter_goes_back_as_invalid_request(
    api: TestClient, clients: None, signed_in: bool
) -> None:
    if signed_in:
        login(api, "ann")
    # The first value of each counts, the state too.
    base = urlencode({"client_id": "shop", "response_type": "code", "state": "st-1"})
    for name, twice in (
        ("scope", "scope=openid&scope=openid"),
        ("state", "state=st-2"),
        ("code_challenge", f"code_challenge={CHALLENGE}&code_challenge={CHALLENGE}"),
    ):
        response = api.get(f"/auth/authorize?{base}&{twice}", follow_redirects=False)
        assert response.status_code == 302, name
        assert response.headers["location"] == (
            f"{SHOP_CB}?error=invalid_request"
            f"&error_description=The+parameter+%27{name}%27+is+given+more+than+once.&state=st-1"
        )
    # A repeated response_type leaves the response mode undecided: the query, as for an unknown one.
    response = api.get(
        "/auth/authorize?client_id=web&response_type=token&response_type=code&state=s", follow_redirects=False
    )
    assert response.headers["location"] == (
        f"{SPA}?error=invalid_request"
        "&error_description=The+parameter+%27response_type%27+is+given+more+than+once.&state=s"
    )
    assert issued_sessions(api) == []


@SIGNED_IN
def test_a_repeated_client_id_or_redirect_uri_shows_the_error_page(
    api: TestClient, clients: None, signed_in: bool
) -> None:
    if signed_in:
        login(api, "ann")
    for name, value in (("client_id", "shop"), ("redirect_uri", SHOP_CB)):
        query = urlencode(
            {"client_id": "shop", "response_type": "code", "redirect_uri": SHOP_CB, "state": "s"}
        )
        response = api.get(f"/auth/authorize?{query}&{name}={value}", follow_redirects=False)
        assert_error_page(response, f"The parameter &#39;{name}&#39; is given more than once.")
    assert issued_sessions(api) == []


@SIGNED_IN
def test_an_error_with_an_unsafe_redirect_uri_shows_the_page_instead(
    api: TestClient, clients: None, signed_in: bool
) -> None:
    if signed_in:
        login(api, "ann")
    for params, message in (
        ({"client_id": "nobody", "response_type": "bogus"}, "Unknown or inactive client"),
        ({"response_type": "code", "redirect_uri": SHOP_CB}, "Missing &#39;client_id&#39;"),
        (
            {"client_id": "shop", "response_type": "bogus", "redirect_uri": "https://evil.example/cb"},
            "&#39;redirect_uri&#39; is not registered for this client",
        ),
        (
            {"client_id": "multi", "scope": "bad\\scope"},
            "Missing &#39;redirect_uri&#39;: this client has several registered, so the request must name one",
        ),
    ):
        assert_error_page(authorize(api, state="s", **params), message)
    assert issued_sessions(api) == []


def test_unknown_parameters_are_ignored(api: TestClient, clients: None) -> None:
    # RFC 6749 §3.1: unrecognized parameters are ignored, repeated or not.
    login(api, "ann")
    query = "client_id=web&response_type=token&state=s&foo=1&foo=2&prompt=login&nonce=n"
    response = api.get(f"/auth/authorize?{query}", follow_redirects=False)
    assert response.status_code == 302
    fragment = fragment_of(response.headers["location"], SPA)
    assert set(fragment) == {"access_token", "token_type", "expires_in", "state"}


def test_deny_goes_back_with_access_denied(api: TestClient, clients: None) -> None:
    login(api, "ann")
    for params, location in (
        (
            {"client_id": "shop", "response_type": "code", "state": "st-1"},
            f"{SHOP_CB}?error=access_denied&error_description=The+user+denied+the+request&state=st-1",
        ),
        (
            {"client_id": "widget", "response_type": "token"},
            f"{WIDGET_CB}#error=access_denied&error_description=The+user+denied+the+request",
        ),
    ):
        query = urlencode(params)
        page = api.get(f"/auth/authorize?{query}")
        assert page.status_code == 200
        response = api.post(
            "/auth/consent",
            data={"csrf": csrf_from(page), "query": query, "decision": "deny"},
            follow_redirects=False,
        )
        assert (response.status_code, response.headers["location"]) == (302, location)
    assert api.get("/Grant").json()["total"] == 0
    assert issued_sessions(api) == []
