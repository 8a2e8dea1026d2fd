"""The scope check, in one place (RFC 6749 §3.3).

Scopes are recorded on the Session and reported by introspection; what they allow is for
AccessPolicies to decide. A client that lists `scope` (Aidbox's Client.scope[]) may ask only for
those; a client without the list may ask for any well-formed scope.
"""

from __future__ import annotations

import re
from typing import Any

from fhirauth.auth.oauth_errors import InvalidScope

Document = dict[str, Any]

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), separated by single spaces.
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+(?: [\x21\x23-\x5b\x5d-\x7e]+)*")
MAX_SCOPE_CHARS = 2048


def _parse(scope: str) -> list[str]:
    if len(scope) > MAX_SCOPE_CHARS or _SCOPE.fullmatch(scope) is None:
        raise InvalidScope("Malformed 'scope': space-separated tokens of printable ASCII")
    return list(dict.fromkeys(scope.split(" ")))


def requested(scope: str | None, client: Document) -> str | None:
    """The scope a client asks for, normalised; InvalidScope when malformed or not allowed to it."""
    if not scope:
        return None
    tokens = _parse(scope)
    allowed = client.get("scope")
    if isinstance(allowed, list):
        refused = [token for token in tokens if token not in allowed]
        if refused:
            raise InvalidScope(f"Scope '{refused[0]}' is not allowed for this client")
    return " ".join(tokens)


def narrowed(scope: str | None, granted: str | None) -> str | None:
    """RFC 6749 §6: a refresh may ask for the granted scope or less, never more."""
    if not scope:
        return granted
    tokens = _parse(scope)
    have = set(granted.split(" ")) if granted else set()
    refused = [token for token in tokens if token not in have]
    if refused:
        raise InvalidScope(f"Scope '{refused[0]}' was not granted")
    return " ".join(tokens)
