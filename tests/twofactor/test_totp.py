from __future__ import annotations

import base64
import hashlib
import hmac
import random
import struct
import subprocess
from datetime import UTC, datetime

import pytest

from fhirauth.twofactor.totp import Match, code_at, match_step, new_secret, step_at

# RFC 6238 Appendix A seeds: the SHA-256 and SHA-512 rows only reproduce with these longer seeds
# (errata 2866), not with the 20-byte one the prose names.
SEEDS = {
    "SHA1": (b"12345678901234567890", hashlib.sha1),
    "SHA256": (b"12345678901234567890123456789012", hashlib.sha256),
    "SHA512": (b"1234567890123456789012345678901234567890123456789012345678901234", hashlib.sha512),
}

# RFC 6238 Appendix B, verbatim: (time, TOTP, mode).
RFC6238_VECTORS = [
    (59, "94287082", "SHA1"),
    (59, "46119246", "SHA256"),
    (59, "90693936", "SHA512"),
    (1111111109, "07081804", "SHA1"),
    (1111111109, "68084774", "SHA256"),
    (1111111109, "25091201", "SHA512"),
    (1111111111, "14050471", "SHA1"),
    (1111111111, "67062674", "SHA256"),
    (1111111111, "99943326", "SHA512"),
    (1234567890, "89005924", "SHA1"),
    (1234567890, "91819424", "SHA256"),
    (1234567890, "93441116", "SHA512"),
    (2000000000, "69279037", "SHA1"),
    (2000000000, "90698825", "SHA256"),
    (2000000000, "38618901", "SHA512"),
    (20000000000, "65353130", "SHA1"),
    (20000000000, "77737706", "SHA256"),
    (20000000000, "47863826", "SHA512"),
]

# RFC 4226 Appendix D: HOTP values for counts 0..9.
RFC4226_VALUES = [
    "755224",
    "287082",
    "359152",
    "969429",
    "338314",
    "254676",
    "287922",
    "162583",
    "399871",
    "520489",
]

RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()


@pytest.mark.parametrize(
    ("unix_time", "expected", "mode"),
    RFC6238_VECTORS,
    ids=[f"{mode}-T{unix_time}" for unix_time, _, mode in RFC6238_VECTORS],
)
def test_rfc6238_appendix_b(unix_time: int, expected: str, mode: str) -> None:
    seed, digest = SEEDS[mode]
    secret = base64.b32encode(seed).decode()
    assert code_at(secret, step_at(unix_time), digits=8, digest=digest) == expected


@pytest.mark.parametrize(("count", "expected"), list(enumerate(RFC4226_VALUES)), ids=lambda v: str(v))
def test_rfc4226_appendix_d(count: int, expected: str) -> None:
    assert code_at(RFC_SECRET, count) == expected


def test_step_at_counts_whole_periods() -> None:
    assert [step_at(t) for t in (0, 29.999, 30, 59, 60)] == [0, 0, 1, 1, 2]
    assert step_at(20000000000) == 0x27BC86AA
    assert step_at(100, period=60) == 1


def test_new_secret_is_160_bits_of_base32() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    assert all(len(base64.b32decode(secret)) == 20 for secret in secrets)


def test_agrees_with_oathtool() -> None:
    rng = random.Random(6238)
    for _ in range(20):
        secret = base64.b32encode(rng.randbytes(20)).decode()
        unix_time = rng.randrange(0, 4_102_444_800)
        moment = datetime.fromtimestamp(unix_time, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        oathtool = subprocess.run(
            ["oathtool", "--totp", "-b", secret, "-N", moment],
            capture_output=True,
            text=True,
            check=True,
        )
        assert code_at(secret, step_at(unix_time)) == oathtool.stdout.strip(), (secret, moment)


SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
NOW_STEP = step_at(1_767_225_600)


@pytest.mark.parametrize(("past", "future"), [(0, 0), (1, 0), (1, 1), (2, 1), (5, 0)])
def test_window_walk(past: int, future: int) -> None:
    offsets = range(-past - 1, 3)
    accepted = [
        match_step(
            SECRET,
            code_at(SECRET, NOW_STEP + offset),
            current_step=NOW_STEP,
            past=past,
            future=future,
            floor=-1,
        ).step
        for offset in offsets
    ]
    assert accepted == [NOW_STEP + offset if -past <= offset <= future else None for offset in offsets]


def test_floor_refuses_at_or_before_as_replayed() -> None:
    def match(offset: int, floor: int) -> Match:
        code = code_at(SECRET, NOW_STEP + offset)
        return match_step(SECRET, code, current_step=NOW_STEP, past=2, future=1, floor=floor)

    assert match(0, floor=NOW_STEP) == Match(step=None, replayed=True)
    assert match(-1, floor=NOW_STEP - 1) == Match(step=None, replayed=True)
    assert match(-2, floor=NOW_STEP - 1) == Match(step=None, replayed=True)
    assert match(0, floor=NOW_STEP - 1) == Match(step=NOW_STEP)
    assert match(1, floor=NOW_STEP) == Match(step=NOW_STEP + 1)
    # Outside the window is a plain miss, even below the floor.
    assert match(-3, floor=NOW_STEP) == Match(step=None, replayed=False)


def test_spaces_are_ignored() -> None:
    code = code_at(SECRET, NOW_STEP)
    for typed in (f"{code[:3]} {code[3:]}", f" {code} ", f"{code}\n"):
        assert match_step(SECRET, typed, current_step=NOW_STEP, past=0, future=0, floor=-1).step == NOW_STEP


def test_bad_input_is_refused() -> None:
    code = code_at(SECRET, NOW_STEP)
    arabic_indic = "".join(chr(0x0660 + int(digit)) for digit in code)
    for typed in (
        "",
        "abcdef",
        code[:5],
        code + "0",
        "0" + code,
        code[:5] + "x",
        arabic_indic,
        "-" + code[1:],
    ):
        assert match_step(SECRET, typed, current_step=NOW_STEP, past=1, future=1, floor=-1) == Match(
            step=None
        )


def test_steps_before_the_epoch_are_not_candidates() -> None:
    assert match_step(SECRET, code_at(SECRET, 0), current_step=0, past=3, future=0, floor=-1).step == 0


def test_negative_window_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        match_step(SECRET, "123456", current_step=NOW_STEP, past=-1, future=0, floor=-1)


def test_secrets_of_any_length_and_case_decode_as_base64_does() -> None:
    def rfc4226(key: bytes, counter: int) -> str:
        mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
        offset = mac[19] & 0x0F
        return f"{(struct.unpack('>I', mac[offset : offset + 4])[0] & 0x7FFFFFFF) % 1_000_000:06d}"

    rng = random.Random(4648)
    for size in range(10, 41):
        key = rng.randbytes(size)
        encoded = base64.b32encode(key).decode()
        for secret in (encoded, encoded.rstrip("="), encoded.lower()):
            step = rng.randrange(0, 2**31)
            assert code_at(secret, step) == rfc4226(key, step), secret


def test_a_secret_that_is_not_base32_is_refused() -> None:
    for secret in ("JBSWY3DPEHPK3PX1", "JBSWY3DP EHPK3PXP", "JBSW=Y3DPEHPK3PXP", "JBSWY3DPEHPK3PX_"):
        with pytest.raises(ValueError):
            code_at(secret, 1)
