"""SMART scopes at the authorization and token endpoints: well-formed, allowed to the client (a listed
resource scope covers the narrower ones), and of a context the flow can have."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.api.pages_support import PASSWORD
from tests.api.smart_support import (
    APP_SECRET,
    CONFIDENTIAL,
    PUBLIC,
    authorize,
    authorize_query,
    basic,
    redirect_params,
    setup_smart,
    sign_in,
    smart_tokens,
)


@pytest.fixture
def smart(api: TestClient) -> TestClient:
    setup_smart(api, scope=["launch/patient", "openid", "fhirUser", "patient/*.rs", "user/User.cruds"])
    return api


def token(api: TestClient, **form: str) -> tuple[int, dict[str, str]]:
    response = api.post("/auth/token", data=form, headers=basic(CONFIDENTIAL, APP_SECRET))
    return response.status_code, response.json()


@pytest.mark.parametrize(
    "scope",
    [
        "patient/User.rs",
        "patient/User.r",
        "patient/*.s",
        "patient/User.read",
        "patient/*.read",
        "user/User.cud",
        "user/User.write",
        "user/User.*",
        "launch/patient openid fhirUser",
    ],
)
def test_scopes_covered_by_the_clients_list_are_granted_as_asked(smart: TestClient, scope: str) -> None:
    tokens = smart_tokens(smart, "ann", scope)
    assert tokens["scope"] == scope


@pytest.mark.parametrize(
    ("scope", "refused"),
    [
        ("patient/User.cruds", "patient/User.cruds"),
        ("patient/User.write", "patient/User.write"),
        ("user/Client.rs", "user/Client.rs"),
        ("user/*.r", "user/*.r"),
        ("openid profile", "profile"),
    ],
)
def test_a_scope_the_client_may_not_have_is_invalid_scope(
    smart: TestClient, scope: str, refused: str
) -> None:
    sign_in(smart, "ann")
    found = redirect_params(authorize(smart, scope=scope))
    assert (found["error"], found["error_description"], found["state"]) == (
        "invalid_scope",
        f"Scope '{refused}' is not allowed for this client",
        "st-1",
    )


@pytest.mark.parametrize(
    "scope",
    ["patient/User.sr", "patient/User.", "patient/User.rr", "user/User.xyz", "patient/.rs", "user/user.rs"],
)
def test_a_malformed_smart_scope_is_invalid_scope(api: TestClient, scope: str) -> None:
    setup_smart(api)
    sign_in(api, "ann")
    found = redirect_params(authorize(api, scope=scope))
    assert found["error"] == "invalid_scope"
    assert found["error_description"] == (
        f"Malformed SMART scope '{scope}': context/Type.permissions, permissions in the order c r u d s"
    )


def test_search_parameter_constraints_are_refused(api: TestClient) -> None:
    setup_smart(api)
    sign_in(api, "ann")
    found = redirect_params(authorize(api, scope="patient/User.rs?email=a@b.c"))
    assert (found["error"], found["error_description"]) == (
        "invalid_scope",
        "Scope 'patient/User.rs?email=a@b.c': search-parameter constraints are not supported",
    )


def test_system_scopes_are_for_client_tokens_only(api: TestClient) -> None:
    setup_smart(api)
    sign_in(api, "ann")
    found = redirect_params(authorize(api, scope="system/User.rs"))
    assert (found["error"], found["error_description"]) == (
        "invalid_scope",
        "Scope 'system/User.rs' is for client_credentials tokens; ask for patient/ or user/ scopes",
    )
    status, body = token(
        api, grant_type="password", username="ann@example.org", password=PASSWORD, scope="system/*.rs"
    )
    assert (status, body["error"]) == (400, "invalid_scope")


@pytest.mark.parametrize("scope", ["patient/User.rs", "user/User.rs"])
def test_patient_and_user_scopes_need_a_user(api: TestClient, scope: str) -> None:
    setup_smart(api)
    status, body = token(api, grant_type="client_credentials", scope=scope)
    assert (status, body["error"]) == (400, "invalid_scope")
    assert body["error_description"] == (
        f"Scope '{scope}' needs a user; a client_credentials token may have system/ scopes"
    )
    status, body = token(api, grant_type="client_credentials", scope="system/*.rs")
    assert (status, body["scope"]) == (200, "system/*.rs")


def test_a_refresh_may_narrow_to_a_covered_scope(api: TestClient) -> None:
    setup_smart(api)
    tokens = smart_tokens(api, "ann", "patient/User.rs offline_access")
    narrowed = api.post(
        "/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": PUBLIC,
            "scope": "patient/User.r",
        },
        headers={"Authorization": ""},
    )
    assert narrowed.status_code == 200, narrowed.text
    assert (narrowed.json()["scope"], narrowed.json()["patient"]) == ("patient/User.r", "p1")
    widened = api.post(
        "/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": narrowed.json()["refresh_token"],
            "client_id": PUBLIC,
            "scope": "patient/User.rs",
        },
        headers={"Authorization": ""},
    )
    assert (widened.status_code, widened.json()["error"]) == (400, "invalid_scope")


def test_the_consent_page_says_what_each_scope_allows(api: TestClient) -> None:
    setup_smart(api)
    sign_in(api, "ann")
    query = authorize_query(
        scope="openid fhirUser launch/patient patient/User.rs user/*.cruds offline_access"
    )
    page = api.get(f"/auth/authorize?{query}", headers={"Authorization": ""})
    assert page.status_code == 200
    for line in (
        "Know who you are (sign you in)",
        "Know which FHIR record stands for you (your fhirUser)",
        "Know which patient you chose",
        "Read and search the selected patient&#39;s User records",
        "Create, read, change, delete and search all the records you may reach",
        "Keep access after you close the app, until you revoke it",
    ):
        assert line in page.text, line
    assert "<code>patient/User.rs</code>" in page.text
