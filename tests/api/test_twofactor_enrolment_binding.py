"""Two-factor enrolment cannot be pinned by a third party.

Only a first-party client's token reaches the JSON 2FA operations; a pending secret belongs to the
sign-in that started it (a browser session, or the browser sign-in a first-party token came from, or
the Session of a password-grant token) and lives `pendingSecretSeconds` (10 minutes by default).
Every test runs on both backends (the `api` fixture); time moves with the ManualClock.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
from starlette.testclient import TestClient

from fhirauth.clock import ManualClock
from fhirauth.twofactor import totp
from tests.api.conftest import NO_AUTH
from tests.api.pages_support import PASSWORD, alert, call, csrf_from, login, services

ENABLE = "/auth/two-factor/enable"
REQUEST = "/app/auth/two-factor/request"
CONFIRM = "/app/auth/two-factor/confirm"
PORTAL_CALLBACK = "https://portal.example/cb"
NOT_REQUESTED = {"error": "not_requested", "error_description": "2FA is not requested"}
FIRST_PARTY_REQUIRED = {
    "error": "first_party_client_required",
    "error_description": "Two-factor operations need a token issued to a first-party client",
}
EXPIRED = "This setup was started elsewhere or took too long. Scan the new code and enter a code from it."
_SECRET = re.compile(r'<code class="secret" id="secret">([A-Z2-7 ]+)</code>')


@pytest.fixture
def world(api: TestClient) -> None:
    """Ann; a first-party password client, a third-party one, and a first-party implicit client."""
    for path, body in {
        "/AuthConfig/app": {"resourceType": "AuthConfig", "twoFactor": {"issuerName": "ACME"}},
        "/Client/app": {
            "resourceType": "Client",
            "first_party": True,
            "secret": "app-secret",
            "grant_types": ["password"],
        },
        "/Client/third": {"resourceType": "Client", "secret": "third-secret", "grant_types": ["password"]},
        "/Client/portal": {
            "resourceType": "Client",
            "first_party": True,
            "grant_types": ["implicit"],
            "auth": {"implicit": {"redirect_uri": PORTAL_CALLBACK}},
        },
        "/User/ann": {"resourceType": "User", "email": "ann@example.org", "password": PASSWORD},
    }.items():
        response = api.put(path, json=body)
        assert response.status_code == 201, response.text


def password_token(api: TestClient, client_id: str = "app", **extra: str) -> dict[str, str]:
    """A new password-grant sign-in: the Authorization header of its token."""
    form = {
        "grant_type": "password",
        "username": "ann@example.org",
        "password": PASSWORD,
        "client_id": client_id,
        "client_secret": f"{client_id}-secret",
        **extra,
    }
    response = api.post("/auth/token", data=form, headers=NO_AUTH)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def basic_app() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(b"app:app-secret").decode()}


def secret_of(uri: str) -> str:
    return parse_qs(urlsplit(uri).query)["secret"][0]


def code_now(secret: str, clock: ManualClock) -> str:
    return totp.code_at(secret, totp.step_at(clock().timestamp()))


def request_secret(api: TestClient, auth: dict[str, str]) -> str:
    response = api.post(REQUEST, json={}, headers=auth)
    assert response.status_code == 200, response.text
    return secret_of(response.json()["uri"])


def user_doc(api: TestClient) -> dict[str, Any]:
    stored = call(api, services(api).storage.get, "User", "ann")
    assert stored is not None
    document: dict[str, Any] = stored.document
    return document


def attempts(api: TestClient) -> object:
    record = call(api, services(api).storage.record_get, "totp-step", "ann")
    return record.document if record is not None else None


def audit_total(api: TestClient, action: str) -> int:
    total: int = api.get(f"/AuditEvent?action={action}").json()["total"]
    return total


def browser_sign_in(api: TestClient) -> str:
    """A new browser sign-in in `api`'s cookie jar, leaving any other one alive; its `asid` value."""
    api.cookies.delete("asid")
    response = login(api, "ann@example.org")
    assert response.status_code == 302, response.text
    asid: str = api.cookies["asid"]
    return asid


def use_browser(api: TestClient, asid: str) -> None:
    api.cookies.delete("asid")
    api.cookies.set("asid", asid)


