"""TOTP arithmetic (RFC 4226, RFC 6238) and the one acceptance-window rule. No I/O, no clock.

The caller passes the current step; `match_step` says which step in the window a code belongs to
and whether that step was already used, so the caller can record it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyotp

PERIOD = 30
DIGITS = 6

Digest = Callable[..., Any]

_WHITESPACE = re.compile(r"\s+")
_CODE = re.compile(f"[0-9]{{{DIGITS}}}")
_BASE32 = re.compile("[A-Z2-7]*")
# RFC 4648's Base32 alphabet onto the digits int() reads in base 32.
_AS_INT_DIGITS = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "0123456789abcdefghijklmnopqrstuv")


@dataclass(frozen=True)
class Match:
    """`step` is the accepted step (None when refused); `replayed` marks a code whose step is used up."""

    step: int | None
    replayed: bool = False

    @property
    def accepted(self) -> bool:
        return self.step is not None


NO_MATCH = Match(step=None)


def new_secret() -> str:
    """A Base32 secret of 160 bits (RFC 4226 §4 R6 recommends 160)."""
    return pyotp.random_base32()


def step_at(unix_time: float, period: int = PERIOD) -> int:
    return int(unix_time // period)


def code_at(secret_b32: str, step: int, digits: int = DIGITS, digest: Digest = hashlib.sha1) -> str:
    return _hotp(_key(secret_b32), step, digits, digest)


def _key(secret_b32: str) -> bytes:
    """The Base32 secret's bytes; like pyotp and Google Authenticator, case-insensitive with optional
    padding. Read as one base-32 integer, since base64.b32decode costs more than the HMACs of a window."""
    symbols = secret_b32.upper().rstrip("=")
    if not _BASE32.fullmatch(symbols):
        raise ValueError("The TOTP secret is not Base32")
    bits = 5 * len(symbols)
    value = int(symbols.translate(_AS_INT_DIGITS), 32) if symbols else 0
    # Bits beyond the last whole byte are padding (RFC 4648 §6).
    return (value >> bits % 8).to_bytes(bits // 8, "big")


def _hotp(key: bytes, counter: int, digits: int, digest: Digest = hashlib.sha1) -> str:
    """RFC 4226 §5.3. One-shot `hmac.digest` is OpenSSL's HMAC in one call: cheaper than copying an
    HMAC object set up once per window, whose copies and finalising run through Python."""
    mac = hmac.digest(key, counter.to_bytes(8, "big"), digest)
    offset = mac[-1] & 0x0F
    value = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def match_step(
    secret_b32: str,
    code: str,
    *,
    current_step: int,
    past: int,
    future: int,
    floor: int,
    digits: int = DIGITS,
) -> Match:
    """Match `code` against steps current_step - past … current_step + future.

    A step at or before `floor` (the last accepted step, -1 when none) is used up: RFC 6238 §5.2,
    NIST SP 800-63B §5.1.4.2, a code is accepted only once. When a code matches several steps, the
    newest one above the floor wins.
    """
    matched = matching_steps(
        secret_b32, code, current_step=current_step, past=past, future=future, digits=digits
    )
    return decide(matched, floor)


def matching_steps(
    secret_b32: str, code: str, *, current_step: int, past: int, future: int, digits: int = DIGITS
) -> tuple[int, ...]:
    """The steps of the window whose code is `code`, newest first: the costly half of `match_step`,
    for a caller that decides again against a floor that moved meanwhile."""
    if past < 0 or future < 0:
        raise ValueError("past and future must not be negative")
    pattern = _CODE if digits == DIGITS else re.compile(f"[0-9]{{{digits}}}")
    candidate = code
    if not pattern.fullmatch(candidate):
        candidate = _WHITESPACE.sub("", code)
        if not pattern.fullmatch(candidate):
            return ()
    key = _key(secret_b32)
    matched = []
    # Every step is compared, matched or not, so the time taken does not say where a code matched.
    for step in range(current_step + future, max(current_step - past, 0) - 1, -1):
        if hmac.compare_digest(candidate, _hotp(key, step, digits)):
            matched.append(step)
    return tuple(matched)


def decide(matched: tuple[int, ...], floor: int) -> Match:
    """The newest matched step above `floor`; a code whose steps are all at or below it is replayed."""
    fresh = [step for step in matched if step > floor]
    if fresh:
        return Match(step=fresh[0])
    return Match(step=None, replayed=bool(matched))
