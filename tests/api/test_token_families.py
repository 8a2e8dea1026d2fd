"""Refresh-token families over HTTP on both backends (RFC 9700 §4.14.2): a grant's tokens and all
their rotations are one family, and presenting a rotated refresh token revokes the whole family."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from fhirauth.clock import ManualClock
from tests.api.oauth_support import (
    PASSWORD,
    REDIRECT,
    SECRET,
    authorization_code,
    basic,
    bearer,
    password_tokens,
    put,
    services,
    setup_world,
    token,
)
from tests.api.pages_support import audit_detail, audit_events

REUSED = {
    "error": "invalid_grant",
    "error_description": "Refresh token was already used; the tokens issued from it are revoked",
}
REVOKED = {"error": "invalid_grant", "error_description": "Refresh token was revoked"}


@pytest.fixture
def world(api: TestClient) -> TestClient:
    setup_world(api)
    return api


def refresh(api: TestClient, refresh_token: str, **form: str) -> Any:
    return token(api, grant_type="refresh_token", refresh_token=refresh_token, **form)


def rotated(api: TestClient, refresh_token: str, **form: str) -> dict[str, Any]:
    response = refresh(api, refresh_token, **form)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def introspect(api: TestClient, value: str) -> Any:
    return api.post("/auth/introspect", data={"token": value}, headers=basic("app", SECRET)).json()


def userinfo_status(api: TestClient, access_token: str) -> int:
    return api.get("/auth/userinfo", headers=bearer(access_token)).status_code


def assert_family_dead(api: TestClient, tokens: dict[str, Any]) -> None:
    assert userinfo_status(api, tokens["access_token"]) == 401
    assert introspect(api, tokens["access_token"]) == {"active": False}
    assert introspect(api, tokens["refresh_token"]) == {"active": False}
    response = refresh(api, tokens["refresh_token"])
    assert (response.status_code, response.json()) == (400, REVOKED)


def assert_family_alive(api: TestClient, tokens: dict[str, Any]) -> None:
    assert userinfo_status(api, tokens["access_token"]) == 200
    assert introspect(api, tokens["access_token"])["active"] is True
    assert introspect(api, tokens["refresh_token"])["active"] is True


def session_id_of(api: TestClient, access_token: str) -> str:
    assert api.portal is not None
    session = api.portal.call(services(api).sessions.find_by_access_token, access_token)
    assert session is not None
    return str(session["id"])


def test_reusing_a_rotated_refresh_token_revokes_its_family(world: TestClient) -> None:
    first = password_tokens(world)
    second = rotated(world, first["refresh_token"])
    assert_family_alive(world, second)

    reuse = refresh(world, first["refresh_token"])

    assert (reuse.status_code, reuse.json()) == (400, REUSED)
    assert_family_dead(world, second)


def test_reusing_an_older_rotation_revokes_the_newest_tokens(world: TestClient) -> None:
    first = password_tokens(world)
    second = rotated(world, first["refresh_token"])
    third = rotated(world, second["refresh_token"])

    reuse = refresh(world, first["refresh_token"])

    assert (reuse.status_code, reuse.json()) == (400, REUSED)
    assert_family_dead(world, third)


def test_reuse_spares_the_users_other_families(world: TestClient) -> None:
    first = password_tokens(world)
    other = password_tokens(world)
    rotated(world, first["refresh_token"])

    assert refresh(world, first["refresh_token"]).json() == REUSED

    assert_family_alive(world, other)
    assert userinfo_status(world, rotated(world, other["refresh_token"])["access_token"]) == 200


def test_reuse_in_a_code_family_revokes_it(world: TestClient) -> None:
    code = authorization_code(world)
    first = token(world, grant_type="authorization_code", code=code, redirect_uri=REDIRECT).json()
    second = rotated(world, first["refresh_token"])

    assert refresh(world, first["refresh_token"]).json() == REUSED

    assert_family_dead(world, second)


def test_reuse_by_a_public_client_revokes_its_family(world: TestClient) -> None:
    put(world, "Client", "spa", grant_types=["password"], auth={"password": {"refresh_token": True}})
    form = {"client_id": "spa"}
    first = token(
        world, {}, grant_type="password", username="ann@example.org", password=PASSWORD, **form
    ).json()
    second = token(world, {}, grant_type="refresh_token", refresh_token=first["refresh_token"], **form)
    assert second.status_code == 200

    reuse = token(world, {}, grant_type="refresh_token", refresh_token=first["refresh_token"], **form)

    assert (reuse.status_code, reuse.json()) == (400, REUSED)
    assert userinfo_status(world, second.json()["access_token"]) == 401
    again = token(world, {}, grant_type="refresh_token", refresh_token=second.json()["refresh_token"], **form)
    assert again.json() == REVOKED


def test_a_rotated_token_presented_by_another_client_still_revokes(world: TestClient) -> None:
    # Whoever holds a rotated token got it from a leak: the family is compromised whoever presents it.
    put(world, "Client", "other", secret="other-secret", grant_types=["refresh_token"])
    first = password_tokens(world)
    second = rotated(world, first["refresh_token"])

    reuse = token(
        world,
        {"Authorization": ""},
        grant_type="refresh_token",
        refresh_token=first["refresh_token"],
        client_id="other",
        client_secret="other-secret",
    )

    assert (reuse.status_code, reuse.json()) == (400, REUSED)
    assert_family_dead(world, second)


def test_a_detected_reuse_is_audited(world: TestClient) -> None:
    first = password_tokens(world)
    second = rotated(world, first["refresh_token"])
    session_id = session_id_of(world, second["access_token"])

    refresh(world, first["refresh_token"])

    (event,) = audit_events(world, "refresh-token-reuse")
    assert event["outcome"] == "failure"
    assert event["agent"] == [
        {
            "who": {"resourceType": "User", "id": "ann"},
            "requestor": True,
            "network": {"address": "testclient", "type": "2"},
        },
        {"who": {"resourceType": "Client", "id": "app"}, "requestor": False},
    ]
    assert audit_detail(event) == {"grant_type": "refresh_token", "session": session_id}
    assert first["refresh_token"] not in str(event) and second["refresh_token"] not in str(event)


def test_a_rotated_token_past_its_expiry_is_only_invalid(world: TestClient, clock: ManualClock) -> None:
    setup_world(world, auth={"password": {"refresh_token": True, "refresh_token_expiration": 600}})
    first = password_tokens(world)
    clock.advance(300)
    second = rotated(world, first["refresh_token"])
    clock.advance(300)

    late = refresh(world, first["refresh_token"])

    assert late.json() == {"error": "invalid_grant", "error_description": "Invalid refresh token"}
    assert_family_alive(world, second)
    assert audit_events(world, "refresh-token-reuse") == []


def test_unknown_refresh_tokens_revoke_nothing(world: TestClient) -> None:
    first = password_tokens(world)

    response = refresh(world, "never-issued")

    assert response.json() == {"error": "invalid_grant", "error_description": "Invalid refresh token"}
    assert_family_alive(world, first)
    assert audit_events(world, "refresh-token-reuse") == []


def test_the_record_of_a_token_that_never_expires_is_kept_thirty_days(
    world: TestClient, clock: ManualClock
) -> None:
    """Reuse is detected for 30 days after a rotation; after that the record is gone, not kept for ever."""
    first = password_tokens(world)
    second = rotated(world, first["refresh_token"])
    clock.advance(30 * 86_400 + 1)

    late = refresh(world, first["refresh_token"])

    assert late.json() == {"error": "invalid_grant", "error_description": "Invalid refresh token"}
    assert audit_events(world, "refresh-token-reuse") == []
    assert refresh(world, second["refresh_token"]).status_code == 200
