"""The two-factor HTML pages, walked by one user the way a browser would: every refusal in order.

The app's clock is a ManualClock: the TOTP steps, the 5-minute pending login and the lockout all move
with `clock.advance`, never with a sleep.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
from starlette.testclient import TestClient

from fhirauth.clock import ManualClock
from fhirauth.twofactor import totp
from fhirauth.twofactor.qr import qr_svg
from fhirauth.twofactor.uri import provisioning_uri
from tests.api.conftest import NO_AUTH
from tests.api.pages_support import (
    alert,
    audit_events,
    call,
    cookie_attributes,
    create_user,
    csrf_from,
    login,
    services,
    set_cookies,
)

SETTINGS = "/auth/two-factor"
VERIFY = "/auth/two-factor/verify"
WRONG = "That code did not work. Check the time on your phone and try the newest code."
TO_LOGIN = "/auth/login?redirect_to=%2Fauth%2Ftwo-factor"
MAX_ATTEMPTS = 3
LOCKOUT_SECONDS = 120
CALLBACK = "https://shop.example.org/cb"

_SECRET = re.compile(r'<code class="secret" id="secret">([A-Z2-7 ]+)</code>')
_QR = re.compile(r'<figure class="qr">(<svg.*?</svg>)\s*</figure>', re.S)
_STATUS = re.compile(r'<p class="status status-(?:on|off)[^"]*"([^>]*)>(.*?)</p>', re.S)
_RECOVERY = re.compile(r"<li><code>([0-9a-z]{5}-[0-9a-z]{5})</code></li>")


@pytest.fixture
def ann(api: TestClient) -> dict[str, Any]:
    response = api.put(
        "/AuthConfig/app",
        json={
            "resourceType": "AuthConfig",
            "twoFactor": {
                "issuerName": "ACME",
                "validPastTokensCount": 1,
                "maxAttempts": MAX_ATTEMPTS,
                "lockoutSeconds": LOCKOUT_SECONDS,
            },
        },
    )
    assert response.status_code == 201, response.text
    return create_user(api, "ann")


def code_now(secret: str, clock: ManualClock) -> str:
    return totp.code_at(secret, totp.step_at(clock().timestamp()))


def wrong_code(secret: str, clock: ManualClock) -> str:
    """A well-formed code that matches no step near now."""
    step = totp.step_at(clock().timestamp())
    near = {totp.code_at(secret, s) for s in range(step - 3, step + 4)}
    return next(f"{n:06d}" for n in range(123456, 1_000_000) if f"{n:06d}" not in near)


def submit(client: TestClient, page: httpx2.Response, action: str, **fields: str) -> httpx2.Response:
    """POST a form of `page` (its CSRF field included), as the browser would after rendering it."""
    return client.post(action, data={"csrf": csrf_from(page), **fields}, follow_redirects=False)


def heading(page: httpx2.Response) -> str:
    match = re.search(r'<h1 id="page-title">(.*?)</h1>', page.text, re.S)
    assert match, page.text
    return html.unescape(match.group(1)).strip()


def status_line(page: httpx2.Response) -> str:
    match = _STATUS.search(page.text)
    assert match, page.text
    return " ".join(re.sub(r"<[^>]+>", "", match.group(2)).split())


def announced(page: httpx2.Response) -> bool:
    """Whether the status line is announced (role="status") as the outcome of what was just done."""
    match = _STATUS.search(page.text)
    assert match, page.text
    return 'role="status"' in match.group(1)


def said(page: httpx2.Response, sentence: str) -> int:
    """How often the page's visible text says `sentence`."""
    body = page.text.split("<body>", 1)[1]
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", body)).split()).count(sentence)


def secret_on(page: httpx2.Response) -> str:
    match = _SECRET.search(page.text)
    assert match, page.text
    return match.group(1).replace(" ", "")


def user_doc(api: TestClient, user_id: str = "ann") -> dict[str, Any]:
    stored = call(api, services(api).storage.get, "User", user_id)
    assert stored is not None
    document: dict[str, Any] = stored.document
    return document


def events(api: TestClient, action: str) -> int:
    return len(audit_events(api, action))


