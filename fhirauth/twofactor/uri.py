"""The otpauth:// provisioning URI (Google Authenticator Key URI format) that the QR code carries."""

from __future__ import annotations

from urllib.parse import quote


def _encode(text: str) -> str:
    # RFC 3986 percent-encoding of everything but the unreserved characters: a space becomes %20
    # (several authenticator apps show a literal "+"), and a ":" inside the issuer or the account
    # becomes %3A so that the only literal colon in the label is the issuer separator.
    return quote(text, safe="")


def provisioning_uri(secret_b32: str, account: str, issuer: str) -> str:
    """`otpauth://totp/{Issuer}:{account}?secret=…&issuer=…`.

    No algorithm, digits or period parameters: SHA-1, 6 digits and 30 s are the defaults, and some
    apps ignore (or mishandle) the parameters anyway.
    """
    if not account:
        raise ValueError("The account name must not be empty")
    if not issuer:
        raise ValueError("The issuer must not be empty")
    issuer_encoded = _encode(issuer)
    return f"otpauth://totp/{issuer_encoded}:{_encode(account)}?secret={_encode(secret_b32)}&issuer={issuer_encoded}"
