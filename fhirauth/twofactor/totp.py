"""TOTP arithmetic (RFC 4226, RFC 6238) and the one acceptance-window rule. No I/O, no clock.

The caller passes the current step; `match_step` says which step in the window a code belongs to
and whether that step was already used, so the caller can record it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyotp
from pyotp.utils import strings_equal

PERIOD = 30
DIGITS = 6

Digest = Callable[..., Any]

_WHITESPACE = re.compile(r"\s+")


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
    return pyotp.HOTP(secret_b32, digits=digits, digest=digest).at(step)


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
    if past < 0 or future < 0:
        raise ValueError("past and future must not be negative")
    candidate = _WHITESPACE.sub("", code)
    if not re.fullmatch(f"[0-9]{{{digits}}}", candidate):
        return NO_MATCH
    hotp = pyotp.HOTP(secret_b32, digits=digits)
    first = max(current_step - past, 0)
    # Every step is compared, matched or not, so the time taken does not say where a code matched.
    matched = [
        step
        for step in range(current_step + future, first - 1, -1)
        if strings_equal(candidate, hotp.at(step))
    ]
    fresh = [step for step in matched if step > floor]
    if fresh:
        return Match(step=fresh[0])
    return Match(step=None, replayed=bool(matched))