def sign_out(api: TestClient) -> None:
    settings = api.get(SETTINGS)
    assert settings.status_code == 200
    response = submit(api, settings, "/auth/logout")
    assert response.status_code == 200
    assert "asid" not in api.cookies


def password_step(api: TestClient, *, query: str = "") -> httpx2.Response:
    """The password is right; the answer must be the second step, with no session yet."""
    response = login(api, "ann@example.org", query=query)
    assert response.status_code == 302
    assert response.headers["location"] == VERIFY
    cookies = set_cookies(response)
    assert "asid" not in cookies
    _, attributes = cookie_attributes(cookies["fhirauth_pending"])
    assert (attributes["path"], attributes["max-age"], attributes["samesite"]) == ("/auth", "300", "Lax")
    assert "httponly" in attributes
    page = api.get(VERIFY)
    assert page.status_code == 200
    assert heading(page) == "Two-factor authentication"
    return page


def test_the_whole_story_of_one_user(api: TestClient, clock: ManualClock, ann: dict[str, Any]) -> None:
    # 1. signed in with the password only: the settings page says off
    first = login(api, "ann@example.org")
    assert (first.status_code, first.headers["location"]) == (302, SETTINGS)
    first_asid = api.cookies["asid"]
    settings = api.get(SETTINGS)
    assert settings.status_code == 200
    assert status_line(settings).startswith("Two-factor authentication is off.")
    assert 'href="/auth/two-factor/enable"' in settings.text

    # 2. enable: an inline SVG QR of the otpauth URI and the key; a reload shows the same key
    enable = api.get("/auth/two-factor/enable")
    assert enable.status_code == 200
    secret = secret_on(enable)
    assert len(secret) == 32
    qr = _QR.search(enable.text)
    assert qr is not None
    assert qr.group(1) == qr_svg(provisioning_uri(secret, "ann@example.org", "ACME"))
    assert "<img" not in enable.text
    assert secret_on(api.get("/auth/two-factor/enable")) == secret
    assert secret not in str(user_doc(api))
    assert user_doc(api)["twoFactor"]["enabled"] is False

    # 3. a wrong code: the error, 400, the same key again, still off
    refused = submit(api, enable, "/auth/two-factor/enable", code=wrong_code(secret, clock))
    assert refused.status_code == 400
    assert alert(refused) == WRONG
    assert secret_on(refused) == secret
    assert user_doc(api)["twoFactor"]["enabled"] is False
    assert events(api, "2fa-code-refused") == 1

    # 4. the right code: on, and ten recovery codes shown once
    enrolment_code = code_now(secret, clock)
    codes_page = submit(api, refused, "/auth/two-factor/enable", code=enrolment_code)
    assert codes_page.status_code == 200
    assert heading(codes_page) == "Save your recovery codes"
    recovery = _RECOVERY.findall(codes_page.text)
    assert len(recovery) == 10 and len(set(recovery)) == 10
    assert not any(code in str(user_doc(api)) for code in recovery)
    assert events(api, "2fa-enabled") == 1

    # 5. the settings page says on
    settings = api.get(SETTINGS)
    assert status_line(settings) == "Two-factor authentication is on. 10 recovery codes left."
    assert api.get("/auth/two-factor/enable", follow_redirects=False).headers["location"] == SETTINGS

    # 6. sign out; the password alone now leads to the code step, not to a session
    sign_out(api)
    verify = password_step(api)
    assert api.get(SETTINGS, follow_redirects=False).headers["location"] == TO_LOGIN
    assert 'name="action" value="resend"' not in verify.text

    # 7. a wrong code, then the enrolment code again (its step is used up): the same message
    wrong = submit(api, verify, VERIFY, code=wrong_code(secret, clock))
    assert (wrong.status_code, alert(wrong)) == (400, WRONG)
    reused = submit(api, wrong, VERIFY, code=enrolment_code)
    assert (reused.status_code, alert(reused)) == (400, WRONG)
    assert "asid" not in api.cookies
    assert events(api, "2fa-code-refused") == 2
    assert events(api, "2fa-replay-refused") == 1

    # 8. the next step's code: signed in with a new session, back to the continuation
    clock.advance(30)
    pending = api.cookies["fhirauth_pending"]
    done = submit(api, reused, VERIFY, code=code_now(secret, clock))
    assert (done.status_code, done.headers["location"]) == (302, SETTINGS)
    cookies = set_cookies(done)
    assert cookie_attributes(cookies["fhirauth_pending"])[1]["max-age"] == "0"
    assert api.cookies["asid"] not in ("", first_asid)
    assert status_line(api.get(SETTINGS)).startswith("Two-factor authentication is on.")
    # the pending login was used up with it: its cookie, sent again, finishes nothing
    clock.advance(30)
    replayed = api.post(
        VERIFY,
        data={"csrf": csrf_from(reused), "code": code_now(secret, clock)},
        headers={"Cookie": f"fhirauth_csrf={api.cookies['fhirauth_csrf']}; fhirauth_pending={pending}"},
    )
    assert (replayed.status_code, heading(replayed)) == (400, "Sign-in expired")

    # 9. a recovery code works once at the code step
    sign_out(api)
    verify = password_step(api)
    with_recovery = submit(api, verify, VERIFY, code=recovery[0].upper())
    assert (with_recovery.status_code, with_recovery.headers["location"]) == (302, SETTINGS)
    assert status_line(api.get(SETTINGS)) == "Two-factor authentication is on. 9 recovery codes left."
    assert events(api, "2fa-recovery-used") == 1
    sign_out(api)
    verify = password_step(api)
    spent = submit(api, verify, VERIFY, code=recovery[0])
    assert (spent.status_code, alert(spent)) == (400, WRONG)

    # 10. the pending login lasts five minutes: after that even the right code is too late
    clock.advance(301)
    expired = submit(api, spent, VERIFY, code=code_now(secret, clock))
    assert expired.status_code == 400
    assert heading(expired) == "Sign-in expired"
    assert alert(expired) == "Your sign-in took too long. Sign in again."
    assert cookie_attributes(set_cookies(expired)["fhirauth_pending"])[1]["max-age"] == "0"
    assert "asid" not in api.cookies
    assert heading(api.get(VERIFY)) == "Sign-in expired"
    # the right code was not spent on the expired login
    verify = password_step(api)
    after_expiry = submit(api, verify, VERIFY, code=code_now(secret, clock))
    assert after_expiry.status_code == 302

    # 11. maxAttempts wrong codes lock the step: 429, even for the right code, until lockoutSeconds pass
    sign_out(api)
    clock.advance(30)
    page = password_step(api)
    for _ in range(MAX_ATTEMPTS):
        page = submit(api, page, VERIFY, code=wrong_code(secret, clock))
        assert (page.status_code, alert(page)) == (400, WRONG)
    assert events(api, "2fa-lockout") == 1
    locked = submit(api, page, VERIFY, code=code_now(secret, clock))
    assert locked.status_code == 429
    assert heading(locked) == "Too many attempts"
    assert alert(locked) == "Too many wrong codes. Try again in 2 minutes."
    assert locked.headers["retry-after"] == str(LOCKOUT_SECONDS)
    assert events(api, "2fa-lockout") == 2
    clock.advance(LOCKOUT_SECONDS - 1)
    still = submit(api, page, VERIFY, code=code_now(secret, clock))
    assert (still.status_code, alert(still)) == (429, "Too many wrong codes. Try again in 1 minute.")
    assert still.headers["retry-after"] == "1"
    clock.advance(2)
    unlocked = submit(api, page, VERIFY, code=code_now(secret, clock))
    assert (unlocked.status_code, unlocked.headers["location"]) == (302, SETTINGS)

    # 12. disable needs a current code: a wrong one is refused, the right one turns 2FA off
    disable = api.get("/auth/two-factor/disable")
    assert (disable.status_code, heading(disable)) == (200, "Turn off two-factor authentication")
    refused = submit(api, disable, "/auth/two-factor/disable", code=wrong_code(secret, clock))
    assert (refused.status_code, alert(refused)) == (400, WRONG)
    assert user_doc(api)["twoFactor"]["enabled"] is True
    clock.advance(30)
    off = submit(api, refused, "/auth/two-factor/disable", code=code_now(secret, clock))
    assert (off.status_code, off.headers["location"]) == (303, f"{SETTINGS}?done=disabled")
    settings = api.get(off.headers["location"])
    assert status_line(settings).startswith("Two-factor authentication is off.")
    # The status line announces the change; no second message repeats it.
    assert announced(settings)
    assert said(settings, "Two-factor authentication is off") == 1
    assert events(api, "2fa-disabled") == 1
    assert user_doc(api)["twoFactor"] == {"enabled": False}

    # 13. enabling again makes a new key, and the password alone signs in meanwhile
    assert secret_on(api.get("/auth/two-factor/enable")) != secret
    sign_out(api)
    assert login(api, "ann@example.org").headers["location"] == SETTINGS


