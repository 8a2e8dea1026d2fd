"""RP-initiated logout at /auth/logout (OpenID Connect RP-Initiated Logout 1.0): the id_token_hint
verified against this server's keys (expired ones too), post_logout_redirect_uri matched exactly
against the Client's post_logout_redirect_uris, state echoed, a confirmation page whenever the request
is not bound to this browser's sign-in, and an error page (never a redirect) for anything invalid.
Sessions are read back from storage, so both backends.
"""

from __future__ import annotations

import base64
import html
import json
from urllib.parse import urlencode

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.testclient import TestClient

from fhirauth.clock import ManualClock
from tests.api.conftest import NO_AUTH
from tests.api.oidc_support import (
    CB,
    ISSUER,
    THIRD_CB,
    answer,
    authorize,
    rp_request,
    setup_clients,
    sign_in,
)
from tests.api.pages_support import (
    audit_detail,
    audit_events,
    call,
    cookie_attributes,
    csrf_from,
    login,
    services,
    set_cookies,
)

AFTER = "https://rp.example.org/signed-out"
AFTER_WITH_QUERY = "https://rp.example.org/bye?lang=en"
THIRD_AFTER = "https://third.example.org/signed-out"
INVALID = "This sign-out request is not valid"


@pytest.fixture
def clients(api: TestClient) -> None:
    setup_clients(api)
    for client_id, uris in (("rp", [AFTER, AFTER_WITH_QUERY]), ("third", [THIRD_AFTER])):
        response = api.patch(f"/Client/{client_id}", json={"post_logout_redirect_uris": uris})
        assert response.status_code == 200, response.text


def id_token(api: TestClient) -> str:
    response = authorize(api, **rp_request("id_token"))
    token: str = answer(response.headers["location"], CB, "fragment")["id_token"]
    return token