def secret_on(page: httpx2.Response) -> str:
    match = _SECRET.search(page.text)
    assert match, page.text
    return match.group(1).replace(" ", "")


def submit_code(api: TestClient, page: httpx2.Response, code: str) -> httpx2.Response:
    return api.post(ENABLE, data={"csrf": csrf_from(page), "code": code}, follow_redirects=False)


# A first-party client only


def test_a_third_party_token_is_refused_on_every_operation_and_nothing_is_written(
    api: TestClient, clock: ManualClock, world: None
) -> None:
    third = password_token(api, "third")
    first = password_token(api)
    # 1. enrolment: 403, no pending secret stored
    for path in (REQUEST, CONFIRM):
        refused = api.post(path, json={"token": "123456"}, headers=third)
        assert (refused.status_code, refused.json()) == (403, FIRST_PARTY_REQUIRED)
    assert api.post(REQUEST, json={"transport": "sms"}, headers=third).status_code == 403
    assert "twoFactor" not in user_doc(api)
    # 2. with 2FA on, a current code is refused before it is looked at: nothing spent, nothing counted
    secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    assert (
        api.patch("/User/ann", json={"twoFactor": {"enabled": True, "secretKey": secret}}).status_code == 200
    )
    before = user_doc(api)["twoFactor"]
    for operation in ("confirm", "disable", "verify", "recovery-codes"):
        path = f"/app/auth/two-factor/{operation}"
        refused = api.post(path, json={"token": code_now(secret, clock)}, headers=third)
        assert (refused.status_code, refused.json()) == (403, FIRST_PARTY_REQUIRED), operation
    assert user_doc(api)["twoFactor"] == before
    assert attempts(api) is None
    assert audit_total(api, "2fa-code-refused") == audit_total(api, "2fa-disabled") == 0
    # 3. the same code, from the first-party client, is accepted: it was never spent
    verified = api.post("/app/auth/two-factor/verify", json={"token": code_now(secret, clock)}, headers=first)
    assert (verified.status_code, verified.json()) == (200, {})


def test_a_browser_cookie_sent_as_a_bearer_token_is_not_a_client_token(api: TestClient, world: None) -> None:
    asid = browser_sign_in(api)
    refused = api.post(REQUEST, json={}, headers={"Authorization": f"Bearer {asid}"})
    assert (refused.status_code, refused.json()) == (403, FIRST_PARTY_REQUIRED)
    assert "twoFactor" not in user_doc(api)


def test_a_first_party_token_enrols(api: TestClient, clock: ManualClock, world: None) -> None:
    auth = password_token(api)
    secret = request_secret(api, auth)
    confirmed = api.post(CONFIRM, json={"token": code_now(secret, clock)}, headers=auth)
    assert confirmed.status_code == 200
    assert len(confirmed.json()["recoveryCodes"]) == 10
    # the binding went with the pending state: an enabled user keeps only what 2FA needs
    assert set(user_doc(api)["twoFactor"]) == {"enabled", "secretKey", "recoveryCodes"}


# A pending secret belongs to the sign-in that started it


def test_json_a_pending_secret_is_never_shown_to_another_sign_in(
    api: TestClient, clock: ManualClock, world: None
) -> None:
    a, b = password_token(api), password_token(api)
    # 1. A starts; a reload in A shows the same secret
    secret_a = request_secret(api, a)
    assert request_secret(api, a) == secret_a
    # 2. B confirms with a code of A's secret: refused before the code is looked at, nothing enabled
    stolen = api.post(CONFIRM, json={"token": code_now(secret_a, clock)}, headers=b)
    assert (stolen.status_code, stolen.json()) == (422, NOT_REQUESTED)
    assert user_doc(api)["twoFactor"]["enabled"] is False
    assert attempts(api) is None
    # 3. B starts: a secret of its own, not A's
    secret_b = request_secret(api, b)
    assert secret_b != secret_a
    assert request_secret(api, b) == secret_b
    # 4. A's secret is gone: A's code is refused, and A starting again gets a third secret
    late = api.post(CONFIRM, json={"token": code_now(secret_a, clock)}, headers=a)
    assert (late.status_code, late.json()) == (422, NOT_REQUESTED)
    secret_a2 = request_secret(api, a)
    assert secret_a2 not in (secret_a, secret_b)
    # 5. A confirms its own: on, with A's key
    assert api.post(CONFIRM, json={"token": code_now(secret_a2, clock)}, headers=a).status_code == 200
    assert user_doc(api)["twoFactor"]["enabled"] is True
    assert audit_total(api, "2fa-code-refused") == 0