def test_new_recovery_codes_replace_the_old_ones(
    api: TestClient, clock: ManualClock, ann: dict[str, Any]
) -> None:
    login(api, "ann@example.org")
    secret = secret_on(api.get("/auth/two-factor/enable"))
    old = _RECOVERY.findall(
        submit(
            api, api.get("/auth/two-factor/enable"), "/auth/two-factor/enable", code=code_now(secret, clock)
        ).text
    )
    form = api.get("/auth/two-factor/recovery-codes")
    assert (form.status_code, heading(form)) == (200, "New recovery codes")
    refused = submit(api, form, "/auth/two-factor/recovery-codes", code=old[0][:5])
    assert (refused.status_code, alert(refused)) == (400, WRONG)
    clock.advance(30)
    fresh_page = submit(api, refused, "/auth/two-factor/recovery-codes", code=code_now(secret, clock))
    assert (fresh_page.status_code, heading(fresh_page)) == (200, "Save your recovery codes")
    fresh = _RECOVERY.findall(fresh_page.text)
    assert len(fresh) == 10 and not set(fresh) & set(old)
    assert events(api, "2fa-recovery-regenerated") == 1
    sign_out(api)
    verify = password_step(api)
    stale = submit(api, verify, VERIFY, code=old[1])
    assert (stale.status_code, alert(stale)) == (400, WRONG)
    assert submit(api, stale, VERIFY, code=fresh[1]).status_code == 302


