"""A refused passkey ceremony, in the two-factor operations' wire shape."""

from __future__ import annotations

from fhirauth.twofactor.service import TwoFactorError


class PasskeyError(TwoFactorError):
    """A refused ceremony, in the two-factor operations' wire shape (422 `{error, error_description}`)."""


def challenge_invalid() -> PasskeyError:
    return PasskeyError("challenge_invalid", "The passkey request is unknown, used or expired; start again")


def passkey_refused() -> PasskeyError:
    return PasskeyError("passkey_refused", "The passkey's response could not be verified")


def unknown_passkey() -> PasskeyError:
    return PasskeyError("unknown_passkey", "This passkey is not registered for this account")


def counter_rollback() -> PasskeyError:
    return PasskeyError(
        "passkey_refused", "The passkey's signature counter went backwards; it may have been copied"
    )


def already_registered() -> PasskeyError:
    return PasskeyError("already_registered", "This passkey is already registered")


def too_many(limit: int) -> PasskeyError:
    return PasskeyError("too_many_passkeys", f"At most {limit} passkeys per account")
