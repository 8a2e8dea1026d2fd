"""SMART App Launch: the authorization request's SMART rules (aud, PKCE S256, launch), the launch
context in the token response, through refresh and introspection, and registering an EHR launch."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from fhirauth.clock import ManualClock
from tests.api.conftest import NO_AUTH
from tests.api.smart_support import (
    APP_SECRET,
    BASE,
    CONFIDENTIAL,
    EHR,
    EHR_SECRET,
    PUBLIC,
    authorize,
    basic,
    code_for,
    exchange,
    redirect_params,
    register_launch,
    setup_smart,
    sign_in,
    smart_tokens,
)


@pytest.fixture
def smart(api: TestClient) -> TestClient:
    setup_smart(api)
    return api


def refresh(api: TestClient, refresh_token: str) -> Any:
    response = api.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": PUBLIC},
        headers=NO_AUTH,
    )
    assert response.status_code == 200, response.text
    return response.json()


def introspect(api: TestClient, token: str) -> Any:
    response = api.post("/auth/introspect", data={"token": token})
    assert response.status_code == 200, response.text
    return response.json()


# Standalone launch


def test_standalone_patient_launch_takes_the_patient_from_the_users_fhir_user(smart: TestClient) -> None:
    tokens = smart_tokens(smart, "ann", "launch/patient patient/User.rs offline_access")
    assert tokens["patient"] == "p1"
    assert tokens["scope"] == "launch/patient patient/User.rs offline_access"
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3600
    assert "encounter" not in tokens and "fhirContext" not in tokens
    # kept through refresh, and told by introspection
    refreshed = refresh(smart, tokens["refresh_token"])
    assert (refreshed["patient"], refreshed["scope"]) == ("p1", tokens["scope"])
    claims = introspect(smart, refreshed["access_token"])
    assert (claims["active"], claims["patient"], claims["scope"]) == (True, "p1", tokens["scope"])


def test_patient_scopes_infer_the_patient_without_launch_patient(smart: TestClient) -> None:
    assert smart_tokens(smart, "bob", "patient/User.rs")["patient"] == "p2"


def test_patient_scopes_without_a_patient_are_refused(smart: TestClient) -> None:
    # doc's fhirUser is a Practitioner, eve has none: no patient can be established.
    for user in ("doc", "eve"):
        sign_in(smart, user)
        found = redirect_params(authorize(smart, scope="launch/patient patient/User.rs"))
        assert (found["error"], found["state"]) == ("invalid_scope", "st-1")
        assert "patient" in found["error_description"]
        assert "code" not in found


def test_launch_patient_alone_without_a_patient_just_has_no_patient(smart: TestClient) -> None:
    tokens = smart_tokens(smart, "eve", "launch/patient user/User.rs")
    assert "patient" not in tokens


def id_token_claims(tokens: dict[str, Any]) -> dict[str, Any]:
    payload = tokens["id_token"].split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def test_fhir_user_scope_puts_the_fhir_user_in_the_id_token_and_the_response(smart: TestClient) -> None:
    tokens = smart_tokens(smart, "doc", "openid fhirUser user/User.rs offline_access")
    assert tokens["fhirUser"] == "Practitioner/d1"
    assert id_token_claims(tokens)["fhirUser"] == "Practitioner/d1"
    assert introspect(smart, tokens["access_token"])["fhirUser"] == "Practitioner/d1"
    refreshed = refresh(smart, tokens["refresh_token"])
    assert id_token_claims(refreshed)["fhirUser"] == "Practitioner/d1"
    # without the fhirUser scope, or without a fhirUser on the User, there is none
    assert "fhirUser" not in id_token_claims(smart_tokens(smart, "doc", "openid user/User.rs"))
    eve = smart_tokens(smart, "eve", "openid fhirUser")
    assert "fhirUser" not in eve and "fhirUser" not in id_token_claims(eve)


# The authorization request's SMART rules


@pytest.mark.parametrize(
    ("params", "description"),
    [
        ({"aud": ""}, "Missing 'aud'"),
        ({"aud": "https://evil.example/fhir"}, "'aud' must be this server's FHIR base URL"),
        ({"code_challenge": "", "code_challenge_method": ""}, "Missing 'code_challenge'"),
        ({"code_challenge_method": "plain"}, "S256"),
    ],
)
def test_smart_requests_need_aud_and_s256(
    smart: TestClient, params: dict[str, str], description: str
) -> None:
    sign_in(smart, "ann")
    found = redirect_params(authorize(smart, scope="launch/patient patient/User.rs", **params))
    assert (found["error"], found["state"]) == ("invalid_request", "st-1")
    assert description in found["error_description"]


def test_aud_with_a_trailing_slash_is_this_server(smart: TestClient) -> None:
    assert smart_tokens(smart, "ann", "patient/User.rs", aud=f"{BASE}/")["patient"] == "p1"


def test_a_confidential_client_may_leave_pkce_out_unless_its_flow_asks(smart: TestClient) -> None:
    code = code_for(
        smart,
        "ann",
        client_id=CONFIDENTIAL,
        scope="patient/User.rs",
        code_challenge="",
        code_challenge_method="",
    )
    response = exchange(smart, code, CONFIDENTIAL, code_verifier="")
    assert response.status_code == 200, response.text
    assert response.json()["patient"] == "p1"


# EHR launch


def test_ehr_launch_carries_the_registered_context_through_refresh(smart: TestClient) -> None:
    context = {
        "patient": "p9",
        "encounter": "e1",
        "fhirContext": [{"reference": "Observation/o1"}],
        "need_patient_banner": False,
        "smart_style_url": "https://ehr.example/style.json",
        "intent": "reconcile-medications",
    }
    launch = register_launch(smart, **context)
    tokens = smart_tokens(smart, "doc", "launch patient/User.rs offline_access", launch=launch)
    for name, value in context.items():
        assert tokens[name] == value, name
    refreshed = refresh(smart, tokens["refresh_token"])
    for name, value in context.items():
        assert refreshed[name] == value, name
    claims = introspect(smart, refreshed["access_token"])
    assert (claims["patient"], claims["encounter"]) == ("p9", "e1")


def test_a_launch_id_works_once(smart: TestClient) -> None:
    launch = register_launch(smart, patient="p9")
    smart_tokens(smart, "doc", "launch", launch=launch)
    found = redirect_params(authorize(smart, scope="launch", launch=launch))
    assert found["error"] == "invalid_request"
    assert "'launch'" in found["error_description"]


def test_an_unknown_launch_id_is_refused(smart: TestClient) -> None:
    sign_in(smart, "doc")
    found = redirect_params(authorize(smart, scope="launch", launch="no-such-launch"))
    assert (found["error"], found["error_description"]) == (
        "invalid_request",
        "Unknown or expired 'launch'",
    )


def test_an_expired_launch_id_is_refused(smart: TestClient, clock: ManualClock) -> None:
    launch = register_launch(smart, patient="p9")
    clock.advance(601)
    sign_in(smart, "doc")
    found = redirect_params(authorize(smart, scope="launch", launch=launch))
    assert (found["error"], found["error_description"]) == (
        "invalid_request",
        "Unknown or expired 'launch'",
    )


def test_a_launch_registered_for_another_client_is_refused(smart: TestClient) -> None:
    response = smart.post(
        "/auth/smart/launch", json={"client": CONFIDENTIAL, "patient": "p9"}, headers=basic(EHR, EHR_SECRET)
    )
    launch = response.json()["launch"]
    sign_in(smart, "doc")
    found = redirect_params(authorize(smart, scope="launch", launch=launch))
    assert (found["error"], found["error_description"]) == (
        "invalid_request",
        "Unknown or expired 'launch'",
    )


def test_a_launch_bound_to_a_user_refuses_another_user(smart: TestClient) -> None:
    launch = register_launch(smart, patient="p9", user="doc")
    sign_in(smart, "eve")
    found = redirect_params(authorize(smart, scope="launch", launch=launch))
    assert found["error"] == "access_denied"
    # the launch was not used up by the refusal
    assert smart_tokens(smart, "doc", "launch", launch=launch)["patient"] == "p9"


def test_launch_and_the_launch_scope_go_together(smart: TestClient) -> None:
    launch = register_launch(smart, patient="p9")
    sign_in(smart, "doc")
    without_scope = redirect_params(authorize(smart, scope="patient/User.rs", launch=launch))
    assert (without_scope["error"], without_scope["error_description"]) == (
        "invalid_scope",
        "'launch' needs the 'launch' scope",
    )
    without_launch = redirect_params(authorize(smart, scope="launch"))
    assert (without_launch["error"], without_launch["error_description"]) == (
        "invalid_request",
        "The 'launch' scope needs a 'launch' parameter (EHR launch)",
    )


# Registering a launch


def test_only_the_root_client_and_launch_registrars_register_launches(smart: TestClient) -> None:
    body = {"client": PUBLIC, "patient": "p9"}
    assert smart.post("/auth/smart/launch", json=body).status_code == 201  # root (fixture default)
    refused = smart.post("/auth/smart/launch", json=body, headers=basic(CONFIDENTIAL, "wrong"))
    assert refused.status_code == 401
    anonymous = smart.post("/auth/smart/launch", json=body, headers=NO_AUTH)
    assert anonymous.status_code == 401
    smart.put("/Client/plain", json={"resourceType": "Client", "secret": "s", "grant_types": ["basic"]})
    forbidden = smart.post("/auth/smart/launch", json=body, headers=basic("plain", "s"))
    assert forbidden.status_code == 403
    assert forbidden.json()["issue"][0]["code"] == "forbidden"
    user_token = smart.post(
        "/auth/token",
        data={
            "grant_type": "password",
            "username": "doc@example.org",
            "password": "correct horse battery staple",
        },
        headers=basic(CONFIDENTIAL, APP_SECRET),
    ).json()["access_token"]
    as_user = smart.post("/auth/smart/launch", json=body, headers={"Authorization": f"Bearer {user_token}"})
    assert as_user.status_code == 403


def client_token(api: TestClient, client_id: str, secret: str, scope: str | None) -> dict[str, str]:
    form = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    response = api.post("/auth/token", data=form, headers=basic(client_id, secret))
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_a_token_bound_by_smart_scopes_registers_no_launch(smart: TestClient) -> None:
    """Scopes such as system/User.rs were granted for reading records: giving another app a user's
    context lies outside them, whoever's token it is (the root client's included)."""
    body = {"client": PUBLIC, "patient": "p9"}
    patched = smart.patch(f"/Client/{EHR}", json={"grant_types": ["basic", "client_credentials"]})
    assert patched.status_code == 200, patched.text
    for client_id, secret in (("root", "secret"), (EHR, EHR_SECRET)):
        scoped = client_token(smart, client_id, secret, "system/User.rs")
        refused = smart.post("/auth/smart/launch", json=body, headers=scoped)
        assert refused.status_code == 403, (client_id, refused.text)
        assert refused.json()["issue"][0]["diagnostics"] == (
            "A token bound by SMART scopes does not register launches"
        )
        unscoped = client_token(smart, client_id, secret, None)
        assert smart.post("/auth/smart/launch", json=body, headers=unscoped).status_code == 201, client_id
    assert smart.post("/auth/smart/launch", json=body, headers=basic(EHR, EHR_SECRET)).status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"patient": "p9"},
        {"client": "no-such-client", "patient": "p9"},
        {"client": PUBLIC, "patient": 7},
        {"client": PUBLIC, "patient": "p 9"},
        {"client": PUBLIC, "fhirContext": [{"type": "Patient"}]},
        {"client": PUBLIC, "fhirContext": "Observation/o1"},
        {"client": PUBLIC, "need_patient_banner": "yes"},
        {"client": PUBLIC, "smart_style_url": "not a url"},
        {"client": PUBLIC, "colour": "red"},
        ["not", "an", "object"],
    ],
)
def test_a_bad_launch_is_refused_and_nothing_is_stored(smart: TestClient, body: Any) -> None:
    response = smart.post("/auth/smart/launch", json=body, headers=basic(EHR, EHR_SECRET))
    assert response.status_code in (400, 422), response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def test_a_registered_launch_answers_its_id_and_lifetime(smart: TestClient) -> None:
    response = smart.post(
        "/auth/smart/launch", json={"client": PUBLIC, "patient": "p9"}, headers=basic(EHR, EHR_SECRET)
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"launch", "expires_in"}
    assert body["expires_in"] == 600
    assert len(body["launch"]) >= 43
    assert response.headers["cache-control"] == "no-store"
