"""The sign-in pages in a real Chromium against a real `fhirauth serve`: login, consent, signup, CSRF.

The clients' redirect URIs point at http://127.0.0.1:9 (nothing listens there): Playwright answers
those requests itself, so the test reads the code or token from the URL the browser was sent to.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
from playwright.sync_api import Page, Route, expect
from support.browser import screenshot
from support.server import ROOT_CLIENT_SECRET, LiveServer, LiveServerFactory

CALLBACK = "http://127.0.0.1:9/cb"
SPA = "http://127.0.0.1:9/auth"
PASSWORD = "correct horse battery staple"
LINK = re.compile(r"(http://127\.0\.0\.1:\d+/auth/signup/confirm/[A-Za-z0-9.-]+\?token=[A-Za-z0-9._-]+)")


@pytest.fixture
def server(live_server_factory: LiveServerFactory) -> Iterator[LiveServer]:
    server = live_server_factory()
    with httpx2.Client(base_url=server.url, auth=("root", ROOT_CLIENT_SECRET)) as api:
        for path, body in {
            "/AuthConfig/app": {
                "resourceType": "AuthConfig",
                "theme": {"title": "ACME sign-in", "brand": "ACME"},
            },
            "/AidboxConfig/provider": {
                "resourceType": "AidboxConfig",
                "provider": {"default": "console", "console": {"type": "console"}},
            },
            "/Client/shop": {
                "resourceType": "Client",
                "name": "Shop",
                "secret": "shop-secret",
                "grant_types": ["authorization_code"],
                "auth": {"authorization_code": {"redirect_uri": CALLBACK}},
            },
            "/Client/web": {
                "resourceType": "Client",
                "first_party": True,
                "grant_types": ["implicit"],
                "auth": {"implicit": {"redirect_uri": SPA, "access_token_expiration": 3600}},
            },
            "/User/ann": {"resourceType": "User", "email": "ann@example.org", "password": PASSWORD},
        }.items():
            response = api.put(path, json=body)
            assert response.status_code in (200, 201), response.text
    yield server


def answer_callbacks(page: Page) -> None:
    """Serve the unreachable client redirect URIs from Playwright, so the browser lands somewhere."""

    def fulfil(route: Route) -> None:
        route.fulfill(
            status=200, content_type="text/html", body="<!doctype html><title>client</title><p>client app"
        )

    page.route("http://127.0.0.1:9/**", fulfil)


def step(page: Page, name: str) -> None:
    screenshot(page, f"browser_{name}")


def test_login_consent_and_code(server: LiveServer, page: Page) -> None:
    answer_callbacks(page)
    query = urlencode(
        {
            "response_type": "code",
            "client_id": "shop",
            "redirect_uri": CALLBACK,
            "state": "st-1",
            "scope": "openid",
        }
    )
    page.goto(f"{server.url}/auth/authorize?{query}")
    expect(page).to_have_title("Sign in · ACME sign-in")
    expect(page.locator(".brand")).to_have_text("ACME")
    step(page, "01_login")
    page.get_by_label("E-mail or username").fill("ann@example.org")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading")).to_have_text("Allow access?")
    expect(page.locator("main")).to_contain_text("Shop asks to access your account (ann@example.org)")
    step(page, "02_consent")
    with page.expect_request(f"{CALLBACK}?*") as callback:
        page.get_by_role("button", name="Allow").click()
    target = urlsplit(callback.value.url)
    params = parse_qs(target.query)
    assert f"{target.scheme}://{target.netloc}{target.path}" == CALLBACK
    assert params["state"] == ["st-1"]
    with httpx2.Client(base_url=server.url) as client:
        token = client.post(
            "/auth/token",
            data={
                "grant_type": "authorization_code",
                "code": params["code"][0],
                "redirect_uri": CALLBACK,
                "client_id": "shop",
                "client_secret": "shop-secret",
            },
        )
    assert token.status_code == 200, token.text
    assert token.json()["userinfo"]["email"] == "ann@example.org"


def test_signup_with_the_mailed_link(server: LiveServer, page: Page) -> None:
    answer_callbacks(page)
    query = urlencode({"client_id": "web", "response_type": "token", "redirect_uri": SPA, "state": "s-2"})
    page.goto(f"{server.url}/auth/signup?{query}")
    step(page, "03_signup")
    page.get_by_label("E-mail").fill("new@example.org")
    page.get_by_role("button", name="Send the link").click()
    expect(page.get_by_role("heading")).to_have_text("Check your e-mail")
    step(page, "04_signup_sent")
    # The console provider flushed the e-mail before the page was answered.
    [link] = LINK.findall(server.output())
    page.goto(link)
    expect(page.get_by_role("heading")).to_have_text("Choose a password")
    step(page, "05_signup_confirm")
    page.get_by_label("Password", exact=True).fill("a new password 1")
    page.get_by_label("Repeat the password").fill("a new password 1")
    page.get_by_role("button", name="Create the account").click()
    page.wait_for_url(f"{SPA}#*")
    fragment = parse_qs(urlsplit(page.url).fragment)
    assert fragment["state"] == ["s-2"]
    assert fragment["token_type"] == ["bearer"]
    with httpx2.Client(base_url=server.url) as client:
        me = client.get("/auth/userinfo", headers={"Authorization": f"Bearer {fragment['access_token'][0]}"})
    assert me.status_code == 200
    assert me.json()["email"] == "new@example.org"
    # The link is used up.
    page.goto(link)
    expect(page.get_by_role("heading")).to_have_text("This link does not work")
    step(page, "06_signup_link_used")


def test_wrong_password_shows_the_error(server: LiveServer, page: Page) -> None:
    page.goto(f"{server.url}/auth/login")
    page.get_by_label("E-mail or username").fill("ann@example.org")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong e-mail, username or password.")
    expect(page.get_by_label("E-mail or username")).to_have_value("ann@example.org")
    step(page, "07_login_wrong_password")
    assert not any(cookie["name"] == "asid" for cookie in page.context.cookies())


def test_a_form_without_its_csrf_token_is_refused(server: LiveServer, page: Page) -> None:
    page.goto(f"{server.url}/auth/login")
    page.get_by_label("E-mail or username").fill("ann@example.org")
    page.get_by_label("Password").fill(PASSWORD)
    page.locator("input[name=csrf]").evaluate("field => field.remove()")
    with page.expect_response(f"{server.url}/auth/login") as answer:
        page.get_by_role("button", name="Sign in").click()
    assert answer.value.status == 403
    expect(page.get_by_role("alert")).to_have_text("The form expired; reload and try again.")
    step(page, "08_csrf_refused")
    assert not any(cookie["name"] == "asid" for cookie in page.context.cookies())


def test_logout_and_unsafe_request_pages(server: LiveServer, page: Page) -> None:
    page.goto(f"{server.url}/auth/login?redirect_to=%2Fauth%2Flogout")
    page.get_by_label("E-mail or username").fill("ann")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading")).to_have_text("Sign out")
    step(page, "09_logout")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    step(page, "10_signed_out")
    assert not any(cookie["name"] == "asid" for cookie in page.context.cookies())
    query = urlencode(
        {"response_type": "code", "client_id": "shop", "redirect_uri": "http://127.0.0.1:9/evil"}
    )
    response = page.goto(f"{server.url}/auth/authorize?{query}")
    assert response is not None and response.status == 400
    assert page.url.startswith(server.url)
    expect(page.get_by_role("alert")).to_have_text("'redirect_uri' is not registered for this client")
    step(page, "11_unsafe_authorize")
