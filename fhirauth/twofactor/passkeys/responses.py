"""The browser's answers (`PublicKeyCredential.toJSON()`), read before the library checks them: the
challenge a response signed, the credential it names, the user handle of a discoverable sign-in."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from fhirauth.security import secrets_equal
from fhirauth.twofactor.passkeys.errors import passkey_refused

Document = dict[str, Any]

# A credential response is a few hundred bytes; attestation certificates make a few kilobytes.
MAX_CREDENTIAL_CHARS = 64 * 1024


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def credential_json(credential: object) -> Document:
    """The credential JSON as an object (it may come as a string, from a form field)."""
    if isinstance(credential, str):
        if len(credential) > MAX_CREDENTIAL_CHARS:
            raise passkey_refused()
        try:
            credential = orjson.loads(credential)
        except orjson.JSONDecodeError:
            raise passkey_refused() from None
    if not isinstance(credential, dict):
        raise passkey_refused()
    return credential


def challenge_of(credential: Document) -> str:
    """The challenge the response signed, read from its clientDataJSON; the library checks the rest."""
    response = credential.get("response")
    client_data = response.get("clientDataJSON") if isinstance(response, dict) else None
    if not isinstance(client_data, str) or len(client_data) > MAX_CREDENTIAL_CHARS:
        raise passkey_refused()
    try:
        parsed = orjson.loads(unb64url(client_data))
    except (binascii.Error, ValueError):
        raise passkey_refused() from None
    challenge = parsed.get("challenge") if isinstance(parsed, dict) else None
    if not isinstance(challenge, str) or not challenge:
        raise passkey_refused()
    return challenge


def raw_id(credential: Document) -> bytes:
    raw = credential.get("rawId")
    if not isinstance(raw, str) or not raw or len(raw) > 2048:
        raise passkey_refused()
    try:
        return unb64url(raw)
    except (binascii.Error, ValueError):
        raise passkey_refused() from None


def same_user_handle(credential: Document, stored: Document) -> bool:
    """Reference §6.3: for a discoverable sign-in the library does not compare the user handle."""
    response = credential.get("response")
    handle = response.get("userHandle") if isinstance(response, dict) else None
    return isinstance(handle, str) and secrets_equal(handle.rstrip("="), str(stored.get("userHandle", "")))
