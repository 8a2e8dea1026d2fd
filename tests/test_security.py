from __future__ import annotations

import base64
import hashlib
import re
import time

from fhirauth.security import issued_token, random_token, secrets_equal, token_hash


def test_random_token_is_url_safe_and_sized() -> None:
    token = random_token()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    assert len(base64.urlsafe_b64decode(token + "=")) == 32
    assert len(random_token(16)) == 22
    assert len({random_token() for _ in range(100)}) == 100


def test_token_hash_is_sha256_hex() -> None:
    assert token_hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert token_hash("abc") == hashlib.sha256(b"abc").hexdigest()


def test_an_issued_token_is_its_millisecond_and_256_random_bits() -> None:
    before = time.time_ns() // 1_000_000
    token = issued_token()
    after = time.time_ns() // 1_000_000
    millisecond, dot, random_part = token.partition(".")
    assert dot == "." and re.fullmatch(r"[0-9a-f]{12}", millisecond)
    assert before <= int(millisecond, 16) <= after
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", random_part)
    assert len(base64.urlsafe_b64decode(random_part + "=")) == 32
    assert len({issued_token() for _ in range(100)}) == 100


def test_an_issued_tokens_hash_keeps_its_time_in_front() -> None:
    token = "0193a2b4c5d6.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    assert token_hash(token) == "0193a2b4c5d6." + hashlib.sha256(token.encode()).hexdigest()
    # Made in a later millisecond: its hash sorts after, whatever the random bits.
    later = "0193a2b4c5d7.-------------------------------------------"
    assert token_hash(later) > token_hash(token)
    first = issued_token()
    while issued_token()[:12] == first[:12]:
        pass
    assert token_hash(issued_token()) > token_hash(first)


def test_other_tokens_are_hashed_alone() -> None:
    for token in (
        random_token(),  # issued before tokens had a time
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl",  # a JWT
        "0193A2B4C5D6.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # not lower-case hex
        "0193a2b4c5d6.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # 42 random characters
        "0193a2b4c5d6.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.",  # a dot among them
        "0193a2b4c5d6.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
    ):
        assert token_hash(token) == hashlib.sha256(token.encode()).hexdigest()


def test_secrets_equal() -> None:
    assert secrets_equal("s3cret", "s3cret")
    assert not secrets_equal("s3cret", "s3creT")
    assert not secrets_equal("s3cret", "s3cret ")
    assert not secrets_equal("", "x")
    assert secrets_equal("ünïcode", "ünïcode")
    assert not secrets_equal("ünïcode", "unicode")
