"""Encryption at rest for small secrets (TOTP keys), and keys derived for other purposes.

A sealed value reads `fa1:<kid>:<base64url(nonce || ciphertext)>`: AES-256-GCM under a key that
HKDF-SHA256 derives from a master secret, with the caller's associated data (the user id) bound in so
that a ciphertext copied onto another user does not open. The key id is derived from the master
secret too, so several master secrets can be configured at once and `fhirauth secrets rotate` can
re-seal everything under the first while the others still open what they sealed.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_FORMAT = "fa1"
_NONCE_BYTES = 12
_MIN_MASTER_SECRET_CHARS = 16
_SEALED = re.compile(r"fa1:[A-Za-z0-9_-]{11}:[A-Za-z0-9_-]+")


class SecretBoxError(Exception):
    """A sealed value does not open: unknown key id, wrong associated data, or tampering."""


def is_encrypted(value: str) -> bool:
    """Whether `value` is in the sealed form (a Base32 TOTP secret never is: no colons, no lowercase)."""
    return _SEALED.fullmatch(value) is not None


def _hkdf(master_secret: str, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(master_secret.encode())


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# The URL-safe alphabet onto the standard one, and the standard one's own "+", "/" and "=" onto a
# character no alphabet has: a sealed value is unpadded URL-safe Base64, and nothing else opens.
_FROM_URLSAFE = bytes.maketrans(b"-_+/=", b"+/***")


def _b64decode(text: str) -> bytes:
    """Strict: a character outside the alphabet is an error, not skipped (as base64's decoders do)."""
    data = text.encode("ascii").translate(_FROM_URLSAFE)
    return binascii.a2b_base64(data + b"=" * (-len(data) % 4), strict_mode=True)


class _Key:
    def __init__(self, master_secret: str) -> None:
        # Distinct HKDF labels make the key id, the AES key and every derived key independent:
        # the key id can be printed without revealing anything about the AES key.
        self.kid = _b64encode(_hkdf(master_secret, b"fhirauth secretbox key id", 8))
        self.aead = AESGCM(_hkdf(master_secret, b"fhirauth secretbox aes-256-gcm"))


class SecretBox:
    def __init__(self, master_secrets: Sequence[str]) -> None:
        if not master_secrets:
            raise ValueError("SecretBox needs at least one master secret")
        for master_secret in master_secrets:
            if len(master_secret) < _MIN_MASTER_SECRET_CHARS:
                raise ValueError(f"Master secrets must be at least {_MIN_MASTER_SECRET_CHARS} characters")
        self._master_secrets = tuple(master_secrets)
        keys = [_Key(secret) for secret in master_secrets]
        self._primary = keys[0]
        self._keys = {key.kid: key for key in reversed(keys)}

    is_encrypted = staticmethod(is_encrypted)

    @property
    def primary_kid(self) -> str:
        return self._primary.kid

    def encrypt(self, plaintext: str, aad: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._primary.aead.encrypt(nonce, plaintext.encode(), aad.encode())
        return f"{_FORMAT}:{self._primary.kid}:{_b64encode(nonce + sealed)}"

    def decrypt(self, value: str, aad: str) -> str:
        # Taken apart rather than matched against the sealed form's pattern first, which cost as much
        # as the decryption: a value not sealed here fails below all the same (no such key id, not
        # Base64, or it does not open).
        parts = value.split(":")
        if len(parts) != 3 or parts[0] != _FORMAT:
            raise SecretBoxError("Not a sealed value")
        _, kid, payload = parts
        key = self._keys.get(kid)
        if key is None:
            raise SecretBoxError(f"No master secret with key id {kid!r} is configured")
        try:
            data = _b64decode(payload)
            plaintext = key.aead.decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], aad.encode())
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise SecretBoxError("Sealed value does not open (tampered, or sealed for someone else)") from exc
        return plaintext.decode()

    def needs_rotation(self, value: str) -> bool:
        """Whether `value` was sealed under a master secret other than the first."""
        return not value.startswith(f"{_FORMAT}:{self._primary.kid}:")

    def rotate(self, value: str, aad: str) -> str:
        """Re-seal `value` under the first master secret."""
        return self.encrypt(self.decrypt(value, aad), aad)

    def derive_key(self, purpose: str, length: int = 32) -> bytes:
        """A key for another keyed use (CSRF fields), one per purpose, from the first master secret."""
        return self.derived_keys(purpose, length)[0]

    def derived_keys(self, purpose: str, length: int = 32) -> list[bytes]:
        """The key for `purpose` from every master secret, the first master secret's first.

        What was keyed under a previous master secret still checks during a rotation: make with the
        first, accept any.
        """
        info = b"fhirauth derived key: " + purpose.encode()
        return [_hkdf(secret, info, length) for secret in self._master_secrets]
