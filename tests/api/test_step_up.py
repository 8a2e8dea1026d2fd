"""How the user signed in (amr) and the class it reaches (acr), and the step-up that raises it.

A browser Session records its methods (`amr`) and when each was last done (`amr_times`); ID tokens
and introspection tell them. A request asking for MFA (acr_values, an essential acr in `claims`, or
a Client with require_mfa) makes a password-only sign-in add the second factor in place: the same
Session (sid), a new cookie. Stored state is read back, so both backends.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, urlencode

import httpx2
import pytest
from starlette.testclient import TestClient

from fhirauth.clock import ManualClock
from fhirauth.twofactor import totp
from tests.api.conftest import NO_AUTH
from tests.api.oidc_support import (
    CB,
    NONCE,
    RP_SECRET,
    answer,
    authorize,
    id_token_claims,
    put_client,
    rp_request,
    setup_clients,
    sign_in,
)
from tests.api.pages_support import audit_events, call, csrf_from, login, services, set_cookies

SIGNED_IN_AT = 1767225600  # the ManualClock's start, 2026-01-01T00:00:00Z
ACR_PWD = "urn:fhirauth:acr:pwd"
ACR_MFA = "urn:fhirauth:acr:mfa"
VERIFY = "/auth/two-factor/verify"
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
STRICT_CB = "https://strict.example.org/cb"


@pytest.fixture
def clients(api: TestClient) -> None:
    setup_clients(api)
    put_client(
        api,
        "strict",
        first_party=True,
        secret="strict-secret",
        require_mfa=True,
        grant_types=["authorization_code", "implicit"],
        auth={"authorization_code": {"redirect_uri": STRICT_CB}, "implicit": {"redirect_uri": STRICT_CB}},
    )


def with_two_factor(api: TestClient) -> None:
    patched = api.patch("/User/ann", json={"twoFactor": {"enabled": True, "secretKey": SECRET}})
    assert patched.status_code == 200, patched.text


def code_now(clock: ManualClock) -> str:
    return totp.code_at(SECRET, totp.step_at(clock().timestamp()))


def browser_session(api: TestClient) -> dict[str, Any]:
    bundle = api.get("/Session", params={"type": "browser", "active": "true"}).json()
    (entry,) = bundle["entry"]
    session: dict[str, Any] = entry["resource"]
    return session


def id_token_of(
    api: TestClient, response: httpx2.Response, clock: ManualClock, where: str = CB
) -> dict[str, Any]:
    assert response.status_code == 302, response.text
    values = answer(response.headers["location"], where, "fragment")
    assert "error" not in values, values
    client_id = "strict" if where == STRICT_CB else "rp"
    return id_token_claims(
        api, values["id_token"], kind="implicit", now=clock(), nonce=NONCE, client_id=client_id
    )


def submit_code(api: TestClient, code: str) -> httpx2.Response:
    page = api.get(VERIFY)
    assert page.status_code == 200, page.text
    return api.post(VERIFY, data={"csrf": csrf_from(page), "code": code}, follow_redirects=False)


def asking_mfa(**extra: str) -> dict[str, str]:
    return rp_request("id_token", acr_values=ACR_MFA, **extra)


def essential_acr(*values: str) -> str:
    return json.dumps({"id_token": {"acr": {"essential": True, "values": list(values)}}})


# amr and acr of a sign-in


def test_a_password_sign_in_is_pwd(api: TestClient, clients: None, clock: ManualClock) -> None:
    sign_in(api)
    session = browser_session(api)
    assert (session["amr"], session["amr_times"], session["auth_time"]) == (
        ["pwd"],
        {"pwd": SIGNED_IN_AT},
        SIGNED_IN_AT,
    )
    claims = id_token_of(api, authorize(api, **rp_request("id_token")), clock)
    assert (claims["amr"], claims["acr"], claims["auth_time"]) == (["pwd"], ACR_PWD, SIGNED_IN_AT)


@pytest.mark.parametrize("second_factor", ["totp", "recovery code"])
def test_a_sign_in_with_the_second_factor_is_pwd_otp_mfa(
    api: TestClient, clients: None, clock: ManualClock, second_factor: str
) -> None:
    with_two_factor(api)
    # 1. the password at T0; the code 10 s later
    assert login(api, "ann").headers["location"] == VERIFY
    clock.advance(10)
    code = code_now(clock) if second_factor == "totp" else _a_recovery_code(api, clock)
    assert submit_code(api, code).status_code == 302
    # 2. the Session records both methods and when each was done; auth_time is the latest
    session = browser_session(api)
    assert (session["amr"], session["amr_times"], session["auth_time"]) == (
        ["pwd", "otp", "mfa"],
        {"pwd": SIGNED_IN_AT, "otp": SIGNED_IN_AT + 10},
        SIGNED_IN_AT + 10,
    )
    claims = id_token_of(api, authorize(api, **rp_request("id_token")), clock)
    assert (claims["amr"], claims["acr"], claims["auth_time"]) == (
        ["pwd", "otp", "mfa"],
        ACR_MFA,
        SIGNED_IN_AT + 10,
    )


def _a_recovery_code(api: TestClient, clock: ManualClock) -> str:
    """A fresh set of recovery codes (made with the current code, as the settings page does); one of them."""
    codes: list[str] = call(api, services(api).twofactor.regenerate_recovery_codes, "ann", code_now(clock))
    return codes[0]


def test_the_code_grant_and_introspection_tell_amr_and_acr(
    api: TestClient, clients: None, clock: ManualClock
) -> None:
    with_two_factor(api)
    login(api, "ann")
    submit_code(api, code_now(clock))
    response = authorize(api, **rp_request("code"))
    code = answer(response.headers["location"], CB, "query")["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CB}
    tokens = api.post("/auth/token", data=form, auth=("rp", RP_SECRET), headers=NO_AUTH).json()
    claims = id_token_claims(
        api, tokens["id_token"], kind="code", now=clock(), nonce=NONCE, access_token=tokens["access_token"]
    )
    assert (claims["amr"], claims["acr"]) == (["pwd", "otp", "mfa"], ACR_MFA)
    for token in (tokens["access_token"], tokens["refresh_token"]):
        body = api.post("/auth/introspect", data={"token": token}, auth=("rp", RP_SECRET)).json()
        assert (body["active"], body["amr"], body["acr"]) == (True, ["pwd", "otp", "mfa"], ACR_MFA)
    # A refresh keeps them (Core §12.2: the same sign-in), in the ID token and in introspection.
    clock.advance(60)
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    refreshed = api.post("/auth/token", data=form, auth=("rp", RP_SECRET), headers=NO_AUTH).json()
    claims = id_token_claims(
        api, refreshed["id_token"], kind="code", now=clock(), access_token=refreshed["access_token"]
    )
    assert (claims["amr"], claims["acr"]) == (["pwd", "otp", "mfa"], ACR_MFA)
    body = api.post(
        "/auth/introspect", data={"token": refreshed["access_token"]}, auth=("rp", RP_SECRET)
    ).json()
    assert (body["amr"], body["acr"]) == (["pwd", "otp", "mfa"], ACR_MFA)


def test_a_token_without_a_sign_in_has_no_amr(api: TestClient, clients: None) -> None:
    put_client(api, "svc", secret="svc-secret", grant_types=["client_credentials"])
    token = api.post(
        "/auth/token", data={"grant_type": "client_credentials"}, auth=("svc", "svc-secret"), headers=NO_AUTH
    ).json()["access_token"]
    body = api.post("/auth/introspect", data={"token": token}, auth=("svc", "svc-secret")).json()
    assert body["active"] is True
    assert "amr" not in body and "acr" not in body


def test_a_session_stored_before_amr_counts_as_a_password_sign_in(
    api: TestClient, clients: None, clock: ManualClock
) -> None:
    sign_in(api)
    session = browser_session(api)
    for name in ("amr", "amr_times"):
        del session[name]
    session.pop("meta")
    assert api.put(f"/Session/{session['id']}", json=session).status_code == 200
    claims = id_token_of(api, authorize(api, **rp_request("id_token")), clock)
    assert (claims["amr"], claims["acr"]) == (["pwd"], ACR_PWD)
    # and a request for MFA steps it up like any password sign-in
    with_two_factor(api)
    response = authorize(api, **asking_mfa())
    assert (response.status_code, response.headers["location"]) == (302, VERIFY)


# Step-up: a password-only sign-in asked for MFA


def test_acr_values_asking_for_mfa_adds_the_second_factor_to_the_same_sign_in(
    api: TestClient, clients: None, clock: ManualClock
) -> None:
    with_two_factor(api)
    # 1. signed in with the password alone (2FA was turned on afterwards)
    api.patch("/User/ann", json={"twoFactor": {"enabled": False}})
    sid = sign_in(api)
    with_two_factor(api)
    old_cookie = api.cookies["asid"]
    params = asking_mfa()
    # 2. the request asks for MFA: the code step, with no page of the client's yet
    clock.advance(30)
    response = authorize(api, **params)
    assert (response.status_code, response.headers["location"]) == (302, VERIFY)
    assert "fhirauth_pending" in set_cookies(response)
    # 3. the code: back to the same request, the same Session, a new cookie
    clock.advance(5)
    back = submit_code(api, code_now(clock))
    assert (back.status_code, back.headers["location"]) == (302, f"/auth/authorize?{urlencode(params)}")
    assert "asid" in set_cookies(back)
    assert api.cookies["asid"] != old_cookie
    session = browser_session(api)
    assert session["id"] == sid
    assert (session["amr"], session["amr_times"], session["auth_time"]) == (
        ["pwd", "otp", "mfa"],
        {"pwd": SIGNED_IN_AT, "otp": SIGNED_IN_AT + 35},
        SIGNED_IN_AT + 35,
    )
    # 4. the ID token says so
    claims = id_token_of(api, api.get(back.headers["location"], follow_redirects=False), clock)
    assert (claims["amr"], claims["acr"], claims["auth_time"], claims["sid"]) == (
        ["pwd", "otp", "mfa"],
        ACR_MFA,
        SIGNED_IN_AT + 35,
        sid,
    )
    # 5. the cookie from before the step-up signs nobody in any more
    assert call(api, services(api).sessions.resolve, old_cookie) is None
    assert call(api, services(api).sessions.resolve, api.cookies["asid"]) is not None
    assert [e["entity"][0]["detail"] for e in audit_events(api, "login")][-1] == [
        {"type": "session", "valueString": sid},
        {"type": "stepUp", "valueString": "otp"},
    ]


def test_a_client_that_requires_mfa_steps_up_whatever_the_request_says(
    api: TestClient, clients: None, clock: ManualClock
) -> None:
    with_two_factor(api)
    api.patch("/User/ann", json={"twoFactor": {"enabled": False}})
    sign_in(api)
    with_two_factor(api)
    params = {**rp_request("id_token", acr_values=ACR_PWD), "client_id": "strict", "redirect_uri": STRICT_CB}
    response = authorize(api, **params)
    assert (response.status_code, response.headers["location"]) == (302, VERIFY)
    back = submit_code(api, code_now(clock))
    claims = id_token_of(api, api.get(back.headers["location"], follow_redirects=False), clock, STRICT_CB)
    assert (claims["amr"], claims["acr"]) == (["pwd", "otp", "mfa"], ACR_MFA)


def test_an_essential_acr_in_claims_steps_up(api: TestClient, clients: None, clock: ManualClock) -> None:
    sign_in(api)
    with_two_factor(api)
    params = rp_request("id_token", claims=essential_acr(ACR_MFA))
    response = authorize(api, **params)
    assert (response.status_code, response.headers["location"]) == (302, VERIFY)
    back = submit_code(api, code_now(clock))
    claims = id_token_of(api, api.get(back.headers["location"], follow_redirects=False), clock)
    assert claims["acr"] == ACR_MFA


def test_an_mfa_sign_in_asked_for_pwd_answers_the_class_asked_for(
    api: TestClient, clients: None, clock: ManualClock
) -> None:
    with_two_factor(api)
    login(api, "ann")
    submit_code(api, code_now(clock))
    # Core §5.5.1.1: an essential acr is answered with one of its values, which this sign-in meets.
    claims = id_token_of(api, authorize(api, **rp_request("id_token", claims=essential_acr(ACR_PWD))), clock)
    assert (claims["amr"], claims["acr"]) == (["pwd", "otp", "mfa"], ACR_PWD)
    # Without a request, the sign-in's own class.
    claims = id_token_of(api, authorize(api, **rp_request("id_token")), clock)
    assert claims["acr"] == ACR_MFA


def test_acr_values_that_a_password_meets_do_not_step_up(
    api: TestClient, clients: None, clock: ManualClock
) -> None:
    sign_in(api)
    with_two_factor(api)
    # Any one of the listed classes will do; the password meets the first.
    claims = id_token_of(
        api, authorize(api, **rp_request("id_token", acr_values=f"{ACR_PWD} {ACR_MFA}")), clock
    )
    assert (claims["amr"], claims["acr"]) == (["pwd"], ACR_PWD)


@pytest.mark.parametrize("acr_values", ["urn:example:gold", "2", f"urn:example:gold {ACR_PWD}"])
def test_unknown_acr_values_are_ignored(
    api: TestClient, clients: None, clock: ManualClock, acr_values: str
) -> None:
    # Core §3.1.2.1: acr_values are voluntary; §15.1: they must not cause an error.
    sign_in(api)
    with_two_factor(api)
    claims = id_token_of(api, authorize(api, **rp_request("id_token", acr_values=acr_values)), clock)
    assert claims["acr"] == ACR_PWD


def test_an_essential_acr_of_unknown_values_only_is_access_denied(api: TestClient, clients: None) -> None:
    sign_in(api)
    response = authorize(api, **rp_request("id_token", claims=essential_acr("urn:example:gold")))
    assert answer(response.headers["location"], CB, "fragment") == {
        "error": "access_denied",
        "error_description": (
            f"None of the essential acr values can be met; this server has {ACR_PWD} and {ACR_MFA}"
        ),
        "state": "st-1",
    }


@pytest.mark.parametrize(
    "claims",
    ["{", "[]", '{"id_token": []}', '{"id_token": {"acr": {"values": "x"}}}', '{"id_token": {"acr": 1}}'],
)
def test_a_malformed_claims_parameter_is_invalid_request(api: TestClient, clients: None, claims: str) -> None:
    sign_in(api)
    response = authorize(api, **rp_request("id_token", claims=claims))
    values = answer(response.headers["location"], CB, "fragment")
    assert (values["error"], values["state"]) == ("invalid_request", "st-1")
    assert values["error_description"].startswith("Malformed 'claims'")


def test_step_up_under_prompt_none_is_interaction_required(
    api: TestClient, clients: None, clock: ManualClock
) -> None:
    sign_in(api)
    with_two_factor(api)
    response = authorize(api, **asking_mfa(prompt="none"))
    assert answer(response.headers["location"], CB, "fragment") == {
        "error": "interaction_required",
        "error_description": "The request needs a second factor this sign-in has not given",
        "state": "st-1",
    }
    assert "fhirauth_pending" not in set_cookies(response)
    assert browser_session(api)["amr"] == ["pwd"]


def test_step_up_ends_if_the_sign_in_ended_meanwhile(
    api: TestClient, clients: None, clock: ManualClock
) -> None:
    sign_in(api)
    with_two_factor(api)
    assert authorize(api, **asking_mfa()).headers["location"] == VERIFY
    page = api.get(VERIFY)
    # Signed out in another tab: the code alone must not sign anyone in.
    logout_page = api.get("/auth/logout")
    api.post("/auth/logout", data={"csrf": csrf_from(logout_page)})
    response = api.post(
        VERIFY, data={"csrf": csrf_from(page), "code": code_now(clock)}, follow_redirects=False
    )
    assert response.status_code == 400
    assert "Sign in again" in response.text
    assert api.get("/Session", params={"type": "browser", "active": "true"}).json()["total"] == 0


def test_a_user_without_two_factor_enrols_and_returns_to_the_request(
    api: TestClient, clients: None, clock: ManualClock
) -> None:
    sid = sign_in(api)
    params = asking_mfa()
    continuation = f"/auth/authorize?{urlencode(params)}"
    # 1. no second factor to ask for: the enable page, which comes back here
    response = authorize(api, **params)
    enable = f"/auth/two-factor/enable?redirect_to={quote(continuation, safe='')}"
    assert (response.status_code, response.headers["location"]) == (302, enable)
    page = api.get(enable)
    assert page.status_code == 200
    secret = re.search(r'id="secret">([A-Z2-7 ]+)</code>', page.text)
    assert secret is not None
    key = secret.group(1).replace(" ", "")
    # 2. the code from the new key turns 2FA on and is this sign-in's second factor
    clock.advance(7)
    code = totp.code_at(key, totp.step_at(clock().timestamp()))
    done = api.post(enable, data={"csrf": csrf_from(page), "code": code}, follow_redirects=False)
    assert done.status_code == 200
    assert "Save your recovery codes" in done.text
    assert f'href="{continuation.replace("&", "&amp;")}"' in done.text
    assert "asid" in set_cookies(done)
    session = browser_session(api)
    assert (session["id"], session["amr"], session["amr_times"]) == (
        sid,
        ["pwd", "otp", "mfa"],
        {"pwd": SIGNED_IN_AT, "otp": SIGNED_IN_AT + 7},
    )
    # 3. back at the request, which now has what it asked for
    claims = id_token_of(api, api.get(continuation, follow_redirects=False), clock)
    assert (claims["amr"], claims["acr"], claims["sid"]) == (["pwd", "otp", "mfa"], ACR_MFA, sid)


@pytest.mark.parametrize("target", ["https://evil.example/x", "//evil.example/x", "/\\evil"])
def test_the_enable_page_goes_back_only_to_a_local_path(
    api: TestClient, clients: None, target: str, clock: ManualClock
) -> None:
    sign_in(api)
    enable = f"/auth/two-factor/enable?redirect_to={quote(target, safe='')}"
    page = api.get(enable)
    secret = re.search(r'id="secret">([A-Z2-7 ]+)</code>', page.text)
    assert secret is not None
    code = totp.code_at(secret.group(1).replace(" ", ""), totp.step_at(clock().timestamp()))
    done = api.post(enable, data={"csrf": csrf_from(page), "code": code}, follow_redirects=False)
    assert done.status_code == 200
    assert 'href="/auth/two-factor"' in done.text
    assert "evil" not in done.text


def test_discovery_lists_the_acr_values(api: TestClient, clients: None) -> None:
    metadata = api.get("/.well-known/openid-configuration", headers=NO_AUTH).json()
    assert metadata["acr_values_supported"] == [ACR_PWD, ACR_MFA]
    assert metadata["claims_parameter_supported"] is True
    assert {"amr", "acr"} <= set(metadata["claims_supported"])


def test_a_consent_post_cannot_skip_the_step_up(api: TestClient, clients: None) -> None:
    sign_in(api)
    with_two_factor(api)
    params = asking_mfa()
    page = api.get("/auth/login")
    response = api.post(
        "/auth/consent",
        data={"csrf": csrf_from(page), "query": urlencode(params), "decision": "approve"},
        follow_redirects=False,
    )
    assert (response.status_code, response.headers["location"]) == (
        302,
        f"/auth/authorize?{urlencode(params)}",
    )
    assert api.get("/Session", params={"type": "implicit"}).json()["total"] == 0
