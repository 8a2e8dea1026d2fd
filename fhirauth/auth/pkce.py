"""PKCE (RFC 7636): the challenge sent to /auth/authorize, checked against the verifier at /auth/token."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fhirauth.auth.flows import AUTHORIZATION_CODE, flow_settings
from fhirauth.auth.oauth_errors import InvalidGrant, InvalidRequest
from fhirauth.security import secrets_equal

Document = dict[str, Any]

METHODS = ("S256", "plain")
# RFC 7636 §4.1 (verifier) and §4.2 (an S256 challenge is 43 characters; plain equals a verifier).
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def is_verifier(value: str) -> bool:
    return _VERIFIER.fullmatch(value) is not None


def required_for(client: Document) -> bool:
    """PKCE is required when the client asks for it, and always for clients without a secret (RFC 9700 §2.1.1)."""
    return flow_settings(client, AUTHORIZATION_CODE).get("pkce") is True or not isinstance(
        client.get("secret"), str
    )


@dataclass(frozen=True)
class CodeChallenge:
    challenge: str
    method: str

    def matches(self, verifier: str) -> bool:
        expected = s256(verifier) if self.method == "S256" else verifier
        return secrets_equal(expected, self.challenge)

    def as_dict(self) -> dict[str, str]:
        return {"code_challenge": self.challenge, "code_challenge_method": self.method}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> CodeChallenge | None:
        challenge = doc.get("code_challenge")
        if not isinstance(challenge, str):
            return None
        return cls(challenge, str(doc.get("code_challenge_method", "plain")))


def read_challenge(params: Mapping[str, str], client: Document) -> CodeChallenge | None:
    """The challenge of an authorization request, or None when the client may go without one."""
    challenge = params.get("code_challenge")
    method = params.get("code_challenge_method")
    if not challenge:
        if method:
            raise InvalidRequest("'code_challenge_method' given without 'code_challenge'")
        if required_for(client):
            raise InvalidRequest("Missing 'code_challenge': this client must use PKCE")
        return None
    method = method or "plain"  # RFC 7636 §4.3
    if method not in METHODS:
        raise InvalidRequest("Unsupported 'code_challenge_method'; use S256 or plain")
    if not is_verifier(challenge):
        raise InvalidRequest("Invalid 'code_challenge'")
    return CodeChallenge(challenge, method)


def verify(challenge: CodeChallenge | None, verifier: str | None) -> None:
    """Check the token request's `code_verifier` against the challenge stored with the code."""
    if challenge is None:
        # RFC 9700 §2.1.1: a verifier without a challenge is a downgrade attempt.
        if verifier:
            raise InvalidRequest("'code_verifier' given, but the authorization request had no code_challenge")
        return
    if not verifier:
        raise InvalidRequest("Missing 'code_verifier'")
    if not is_verifier(verifier):
        raise InvalidRequest("Invalid 'code_verifier': 43 to 128 characters of A-Z a-z 0-9 - . _ ~")
    if not challenge.matches(verifier):
        raise InvalidGrant("'code_verifier' does not match the code challenge")