def test_the_status_line_is_the_one_message_after_a_change(
    api: TestClient, clock: ManualClock, ann: dict[str, Any]
) -> None:
    # Without recovery codes, turning 2FA on lands on the settings page rather than the codes page.
    config = api.put(
        "/AuthConfig/app",
        json={"resourceType": "AuthConfig", "twoFactor": {"issuerName": "ACME", "recoveryCodes": False}},
    )
    assert config.status_code == 200, config.text
    login(api, "ann@example.org")
    enable = api.get("/auth/two-factor/enable")
    on = submit(api, enable, "/auth/two-factor/enable", code=code_now(secret_on(enable), clock))
    assert (on.status_code, on.headers["location"]) == (303, f"{SETTINGS}?done=enabled")
    settings = api.get(on.headers["location"])
    assert status_line(settings) == "Two-factor authentication is on. No recovery codes left."
    assert announced(settings)
    assert said(settings, "Two-factor authentication is on") == 1
    # A later visit, or a link claiming the opposite of the stored state, announces nothing.
    for path in (SETTINGS, f"{SETTINGS}?done=disabled", f"{SETTINGS}?done=other"):
        again = api.get(path)
        assert (again.status_code, announced(again)) == (200, False), path
        assert said(again, "Two-factor authentication is on") == 1, path
        assert said(again, "Two-factor authentication is off") == 0, path


