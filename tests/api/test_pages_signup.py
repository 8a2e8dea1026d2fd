"""Signup: e-mail → Registration → console e-mail → confirmation link → password → signed in → token."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
from starlette.testclient import TestClient

from fhirauth.clock import ManualClock
from tests.api.conftest import NO_AUTH
from tests.api.pages_support import (
    alert,
    audit_detail,
    audit_events,
    cookie_attributes,
    create_user,
    csrf_from,
    form_action,
    set_cookies,
)

LINK = re.compile(r"(http://testserver/auth/signup/confirm/([A-Za-z0-9.-]+)\?token=([A-Za-z0-9._-]+))")
NEW_PASSWORD = "a new password 1"
WEB_QUERY = urlencode(
    {
        "client_id": "web",
        "response_type": "token",
        "redirect_uri": "http://localhost:3000/auth",
        "state": "st",
    }
)


@pytest.fixture
def web(api: TestClient) -> None:
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
    api.put(
        "/AidboxConfig/provider",
        json={
            "resourceType": "AidboxConfig",
            "provider": {"default": "console", "console": {"type": "console"}},
        },
    )


def sign_up(api: TestClient, email: str, query: str = WEB_QUERY) -> str:
    path = f"/auth/signup?{query}" if query else "/auth/signup"
    page = api.get(path)
    assert form_action(page) == path
    response = api.post(path, data={"csrf": csrf_from(page), "email": email})
    assert response.status_code == 200, response.text
    return response.text


def mailed_link(out: str) -> tuple[str, str, str]:
    matches = LINK.findall(out)
    assert len(matches) == 1, out
    link, registration_id, token = matches[0]
    return link, registration_id, token


def registrations(api: TestClient) -> list[dict[str, object]]:
    return [entry["resource"] for entry in api.get("/Registration").json()["entry"]]


def confirm(
    api: TestClient, registration_id: str, token: str, password: str, repeat: str | None = None
) -> httpx2.Response:
    page = api.get("/auth/login")
    data = {
        "csrf": csrf_from(page),
        "token": token,
        "password": password,
        "password_confirm": repeat or password,
    }
    return api.post(f"/auth/signup/confirm/{registration_id}", data=data, follow_redirects=False)


def test_signup_story(api: TestClient, web: None, capsys: pytest.CaptureFixture[str]) -> None:
    # 1. the e-mail form answers "check your e-mail"
    capsys.readouterr()
    page = sign_up(api, "  New.Person@Example.org ")
    assert "Check your e-mail" in page
    assert "<strong>new.person@example.org</strong>" in page
    # 2. the console provider printed a readable e-mail with the link
    out = capsys.readouterr().out
    assert "To: new.person@example.org\n" in out
    assert "Subject: Registration Confirmation\n" in out
    link, registration_id, token = mailed_link(out)
    [registration] = registrations(api)
    assert registration["id"] == registration_id
    assert (registration["status"], registration["email"]) == ("active", "new.person@example.org")
    assert registration["expires"] == "2026-01-02T00:00:00.000Z"
    assert "token" not in registration  # stored as a hash, never shown
    assert token not in api.get(f"/Registration/{registration_id}").text
    # 3. a wrong token is refused
    wrong = api.get(f"/auth/signup/confirm/{registration_id}?token={token[:-2]}xx")
    assert wrong.status_code == 400
    assert "This sign-up link is invalid, has expired or was already used." in wrong.text
    assert confirm(api, registration_id, token[:-2] + "xx", NEW_PASSWORD).status_code == 400
    assert confirm(api, "no-such-registration", token, NEW_PASSWORD).status_code == 400
    # 4. the right link shows the password form
    form = api.get(link)
    assert form.status_code == 200
    assert "Creating the account for <strong>new.person@example.org</strong>" in form.text
    assert form_action(form) == f"/auth/signup/confirm/{registration_id}"
    # 5. a short or mismatched password is refused and the link still works
    short = confirm(api, registration_id, token, "short")
    assert (short.status_code, alert(short)) == (400, "The password must have at least 8 characters.")
    mismatch = confirm(api, registration_id, token, NEW_PASSWORD, "another password")
    assert (mismatch.status_code, alert(mismatch)) == (400, "The passwords do not match.")
    # 6. a good password creates the user, signs in and continues to the authorize request
    done = confirm(api, registration_id, token, NEW_PASSWORD)
    assert done.status_code == 302
    assert done.headers["location"] == f"/auth/authorize?{WEB_QUERY}"
    assert "asid" in set_cookies(done)
    # 7. which redirects with a token (implicit), and the token works
    final = api.get(done.headers["location"], follow_redirects=False)
    assert final.status_code == 302
    target = urlsplit(final.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == "http://localhost:3000/auth"
    fragment = parse_qs(target.fragment)
    assert fragment["state"] == ["st"]
    me = api.get("/auth/userinfo", headers={"Authorization": f"Bearer {fragment['access_token'][0]}"})
    assert me.status_code == 200
    user = me.json()
    assert user["email"] == "new.person@example.org"
    assert "password" not in user
    # 8. the new user can sign in (the address in any case); the Registration is used up
    [registration] = registrations(api)
    assert registration["status"] == "activated"
    assert registration["resource"] == {"resourceType": "User", "id": user["id"]}
    api.cookies.clear()
    login_page = api.get("/auth/login")
    again = api.post(
        "/auth/login",
        data={"csrf": csrf_from(login_page), "username": "New.Person@Example.org", "password": NEW_PASSWORD},
        follow_redirects=False,
    )
    assert again.status_code == 302
    # 9. a second use of the link is refused
    assert api.get(link).status_code == 400
    second = confirm(api, registration_id, token, "yet another password")
    assert second.status_code == 400
    assert "asid" not in set_cookies(second)
    # 10. audited, without the token or password
    [signup_event] = audit_events(api, "signup")
    assert audit_detail(signup_event) == {
        "email": "new.person@example.org",
        "registration": registration_id,
        "existingAccount": "False",
    }
    confirm_events = audit_events(api, "signup-confirm")
    outcomes = sorted((e["outcome"], audit_detail(e).get("reason", "")) for e in confirm_events)
    assert outcomes == [
        ("failure", "unknown"),
        ("failure", "used"),
        ("failure", "used"),
        ("failure", "wrong-token"),
        ("failure", "wrong-token"),
        ("success", ""),
    ]
    assert token not in str(confirm_events) and NEW_PASSWORD not in str(confirm_events)


def test_signup_without_a_client_continues_to_the_two_factor_page(
    api: TestClient, web: None, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    sign_up(api, "solo@example.org", query="")
    _, registration_id, token = mailed_link(capsys.readouterr().out)
    done = confirm(api, registration_id, token, NEW_PASSWORD)
    assert (done.status_code, done.headers["location"]) == (302, "/auth/two-factor")
    _, attributes = cookie_attributes(set_cookies(done)["asid"])
    assert attributes["max-age"] == "432000"


def test_signup_does_not_reveal_existing_accounts(
    api: TestClient, web: None, capsys: pytest.CaptureFixture[str]
) -> None:
    create_user(api, "ann")
    capsys.readouterr()
    existing = sign_up(api, "ann@example.org")
    existing_out = capsys.readouterr().out
    new = sign_up(api, "bob@example.org")
    capsys.readouterr()
    assert existing.replace("ann@example.org", "X") == new.replace("bob@example.org", "X")
    assert "Subject: You already have an account\n" in existing_out
    assert "To: ann@example.org\n" in existing_out
    assert "http://testserver/auth/login" in existing_out
    assert LINK.search(existing_out) is None
    assert [r["email"] for r in registrations(api)] == ["bob@example.org"]


def test_expired_link_is_refused(
    api: TestClient, web: None, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    sign_up(api, "late@example.org")
    link, registration_id, token = mailed_link(capsys.readouterr().out)
    clock.advance(24 * 3600 - 1)
    assert api.get(link).status_code == 200
    clock.advance(1)
    expired = api.get(link)
    assert expired.status_code == 400
    assert "This sign-up link is invalid, has expired or was already used." in expired.text
    refused = confirm(api, registration_id, token, NEW_PASSWORD)
    assert refused.status_code == 400
    assert api.get("/User", params={"email": "late@example.org"}).json()["total"] == 0


def test_two_registrations_for_one_address_make_one_account(
    api: TestClient, web: None, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    sign_up(api, "twice@example.org")
    sign_up(api, "twice@example.org")
    links = LINK.findall(capsys.readouterr().out)
    assert len(links) == 2
    assert confirm(api, links[0][1], links[0][2], NEW_PASSWORD).status_code == 302
    second = confirm(api, links[1][1], links[1][2], NEW_PASSWORD)
    assert second.status_code == 409
    assert "An account with this e-mail address already exists. Sign in instead." in second.text
    assert api.get("/User", params={"email": "twice@example.org"}).json()["total"] == 1


def test_bad_signup_input_is_answered_not_crashed(api: TestClient, web: None) -> None:
    page = api.get("/auth/signup")
    token = csrf_from(page)
    for email in ("", "not-an-email", "a@b", "a b@example.org", "x" * 300 + "@example.org"):
        response = api.post("/auth/signup", data={"csrf": token, "email": email})
        assert response.status_code == 400, email
        assert alert(response) == "Enter a valid e-mail address."
    assert api.post("/auth/signup", data={"csrf": token}).status_code == 400
    assert api.post("/auth/signup", data={"email": "ok@example.org"}).status_code == 403
    huge = api.post("/auth/signup", data={"csrf": token, "email": "x" * 100_000})
    assert huge.status_code == 413
    assert registrations(api) == []
    confirm_page = api.post(
        "/auth/signup/confirm/x", data={"csrf": token, "password": "p" * 10}, follow_redirects=False
    )
    assert confirm_page.status_code == 400
    long_id = api.get("/auth/signup/confirm/" + "x" * 500 + "?token=abc")
    assert long_id.status_code == 400


def test_registration_token_is_hidden_from_the_api(
    api: TestClient, web: None, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    sign_up(api, "hidden@example.org")
    _, _, token = mailed_link(capsys.readouterr().out)
    listing = api.get("/Registration", headers=NO_AUTH)
    assert listing.status_code == 401
    assert token not in api.get("/Registration").text
