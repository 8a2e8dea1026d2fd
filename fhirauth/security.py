"""Random tokens, their stored hashes, and the one constant-time comparison everything calls."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

# An issued token: the millisecond it was made (12 hex digits), a dot, 256 random bits (43 characters).
# Neither a JWT (two dots) nor an earlier token (no dot) has this shape.
_ISSUED = re.compile(r"[0-9a-f]{12}\.[A-Za-z0-9_-]{43}")
_ISSUED_CHARS = 56
_TIME_CHARS = 13


def random_token(nbytes: int = 32) -> str:
    """A URL-safe random token carrying `nbytes` bytes of entropy."""
    return secrets.token_urlsafe(nbytes)


def issued_token() -> str:
    """A token that storage keeps as its hash (access, refresh and sign-in tokens, codes): 256 random
    bits after the millisecond it was made.

    The hash keeps that time in front (`token_hash`), so the hashes of successive tokens sort in the
    order they were made and the index of them grows at one end. A hash of random bits alone lands
    on a random page of a large index: each token issued dirtied a page of its own, which the commit
    and the checkpoint then wrote out (13 % of a client_credentials grant's CPU, bench/README.md).
    The time is not secret; the random part is as strong as `random_token()`'s.
    """
    return f"{time.time_ns() // 1_000_000:012x}.{secrets.token_urlsafe(32)}"


def token_hash(token: str) -> str:
    """What storage keeps instead of a bearer token: a leaked table then grants nothing.

    A plain SHA-256 suffices because the tokens are random with 256 bits of entropy; slow hashing
    is for low-entropy secrets like passwords. An `issued_token()` keeps its time in front; any other
    token (a JWT, one issued before that shape) is hashed alone.
    """
    digest = hashlib.sha256(token.encode()).hexdigest()
    if len(token) == _ISSUED_CHARS and token[_TIME_CHARS - 1] == "." and _ISSUED.fullmatch(token):
        return token[:_TIME_CHARS] + digest
    return digest


def secrets_equal(a: str, b: str) -> bool:
    """Compare two secrets without leaking through timing where they first differ."""
    return hmac.compare_digest(a.encode(), b.encode())