def code_token_session(api: TestClient) -> str:
    """An access token of the code flow issued from the browser's sign-in; its Session's id."""
    response = authorize(api, **rp_request("code"))
    code = answer(response.headers["location"], CB, "query")["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CB}
    assert api.post("/auth/token", data=form, auth=("rp", "rp-secret"), headers=NO_AUTH).status_code == 200
    bundle = api.get("/Session", params={"type": "authorization_code"}).json()
    session_id: str = bundle["entry"][0]["resource"]["id"]
    return session_id


def active(api: TestClient, session_id: str) -> bool:
    result: bool = api.get(f"/Session/{session_id}").json()["active"]
    return result


def end_session(api: TestClient, method: str = "GET", **params: str) -> httpx2.Response:
    if method == "GET":
        return api.get(f"/auth/logout?{urlencode(params)}", follow_redirects=False)
    return api.post("/auth/logout", data=params, follow_redirects=False)


def assert_refused(response: httpx2.Response, message: str) -> None:
    assert response.status_code == 400, response.text
    assert "location" not in response.headers
    assert INVALID in response.text
    assert message in html.unescape(response.text)


def test_discovery_advertises_the_end_session_endpoint(api: TestClient, clients: None) -> None:
    metadata = api.get("/.well-known/openid-configuration", headers=NO_AUTH).json()
    assert metadata["end_session_endpoint"] == f"{ISSUER}/auth/logout"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_hint_for_this_sign_in_signs_out_and_goes_back_with_the_state(
    api: TestClient, clients: None, method: str
) -> None:
    sid = sign_in(api)
    tokens = code_token_session(api)
    response = end_session(
        api, method, id_token_hint=id_token(api), post_logout_redirect_uri=AFTER, state="bye-1"
    )
    assert response.status_code == 302, response.text
    assert response.headers["location"] == f"{AFTER}?state=bye-1"
    # The sign-in and the tokens it issued end; the cookie goes.
    assert (active(api, sid), active(api, tokens)) == (False, False)
    value, attributes = cookie_attributes(set_cookies(response)["asid"])
    assert (value, attributes["max-age"]) == ("", "0")
    assert audit_detail(audit_events(api, "logout")[-1]) == {"session": sid, "client": "rp"}


def test_a_registered_uri_with_a_query_keeps_it(api: TestClient, clients: None) -> None:
    sign_in(api)
    response = end_session(
        api, id_token_hint=id_token(api), post_logout_redirect_uri=AFTER_WITH_QUERY, state="s 2"
    )
    assert response.headers["location"] == f"{AFTER_WITH_QUERY}&state=s+2"


def test_without_a_uri_the_signed_out_page(api: TestClient, clients: None) -> None:
    sid = sign_in(api)
    response = end_session(api, id_token_hint=id_token(api), state="ignored")
    assert response.status_code == 200
    assert "You are signed out." in response.text
    assert not active(api, sid)


def test_an_expired_hint_still_names_the_sign_in(api: TestClient, clients: None, clock: ManualClock) -> None:
    sid = sign_in(api)
    hint = id_token(api)
    clock.advance(7200)  # the ID token lived 600 s
    response = end_session(api, id_token_hint=hint, post_logout_redirect_uri=AFTER)
    assert (response.status_code, response.headers["location"]) == (302, AFTER)
    assert not active(api, sid)


def test_a_cross_site_post_without_the_cookie_ends_the_hinted_sign_in(api: TestClient, clients: None) -> None:
    sid = sign_in(api)
    hint = id_token(api)
    # SameSite=Lax: another site's form POST carries no asid cookie; the hint names the sign-in.
    api.cookies.clear()
    response = end_session(api, "POST", id_token_hint=hint, post_logout_redirect_uri=AFTER, state="x")
    assert (response.status_code, response.headers["location"]) == (302, f"{AFTER}?state=x")
    assert not active(api, sid)


def test_without_a_hint_the_user_is_asked_first(api: TestClient, clients: None) -> None:
    sid = sign_in(api)
    params = {"client_id": "rp", "post_logout_redirect_uri": AFTER, "state": "st"}
    page = end_session(api, **params)
    assert page.status_code == 200
    assert "Sign out of" in page.text
    assert active(api, sid)
    confirmed = api.post(
        f"/auth/logout?{urlencode(params)}", data={"csrf": csrf_from(page)}, follow_redirects=False
    )
    assert (confirmed.status_code, confirmed.headers["location"]) == (302, f"{AFTER}?state=st")
    assert not active(api, sid)


def test_a_hint_for_an_earlier_sign_in_asks_first(api: TestClient, clients: None) -> None:
    first = sign_in(api)
    hint = id_token(api)
    login(api, "ann")  # a new sign-in of this browser: the hint's one has ended
    page = end_session(api, id_token_hint=hint, post_logout_redirect_uri=AFTER)
    assert page.status_code == 200
    assert "Sign out of" in page.text
    assert not active(api, first)
    bundle = api.get("/Session", params={"type": "browser", "active": "true"}).json()
    assert bundle["total"] == 1


def test_an_rp_post_without_the_form_field_is_asked_too(api: TestClient, clients: None) -> None:
    sid = sign_in(api)
    page = end_session(api, "POST", client_id="rp", post_logout_redirect_uri=AFTER)
    assert page.status_code == 200
    assert "Sign out of" in page.text
    assert active(api, sid)


def test_signed_out_already_goes_straight_back(api: TestClient, clients: None) -> None:
    response = end_session(api, client_id="rp", post_logout_redirect_uri=AFTER, state="s")
    assert (response.status_code, response.headers["location"]) == (302, f"{AFTER}?state=s")


def test_an_unregistered_uri_is_an_error_page(api: TestClient, clients: None) -> None:
    sid = sign_in(api)
    for uri in ("https://evil.example/", f"{AFTER}/", AFTER.upper(), THIRD_AFTER):
        response = end_session(api, id_token_hint=id_token(api), post_logout_redirect_uri=uri)
        assert_refused(response, "is not registered for this client")
    assert active(api, sid)


def test_a_hint_of_another_client_is_an_error_page(api: TestClient, clients: None) -> None:
    sid = sign_in(api)
    response = end_session(
        api, id_token_hint=id_token(api), client_id="third", post_logout_redirect_uri=THIRD_AFTER
    )
    assert_refused(response, "does not match the id_token_hint")
    assert active(api, sid)


def test_a_uri_without_a_client_is_an_error_page(api: TestClient, clients: None) -> None:
    sign_in(api)
    assert_refused(end_session(api, post_logout_redirect_uri=AFTER), "needs 'id_token_hint' or 'client_id'")
    assert_refused(
        end_session(api, client_id="nobody", post_logout_redirect_uri=AFTER), "Unknown or inactive client"
    )


@pytest.mark.parametrize("kind", ["forged", "garbage", "access token", "other issuer"])
def test_a_hint_this_server_did_not_issue_is_an_error_page(api: TestClient, clients: None, kind: str) -> None:
    sid = sign_in(api)
    hint = _bad_hint(api, id_token(api), kind)
    response = end_session(api, id_token_hint=hint, post_logout_redirect_uri=AFTER)
    assert_refused(response, "id_token_hint")
    assert active(api, sid)


def _bad_hint(api: TestClient, real: str, kind: str) -> str:
    claims = json.loads(base64.urlsafe_b64decode(real.split(".")[1] + "=="))
    kid = json.loads(base64.urlsafe_b64decode(real.split(".")[0] + "=="))["kid"]
    if kind == "garbage":
        return "not-a-jwt"
    if kind == "forged":
        # The right kid, another key.
        return jwt.encode({"alg": "RS256", "kid": kid}, claims, RSAKey.generate_key(2048))
    if kind == "other issuer":
        # Signed with this server's own key: only the issuer is wrong.
        signed: str = call(api, services(api).keys.sign, {**claims, "iss": "https://other.example"})
        return signed
    # A JWT access token: signed by this server, but no ID token (no sid).
    api.patch("/Client/rp", json={"auth": {"implicit": {"redirect_uri": CB, "token_format": "jwt"}}})
    response = authorize(api, **rp_request("token"))
    token: str = answer(response.headers["location"], CB, "fragment")["access_token"]
    return token


def test_repeated_parameters_are_an_error_page(api: TestClient, clients: None) -> None:
    sid = sign_in(api)
    hint = id_token(api)
    query = urlencode(
        [
            ("id_token_hint", hint),
            ("post_logout_redirect_uri", AFTER),
            ("post_logout_redirect_uri", "https://evil.example/"),
        ]
    )
    response = api.get(f"/auth/logout?{query}", follow_redirects=False)
    assert_refused(response, "more than once")
    assert active(api, sid)


def test_the_plain_logout_page_is_unchanged(api: TestClient, clients: None) -> None:
    sid = sign_in(api)
    page = api.get("/auth/logout")
    assert page.status_code == 200
    assert "Sign out of" in page.text
    # A POST without the form's field is refused, as before.
    assert api.post("/auth/logout", data={}, follow_redirects=False).status_code == 403
    assert active(api, sid)
    done = api.post("/auth/logout", data={"csrf": csrf_from(page)}, follow_redirects=False)
    assert done.status_code == 200
    assert not active(api, sid)


def test_post_logout_redirect_uris_must_be_urls(api: TestClient) -> None:
    response = api.put(
        "/Client/bad", json={"resourceType": "Client", "post_logout_redirect_uris": ["javascript:alert(1)"]}
    )
    assert response.status_code == 422, response.text
    assert api.get("/Client/bad").status_code == 404


def test_a_third_party_client_gets_its_own_uri_only(api: TestClient, clients: None) -> None:
    sign_in(api)
    response = end_session(api, client_id="third", post_logout_redirect_uri=AFTER)
    assert_refused(response, "is not registered for this client")
    assert THIRD_CB  # the third party's sign-in callback is no post-logout URI either
    response = end_session(api, client_id="third", post_logout_redirect_uri=THIRD_CB)
    assert_refused(response, "is not registered for this client")
