"""How the user signed in: the methods (RFC 8176 `amr`), when each was last done, and the
authentication context class they reach (`acr`, Core §2).

The rule, in one place: a password is `pwd`; a TOTP code or a recovery code is `otp` (both are
one-time codes from something the user has; NIST SP 800-63B counts a look-up secret as a second
factor too); a passkey is `hwk` when it is bound to its device and `swk` when it may be synced
(its backup-eligible flag: the private key can leave the authenticator); two methods are `mfa`, and
so is a passkey that verified its user (a PIN or biometric on top of the key: NIST SP 800-63B
counts a multi-factor cryptographic authenticator as two factors), which is recorded as `mfa`
itself at the time of that passkey.

Two classes, ordered: `urn:fhirauth:acr:pwd` (a password) and `urn:fhirauth:acr:mfa` (a password
and a second factor). A stronger class meets a request for a weaker one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fhirauth.auth.oidc.claims import ClaimSource, IdTokenRequest

Document = dict[str, Any]

PASSWORD = "pwd"
OTP = "otp"
MFA = "mfa"
HWK = "hwk"
SWK = "swk"
# The order methods are listed in, whatever order they were done in.
_METHODS = (PASSWORD, OTP, HWK, SWK)
_RECORDED = (*_METHODS, MFA)

ACR_PASSWORD = "urn:fhirauth:acr:pwd"
ACR_MFA = "urn:fhirauth:acr:mfa"
# Weakest first: a class's index is its level.
ACR_VALUES = (ACR_PASSWORD, ACR_MFA)


@dataclass(frozen=True)
class SignInMethods:
    """The methods a sign-in was made with, each with when it was last done (epoch seconds)."""

    times: Mapping[str, int]

    @classmethod
    def password(cls, at: int) -> SignInMethods:
        return cls({PASSWORD: at})

    @classmethod
    def from_dict(cls, stored: object) -> SignInMethods | None:
        """The methods of a stored `amr_times`; None when there is none, or it is not one."""
        if not isinstance(stored, dict) or not stored:
            return None
        if not all(name in _RECORDED and type(at) is int for name, at in stored.items()):
            return None
        return cls(dict(stored))

    @classmethod
    def passkey(cls, key: str, at: int) -> SignInMethods:
        """A sign-in with a passkey alone, which verified its user (passwordless)."""
        return cls({key: at, MFA: at})

    def with_otp(self, at: int) -> SignInMethods:
        return SignInMethods({**self.times, OTP: at})

    def with_key(self, key: str, at: int) -> SignInMethods:
        """These methods and a passkey (`hwk` or `swk`) used at `at`."""
        return SignInMethods({**self.times, key: at})

    @property
    def amr(self) -> tuple[str, ...]:
        done = tuple(name for name in _METHODS if name in self.times)
        return (*done, MFA) if len(done) > 1 or MFA in self.times else done

    @property
    def auth_time(self) -> int:
        """Core §2: the time of the authentication, which is its latest step."""
        return max(self.times.values())

    def session_fields(self) -> Document:
        """What a browser Session stores of them."""
        return {"amr": list(self.amr), "amr_times": dict(self.times), "auth_time": self.auth_time}


def acr_of(amr: Sequence[str]) -> str:
    return ACR_MFA if MFA in amr else ACR_PASSWORD


def level(acr: str) -> int:
    return ACR_VALUES.index(acr)


def _amr_claims(request: IdTokenRequest) -> Document:
    authentication = request.authentication
    if not authentication.amr:
        return {}
    return {"amr": list(authentication.amr), "acr": authentication.acr or acr_of(authentication.amr)}


AMR_CLAIMS = ClaimSource(("amr", "acr"), _amr_claims)
