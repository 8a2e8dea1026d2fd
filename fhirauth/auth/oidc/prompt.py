"""prompt and max_age (Core §3.1.2.1): when /auth/authorize must have the user sign in again, and the
request that resumes once they have."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from fhirauth.auth.oauth_errors import InvalidRequest

NONE = "none"
LOGIN = "login"
CONSENT = "consent"
SUPPORTED = (NONE, LOGIN, CONSENT)
MAX_AGE_LIMIT = 9_999_999_999
_ANSWERED_BY_SIGN_IN = ("max_age", "id_token_hint")


def read_prompt(value: str | None) -> frozenset[str]:
    """The prompt values; InvalidRequest for one this server does not support (select_account: one
    browser holds one sign-in, so there is no account to choose) or for none with any other."""
    if not value:
        return frozenset()
    values = value.split(" ")
    for item in values:
        if item not in SUPPORTED:
            raise InvalidRequest(f"Unsupported 'prompt' value '{item}'; use none, login or consent")
    if NONE in values and len(values) > 1:
        raise InvalidRequest("'prompt=none' cannot be combined with other values")
    return frozenset(values)


def read_max_age(value: str | None) -> int | None:
    if not value:
        return None
    if not value.isascii() or not value.isdigit() or int(value) > MAX_AGE_LIMIT:
        raise InvalidRequest(f"'max_age' must be a whole number of seconds from 0 to {MAX_AGE_LIMIT}")
    return int(value)


def too_old(max_age: int | None, auth_time: int, now: int) -> bool:
    """Whether a sign-in at `auth_time` is too old for `max_age`; max_age=0 always is (Core §3.1.2.1:
    it equals prompt=login)."""
    if max_age is None:
        return False
    return max_age == 0 or now - auth_time > max_age


def asks_for_sign_in(query: str) -> bool:
    """Whether an authorization request asks for the user to sign in now (prompt=login, or a
    max_age, which sent it to the login page): a trusted device does not answer it."""
    pairs = parse_qsl(query, keep_blank_values=True)
    return any(name == "max_age" or (name == "prompt" and LOGIN in value.split(" ")) for name, value in pairs)


def after_sign_in(query: str) -> str:
    """The authorization request to resume after the user has just signed in.

    That sign-in answers its prompt=login, max_age and id_token_hint, so they go: kept, a sign-in
    slower than max_age (or max_age=0 at all) would send the user back to the login page over and over,
    and so would a hint of another user than the one who chose to sign in. The ID token still says
    when it happened (auth_time) and who it is about (sub).
    """
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(
        name in _ANSWERED_BY_SIGN_IN or (name == "prompt" and LOGIN in value.split(" "))
        for name, value in pairs
    ):
        return query
    kept: list[tuple[str, str]] = []
    for name, value in pairs:
        if name in _ANSWERED_BY_SIGN_IN:
            continue
        if name == "prompt":
            value = " ".join(item for item in value.split(" ") if item != LOGIN)
            if not value:
                continue
        kept.append((name, value))
    return urlencode(kept)