def test_pages_a_pending_secret_is_never_shown_to_another_browser(
    api: TestClient, clock: ManualClock, world: None
) -> None:
    asid_a = browser_sign_in(api)
    asid_b = browser_sign_in(api)
    # 1. browser A opens the enable page; a reload shows the same key
    use_browser(api, asid_a)
    page_a = api.get(ENABLE)
    secret_a = secret_on(page_a)
    assert secret_on(api.get(ENABLE)) == secret_a
    # 2. browser B posts a code of A's key without having opened the page: refused, nothing enabled,
    # and B is shown a key of its own instead
    use_browser(api, asid_b)
    stolen = submit_code(api, page_a, code_now(secret_a, clock))
    assert (stolen.status_code, alert(stolen)) == (400, EXPIRED)
    secret_b = secret_on(stolen)
    assert secret_b != secret_a
    assert user_doc(api)["twoFactor"]["enabled"] is False
    assert attempts(api) is None
    assert secret_on(api.get(ENABLE)) == secret_b
    # 3. back in A: A's key is gone, A's code is refused, and A sees a fresh key
    use_browser(api, asid_a)
    late = submit_code(api, page_a, code_now(secret_a, clock))
    assert (late.status_code, alert(late)) == (400, EXPIRED)
    secret_a2 = secret_on(late)
    assert secret_a2 not in (secret_a, secret_b)
    assert user_doc(api)["twoFactor"]["enabled"] is False
    # 4. A turns 2FA on with its own key
    done = submit_code(api, late, code_now(secret_a2, clock))
    assert done.status_code == 200
    assert user_doc(api)["twoFactor"]["enabled"] is True


def test_a_first_party_token_shares_the_browser_sign_in_it_came_from(
    api: TestClient, clock: ManualClock, world: None
) -> None:
    browser_sign_in(api)
    query = urlencode({"response_type": "token", "client_id": "portal", "redirect_uri": PORTAL_CALLBACK})
    redirected = api.get(f"/auth/authorize?{query}", follow_redirects=False)
    assert redirected.status_code == 302, redirected.text
    token = parse_qs(urlsplit(redirected.headers["location"]).fragment)["access_token"][0]
    portal = {"Authorization": f"Bearer {token}"}
    # the app starts enrolment; the settings page of the same browser sign-in shows the same key
    secret = request_secret(api, portal)
    page = api.get(ENABLE)
    assert secret_on(page) == secret
    # a password-grant sign-in is another sign-in: it gets a key of its own
    other = request_secret(api, password_token(api))
    assert other != secret
    # which the browser does not see: it gets a fresh one again
    assert secret_on(api.get(ENABLE)) not in (secret, other)


def test_a_refreshed_token_keeps_its_sign_in(api: TestClient, world: None) -> None:
    app = {
        "resourceType": "Client",
        "first_party": True,
        "secret": "app-secret",
        "grant_types": ["password", "refresh_token"],
        "auth": {"password": {"refresh_token": True}},
    }
    assert api.put("/Client/app", json=app).status_code == 200
    form = {"grant_type": "password", "username": "ann@example.org", "password": PASSWORD}
    tokens = api.post("/auth/token", data=form, headers=basic_app()).json()
    secret = request_secret(api, {"Authorization": f"Bearer {tokens['access_token']}"})
    refreshed = api.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=basic_app(),
    )
    assert refreshed.status_code == 200, refreshed.text
    assert request_secret(api, {"Authorization": f"Bearer {refreshed.json()['access_token']}"}) == secret


# A pending secret expires


