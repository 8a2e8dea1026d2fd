"""The scope check, in one place (RFC 6749 §3.3).

Scopes are recorded on the Session and reported by introspection. What they allow is for
AccessPolicies to decide, bounded by the token's SMART resource scopes (fhirauth/auth/smart/).
A client that lists `scope` (Aidbox's Client.scope[]) may ask only for those, or for SMART resource
scopes a listed one covers (`patient/*.rs` covers `patient/User.r`); a client without the list may
ask for any well-formed scope. A scope the client may not have refuses the request (invalid_scope)
rather than being dropped: an app that gets less than it asked for without being told fails later,
at a resource request, where the cause is harder to see.
"""

from __future__ import annotations

import re
from typing import Any

from fhirauth.auth.flows import CLIENT_CREDENTIALS
from fhirauth.auth.oauth_errors import InvalidScope
from fhirauth.auth.smart import scopes as smart

Document = dict[str, Any]

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), separated by single spaces.
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+(?: [\x21\x23-\x5b\x5d-\x7e]+)*")
MAX_SCOPE_CHARS = 2048


def _parse(scope: str) -> list[str]:
    if len(scope) > MAX_SCOPE_CHARS or _SCOPE.fullmatch(scope) is None:
        raise InvalidScope("Malformed 'scope': space-separated tokens of printable ASCII")
    return list(dict.fromkeys(scope.split(" ")))


def requested(scope: str | None, client: Document, flow: str) -> str | None:
    """The scope a client asks for in `flow`, normalised; InvalidScope when malformed, not allowed to
    the client, or of a SMART context the flow cannot have (system/ is the client's own, patient/ and
    user/ need a user)."""
    if not scope:
        return None
    tokens = _parse(scope)
    for token in tokens:
        resource = smart.resource_scope(token)
        if resource is None:
            continue
        if flow == CLIENT_CREDENTIALS and resource.context != smart.SYSTEM:
            raise InvalidScope(
                f"Scope '{token}' needs a user; a client_credentials token may have system/ scopes"
            )
        if flow != CLIENT_CREDENTIALS and resource.context == smart.SYSTEM:
            raise InvalidScope(
                f"Scope '{token}' is for client_credentials tokens; ask for patient/ or user/ scopes"
            )
    allowed = client.get("scope")
    if isinstance(allowed, list):
        refused = [token for token in tokens if not smart.covered(token, allowed)]
        if refused:
            raise InvalidScope(f"Scope '{refused[0]}' is not allowed for this client")
    return " ".join(tokens)


def narrowed(scope: str | None, granted: str | None) -> str | None:
    """RFC 6749 §6: a refresh may ask for the granted scope or less, never more."""
    if not scope:
        return granted
    tokens = _parse(scope)
    have = granted.split(" ") if granted else []
    refused = [token for token in tokens if not smart.covered(token, have)]
    if refused:
        raise InvalidScope(f"Scope '{refused[0]}' was not granted")
    return " ".join(tokens)
