"""PKCE (RFC 7636): the Appendix B vector, the challenge read at /auth/authorize, the verifier check."""

from __future__ import annotations

import base64

import pytest

from fhirauth.auth import pkce
from fhirauth.auth.oauth_errors import InvalidGrant, InvalidRequest
from fhirauth.auth.pkce import CodeChallenge

# RFC 7636 Appendix B, verbatim.
VERIFIER_OCTETS = bytes(
    [116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186, 22, 212, 37, 77, 105, 214, 191, 240,
     91, 88, 5, 88, 83, 132, 141, 121]
)  # fmt: skip
CODE_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CODE_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"

PUBLIC = {"resourceType": "Client", "id": "spa"}
CONFIDENTIAL = {"resourceType": "Client", "id": "app", "secret": "$argon2id$..."}
CONFIDENTIAL_WITH_PKCE = {**CONFIDENTIAL, "auth": {"authorization_code": {"pkce": True}}}


def test_rfc7636_appendix_b_verifier_is_the_base64url_of_its_octets() -> None:
    assert base64.urlsafe_b64encode(VERIFIER_OCTETS).rstrip(b"=").decode() == CODE_VERIFIER


def test_rfc7636_appendix_b_s256_challenge() -> None:
    assert pkce.s256(CODE_VERIFIER) == CODE_CHALLENGE


def test_s256_challenge_matches_its_verifier_only() -> None:
    challenge = CodeChallenge(CODE_CHALLENGE, "S256")
    assert challenge.matches(CODE_VERIFIER)
    assert not challenge.matches(CODE_VERIFIER[:-1] + "j")
    assert not challenge.matches(CODE_CHALLENGE)


def test_plain_challenge_is_the_verifier_itself() -> None:
    challenge = CodeChallenge(CODE_VERIFIER, "plain")
    assert challenge.matches(CODE_VERIFIER)
    assert not challenge.matches(CODE_CHALLENGE)


@pytest.mark.parametrize(
    ("verifier", "valid"),
    [
        ("a" * 42, False),
        ("a" * 43, True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("A-Za-z0-9._~" + "x" * 31, True),
        ("a" * 42 + "+", False),
        ("a" * 42 + "/", False),
        ("a" * 42 + "=", False),
        ("a" * 42 + " ", False),
        ("a" * 42 + "é", False),
    ],
)
def test_verifier_is_43_to_128_unreserved_characters(verifier: str, valid: bool) -> None:
    assert pkce.is_verifier(verifier) is valid


def test_challenge_is_required_for_clients_without_a_secret() -> None:
    with pytest.raises(InvalidRequest, match="Missing 'code_challenge'"):
        pkce.read_challenge({}, PUBLIC)


def test_challenge_is_required_when_the_client_asks_for_pkce() -> None:
    with pytest.raises(InvalidRequest, match="Missing 'code_challenge'"):
        pkce.read_challenge({}, CONFIDENTIAL_WITH_PKCE)


def test_confidential_client_may_go_without_pkce() -> None:
    assert pkce.read_challenge({}, CONFIDENTIAL) is None


def test_method_defaults_to_plain() -> None:
    assert pkce.read_challenge({"code_challenge": CODE_VERIFIER}, PUBLIC) == CodeChallenge(
        CODE_VERIFIER, "plain"
    )


def test_s256_challenge_is_read() -> None:
    params = {"code_challenge": CODE_CHALLENGE, "code_challenge_method": "S256"}
    assert pkce.read_challenge(params, PUBLIC) == CodeChallenge(CODE_CHALLENGE, "S256")


def test_unknown_method_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="Unsupported 'code_challenge_method'"):
        pkce.read_challenge({"code_challenge": CODE_CHALLENGE, "code_challenge_method": "S512"}, PUBLIC)


def test_method_without_challenge_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="'code_challenge_method' given without 'code_challenge'"):
        pkce.read_challenge({"code_challenge_method": "S256"}, CONFIDENTIAL)


def test_malformed_challenge_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="Invalid 'code_challenge'"):
        pkce.read_challenge({"code_challenge": "too-short", "code_challenge_method": "S256"}, PUBLIC)


def test_verify_accepts_the_right_verifier() -> None:
    pkce.verify(CodeChallenge(CODE_CHALLENGE, "S256"), CODE_VERIFIER)


def test_verify_refuses_a_missing_verifier() -> None:
    with pytest.raises(InvalidRequest, match="Missing 'code_verifier'"):
        pkce.verify(CodeChallenge(CODE_CHALLENGE, "S256"), None)


def test_verify_refuses_a_malformed_verifier() -> None:
    with pytest.raises(InvalidRequest, match="Invalid 'code_verifier'"):
        pkce.verify(CodeChallenge(CODE_CHALLENGE, "S256"), CODE_VERIFIER[:42])


def test_verify_refuses_the_wrong_verifier_as_invalid_grant() -> None:
    with pytest.raises(InvalidGrant, match="'code_verifier' does not match"):
        pkce.verify(CodeChallenge(CODE_CHALLENGE, "S256"), "x" * 43)


def test_verify_refuses_the_challenge_in_place_of_the_verifier() -> None:
    with pytest.raises(InvalidGrant):
        pkce.verify(CodeChallenge(CODE_CHALLENGE, "S256"), CODE_CHALLENGE)


def test_verifier_without_a_challenge_is_a_downgrade_and_refused() -> None:
    with pytest.raises(InvalidRequest, match="had no code_challenge"):
        pkce.verify(None, CODE_VERIFIER)


def test_no_challenge_and_no_verifier_passes() -> None:
    pkce.verify(None, None)
