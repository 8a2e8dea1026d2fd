"""The one RFC 6749 §5.2 error body."""

from __future__ import annotations

from fhirauth.auth.oauth_errors import InvalidGrant, TemporarilyUnavailable, error_body


def test_the_error_body_is_the_code_and_its_description() -> None:
    assert error_body("wrong_token", "Wrong token") == {
        "error": "wrong_token",
        "error_description": "Wrong token",
    }
    assert InvalidGrant("Expired code").body() == error_body("invalid_grant", "Expired code")
    assert TemporarilyUnavailable("Busy").body() == error_body("temporarily_unavailable", "Busy")