def test_json_a_pending_secret_expires_after_ten_minutes(
    api: TestClient, clock: ManualClock, world: None
) -> None:
    auth = password_token(api)
    secret = request_secret(api, auth)
    clock.advance(599)
    assert request_secret(api, auth) == secret
    clock.advance(2)
    expired = api.post(CONFIRM, json={"token": code_now(secret, clock)}, headers=auth)
    assert (expired.status_code, expired.json()) == (422, NOT_REQUESTED)
    assert user_doc(api)["twoFactor"]["enabled"] is False
    assert attempts(api) is None
    fresh = request_secret(api, auth)
    assert fresh != secret
    # a reload does not stretch the ten minutes: they count from when the secret was made
    clock.advance(300)
    assert request_secret(api, auth) == fresh
    clock.advance(301)
    assert request_secret(api, auth) != fresh


def test_pages_a_pending_secret_expires_after_ten_minutes(
    api: TestClient, clock: ManualClock, world: None
) -> None:
    browser_sign_in(api)
    page = api.get(ENABLE)
    secret = secret_on(page)
    clock.advance(601)
    expired = submit_code(api, page, code_now(secret, clock))
    assert (expired.status_code, alert(expired)) == (400, EXPIRED)
    fresh = secret_on(expired)
    assert fresh != secret
    assert user_doc(api)["twoFactor"]["enabled"] is False
    assert submit_code(api, expired, code_now(fresh, clock)).status_code == 200


def test_the_auth_config_sets_how_long_a_pending_secret_lives(
    api: TestClient, clock: ManualClock, world: None
) -> None:
    config = {"resourceType": "AuthConfig", "twoFactor": {"issuerName": "ACME", "pendingSecretSeconds": 120}}
    assert api.put("/AuthConfig/app", json=config).status_code == 200
    auth = password_token(api)
    secret = request_secret(api, auth)
    clock.advance(119)
    assert request_secret(api, auth) == secret
    clock.advance(2)
    expired = api.post(CONFIRM, json={"token": code_now(secret, clock)}, headers=auth)
    assert (expired.status_code, expired.json()) == (422, NOT_REQUESTED)
    assert request_secret(api, auth) != secret


@pytest.mark.parametrize("seconds", [0, 59, 86401, "600", 1.5])
def test_the_auth_config_refuses_a_senseless_pending_lifetime(api: TestClient, seconds: object) -> None:
    config = {"resourceType": "AuthConfig", "twoFactor": {"pendingSecretSeconds": seconds}}
    response = api.put("/AuthConfig/app", json=config)
    assert response.status_code == 422, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert api.get("/AuthConfig/app").status_code == 404


# Stored state


def test_the_binding_is_never_returned(api: TestClient, world: None) -> None:
    request_secret(api, password_token(api))
    shown = api.get("/User/ann").json()
    assert shown["twoFactor"] == {"enabled": False}
    assert user_doc(api)["twoFactor"]["enabled"] is False
    bad_search = api.get("/User?twoFactor.pending.session=x")
    assert bad_search.status_code == 400


def test_a_pending_secret_stored_without_a_binding_is_treated_as_foreign(
    api: TestClient, clock: ManualClock, world: None
) -> None:
    # What the code before the binding stored: a sealed secret and enabled false, nothing else.
    old = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    assert api.patch("/User/ann", json={"twoFactor": {"enabled": False, "secretKey": old}}).status_code == 200
    auth = password_token(api)
    refused = api.post(CONFIRM, json={"token": code_now(old, clock)}, headers=auth)
    assert (refused.status_code, refused.json()) == (422, NOT_REQUESTED)
    assert user_doc(api)["twoFactor"]["enabled"] is False
    assert request_secret(api, auth) != old
    browser_sign_in(api)
    assert secret_on(api.get(ENABLE)) != old


def test_the_openapi_document_names_the_403_of_every_operation(api: TestClient) -> None:
    paths = api.get("/openapi.json", headers=NO_AUTH).json()["paths"]
    for operation in ("request", "confirm", "disable", "verify", "recovery-codes"):
        forbidden = paths[f"/app/auth/two-factor/{operation}"]["post"]["responses"]["403"]
        assert forbidden == {
            "description": "The token was not issued to a first-party client",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TwoFactorError"}}},
        }, operation
