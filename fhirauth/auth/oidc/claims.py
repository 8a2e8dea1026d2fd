"""What an ID token says (Core §2), built in one place: the identity claims every ID token has, then
one claim source after another. A new claim (amr, acr, fhirUser, ...) is a source attached with
`IdTokens.add_source`; the sources also tell discovery which claims exist (claims_supported).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Document = dict[str, Any]

IDENTITY_CLAIMS = ("iss", "sub", "aud", "exp", "iat")
# Core §3.1.3.6, §3.3.2.11: hashes of the access token and code the ID token travels with, made with
# the hash of its own signature's algorithm (IdTokens asks the signing key for them).
HASH_CLAIMS = ("at_hash", "c_hash")


@dataclass(frozen=True)
class Authentication:
    """The sign-in an ID token speaks of: when it happened (auth_time), the browser Session it made
    (sid), the nonce of the one authorization request it answers (never carried to a refresh), and
    how the user signed in (amr, and the acr answered for it; fhirauth/auth/oidc/amr.py)."""

    auth_time: int
    sid: str
    nonce: str | None = None
    amr: tuple[str, ...] = ()
    acr: str | None = None

    def as_dict(self) -> Document:
        stored: Document = {"auth_time": self.auth_time, "sid": self.sid}
        if self.nonce is not None:
            stored["nonce"] = self.nonce
        if self.amr:
            stored["amr"] = list(self.amr)
        if self.acr is not None:
            stored["acr"] = self.acr
        return stored

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> Authentication:
        return cls(
            stored["auth_time"],
            stored["sid"],
            stored.get("nonce"),
            tuple(stored.get("amr", ())),
            stored.get("acr"),
        )


@dataclass(frozen=True)
class IdTokenRequest:
    """Everything an ID token is made from: who it is about, for which client, which sign-in, how long
    it lives, and the code and access token it travels with (hashed into it)."""

    client: Document
    user: Document
    authentication: Authentication
    lifetime: int
    access_token: str | None = None
    code: str | None = None
    # The granted scope: claims asked for by scope (SMART's fhirUser) come only with theirs.
    scope: str | None = None


@dataclass(frozen=True)
class ClaimSource:
    """Claims an ID token gets from its request; `names` are all the claims `claims` may return."""

    names: tuple[str, ...]
    claims: Callable[[IdTokenRequest], Document]


def _sign_in(request: IdTokenRequest) -> Document:
    authentication = request.authentication
    claims: Document = {"auth_time": authentication.auth_time, "sid": authentication.sid}
    # Core §3.1.2.1: the nonce passes through unmodified, and only when the request had one.
    if authentication.nonce is not None:
        claims["nonce"] = authentication.nonce
    return claims


SIGN_IN = ClaimSource(("auth_time", "sid", "nonce"), _sign_in)