@pytest.mark.parametrize(
    "path",
    [SETTINGS, "/auth/two-factor/enable", "/auth/two-factor/disable", "/auth/two-factor/recovery-codes"],
)
def test_pages_without_a_session_go_to_login(api: TestClient, ann: dict[str, Any], path: str) -> None:
    response = api.get(path, follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (302, TO_LOGIN)
    if path != SETTINGS:
        posted = api.post(path, data={"code": "123456"}, follow_redirects=False)
        assert (posted.status_code, posted.headers["location"]) == (302, TO_LOGIN)
    unknown = api.get(path, headers={"Cookie": "asid=not-a-session"}, follow_redirects=False)
    assert unknown.headers["location"] == TO_LOGIN


def test_the_code_step_without_a_pending_login_has_expired(api: TestClient, ann: dict[str, Any]) -> None:
    page = api.get(VERIFY)
    assert (page.status_code, heading(page)) == (400, "Sign-in expired")
    cookie = f"fhirauth_csrf={api.cookies['fhirauth_csrf']}; fhirauth_pending=made-up"
    form = {"csrf": csrf_from(api.get("/auth/login")), "code": "123456"}
    posted = api.post(VERIFY, data=form, headers={"Cookie": cookie})
    assert (posted.status_code, heading(posted)) == (400, "Sign-in expired")
    assert "asid" not in api.cookies


def test_a_post_without_its_csrf_field_is_refused_and_writes_nothing(
    api: TestClient, clock: ManualClock, ann: dict[str, Any]
) -> None:
    login(api, "ann@example.org")
    secret = secret_on(api.get("/auth/two-factor/enable"))
    code = code_now(secret, clock)
    for fields in ({"code": code}, {"code": code, "csrf": "0" * 64}):
        refused = api.post("/auth/two-factor/enable", data=fields)
        assert refused.status_code == 403
        assert heading(refused) == "The form expired"
        assert alert(refused) == "The form expired; reload and try again."
    assert user_doc(api)["twoFactor"]["enabled"] is False
    assert events(api, "2fa-enabled") == events(api, "2fa-code-refused") == 0
    # the code was not spent: with the field, the same code turns 2FA on
    enable = api.get("/auth/two-factor/enable")
    recovery = _RECOVERY.findall(submit(api, enable, "/auth/two-factor/enable", code=code).text)
    assert len(recovery) == 10

    clock.advance(30)
    assert api.post("/auth/two-factor/disable", data={"code": code_now(secret, clock)}).status_code == 403
    assert api.post("/auth/two-factor/recovery-codes", data={"code": recovery[0]}).status_code == 403
    assert user_doc(api)["twoFactor"]["enabled"] is True
    assert len(user_doc(api)["twoFactor"]["recoveryCodes"]) == 10

    sign_out(api)
    password_step(api)
    assert api.post(VERIFY, data={"code": code_now(secret, clock)}).status_code == 403
    assert api.post(VERIFY, data={"code": recovery[0]}).status_code == 403
    assert "asid" not in api.cookies
    assert events(api, "2fa-code-refused") == events(api, "2fa-recovery-used") == 0
    # the pending login is still there, and neither the code nor the recovery code was spent
    verify = api.get(VERIFY)
    assert submit(api, verify, VERIFY, code=code_now(secret, clock)).status_code == 302
    assert len(user_doc(api)["twoFactor"]["recoveryCodes"]) == 10


def test_the_authorize_continuation_through_the_code_step(
    api: TestClient, clock: ManualClock, ann: dict[str, Any]
) -> None:
    secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    api.patch("/User/ann", json={"twoFactor": {"enabled": True, "secretKey": secret}})
    api.put(
        "/Client/shop",
        json={
            "resourceType": "Client",
            "secret": "shop-secret",
            "first_party": True,
            "grant_types": ["authorization_code"],
            "auth": {"authorization_code": {"redirect_uri": CALLBACK}},
        },
    )
    query = urlencode(
        {"response_type": "code", "client_id": "shop", "redirect_uri": CALLBACK, "state": "st-42"}
    )
    to_login = api.get(f"/auth/authorize?{query}", follow_redirects=False)
    assert (to_login.status_code, to_login.headers["location"]) == (302, f"/auth/login?{query}")
    verify = password_step(api, query=query)
    back = submit(api, verify, VERIFY, code=code_now(secret, clock))
    assert (back.status_code, back.headers["location"]) == (302, f"/auth/authorize?{query}")
    redirected = api.get(back.headers["location"], follow_redirects=False)
    assert redirected.status_code == 302
    target = urlsplit(redirected.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == CALLBACK
    params = parse_qs(target.query)
    assert params["state"] == ["st-42"]
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
    assert token.json()["userinfo"]["id"] == "ann"
