"""Random tokens, their stored hashes, and the one constant-time comparison everything calls."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def random_token(nbytes: int = 32) -> str:
    """A URL-safe random token carrying `nbytes` bytes of entropy."""
    return secrets.token_urlsafe(nbytes)


def token_hash(token: str) -> str:
    """What storage keeps instead of a bearer token: a leaked table then grants nothing.

    A plain SHA-256 suffices because the tokens are random with 256 bits of entropy; slow hashing
    is for low-entropy secrets like passwords.
    """
    return hashlib.sha256(token.encode()).hexdigest()


def secrets_equal(a: str, b: str) -> bool:
    """Compare two secrets without leaking through timing where they first differ."""
    return hmac.compare_digest(a.encode(), b.encode())
