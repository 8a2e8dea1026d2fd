from __future__ import annotations

import base64
import hashlib
import re

from fhirauth.security import random_token, secrets_equal, token_hash


def test_random_token_is_url_safe_and_sized() -> None:
    token = random_token()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    assert len(base64.urlsafe_b64decode(token + "=")) == 32
    assert len(random_token(16)) == 22
    assert len({random_token() for _ in range(100)}) == 100


def test_token_hash_is_sha256_hex() -> None:
    assert token_hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert token_hash("abc") == hashlib.sha256(b"abc").hexdigest()


def test_secrets_equal() -> None:
    assert secrets_equal("s3cret", "s3cret")
    assert not secrets_equal("s3cret", "s3creT")
    assert not secrets_equal("s3cret", "s3cret ")
    assert not secrets_equal("", "x")
    assert secrets_equal("ünïcode", "ünïcode")
    assert not secrets_equal("ünïcode", "unicode")
