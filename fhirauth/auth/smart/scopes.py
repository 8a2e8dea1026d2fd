"""SMART scopes (scopes-and-launch-context.md): the resource-scope grammar with v1 mapped onto v2,
what a granted set allows, and what each scope means in plain words.

`context/Type.permissions`: context is patient, user or system; Type a resource type or `*`;
permissions a non-empty in-order subset of `cruds`, or v1's read (= rs), write (= cud), * (= cruds).
A scope is kept as it was asked for (v1 stays v1 in the token response); only its meaning is mapped.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from fhirauth.auth.oauth_errors import InvalidScope

PATIENT, USER, SYSTEM = "patient", "user", "system"
LAUNCH, LAUNCH_PATIENT, LAUNCH_ENCOUNTER = "launch", "launch/patient", "launch/encounter"
FHIR_USER = "fhirUser"
# The permission letters and the interactions each allows.
CREATE, READ, UPDATE, DELETE, SEARCH = "c", "r", "u", "d", "s"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_CONTEXTED = re.compile(r"(patient|user|system)/(.*)", re.S)
_RESOURCE = re.compile(r"(\*|[A-Z][A-Za-z0-9]{0,63})\.(read|write|\*|c?r?u?d?s?)")

SUPPORTED = (
    LAUNCH,
    LAUNCH_PATIENT,
    LAUNCH_ENCOUNTER,
    FHIR_USER,
    "profile",
    "offline_access",
    "patient/*.rs",
    "patient/*.cruds",
    "user/*.rs",
    "user/*.cruds",
    "system/*.rs",
    "system/*.cruds",
    "patient/*.read",
    "user/*.read",
    "system/*.read",
)


@dataclass(frozen=True)
class ResourceScope:
    context: str
    resource_type: str
    permissions: frozenset[str]

    def covers(self, other: ResourceScope) -> bool:
        """Whether granting this grants everything `other` would (a client's list covers narrower asks)."""
        return (
            self.context == other.context
            and self.resource_type in ("*", other.resource_type)
            and other.permissions <= self.permissions
        )

    def allows(self, resource_type: str, permission: str) -> bool:
        return self.resource_type in ("*", resource_type) and permission in self.permissions


def _malformed(token: str) -> InvalidScope:
    return InvalidScope(
        f"Malformed SMART scope '{token}': context/Type.permissions, permissions in the order c r u d s"
    )


def resource_scope(token: str) -> ResourceScope | None:
    """The resource scope `token` is; None for a scope of another kind (openid, launch/patient, …).

    InvalidScope for a token in a SMART context that is not a scope SMART defines: SMART allows a
    server to refuse those, and never to reinterpret them.
    """
    contexted = _CONTEXTED.fullmatch(token)
    if contexted is None:
        return None
    context, rest = contexted.groups()
    if "?" in rest:
        raise InvalidScope(f"Scope '{token}': search-parameter constraints are not supported")
    match = _RESOURCE.fullmatch(rest)
    if match is None or not match.group(2):
        raise _malformed(token)
    resource_type, permissions = match.groups()
    return ResourceScope(context, resource_type, frozenset(_V1.get(permissions, permissions)))


def _lenient(token: str) -> ResourceScope | None:
    """The resource scope of a token read back from storage or a Client's list: malformed ones never
    grant anything, and never fail a request that does not ask for them."""
    try:
        return resource_scope(token)
    except InvalidScope:
        return None


def is_smart(token: str) -> bool:
    """Whether asking for `token` makes the request a SMART one (aud and S256 required)."""
    return token == LAUNCH or token.startswith("launch/") or _CONTEXTED.fullmatch(token) is not None


def covered(token: str, allowed: Iterable[object]) -> bool:
    """Whether a list of scopes (a Client's, or a grant's) allows asking for `token`."""
    listed = [item for item in allowed if isinstance(item, str)]
    if token in listed:
        return True
    wanted = _lenient(token)
    if wanted is None:
        return False
    return any(have is not None and have.covers(wanted) for have in map(_lenient, listed))


@dataclass(frozen=True)
class Granted:
    """A token's scope read for enforcement: its resource scopes, and every scope it holds."""

    resources: tuple[ResourceScope, ...]
    names: frozenset[str]

    @property
    def restricts(self) -> bool:
        """Only tokens with resource scopes are bound by them; others are as AccessPolicies allow."""
        return bool(self.resources)

    def needs_patient(self) -> bool:
        return any(scope.context == PATIENT for scope in self.resources)


# Tokens repeat a few scope strings; parsing one on every request would cost more than the check.
@functools.lru_cache(maxsize=1024)
def _granted(scope: str) -> Granted:
    names = frozenset(scope.split())
    resources = tuple(parsed for parsed in map(_lenient, sorted(names)) if parsed is not None)
    return Granted(resources, names)


def granted(scope: object) -> Granted:
    """What a Session's `scope` grants: a space-separated string, or a list (Aidbox's Session.scope[])."""
    if isinstance(scope, list):
        scope = " ".join(item for item in scope if isinstance(item, str))
    return _granted(scope if isinstance(scope, str) else "")


def declares_resource_scopes(listed: object) -> bool:
    """Whether a Client's `scope` list names a SMART resource scope: then its tokens are bound by
    the resource scopes they were granted, none granted or not."""
    if not isinstance(listed, list):
        return False
    return _declares(tuple(item for item in listed if isinstance(item, str)))


# Asked on every request of such a token; parsing the list each time would cost more than the check.
@functools.lru_cache(maxsize=1024)
def _declares(listed: tuple[str, ...]) -> bool:
    return granted(" ".join(listed)).restricts


_PLAIN = {
    "openid": "Know who you are (sign you in)",
    FHIR_USER: "Know which FHIR record stands for you (your fhirUser)",
    "profile": "Read your name and profile",
    "email": "Read your e-mail address",
    "offline_access": "Keep access after you close the app, until you revoke it",
    "online_access": "Keep access while you are signed in",
    LAUNCH: "Open with what your EHR has selected (patient, encounter)",
    LAUNCH_PATIENT: "Know which patient you chose",
    LAUNCH_ENCOUNTER: "Know which encounter you chose",
}
_VERBS = {CREATE: "create", READ: "read", UPDATE: "change", DELETE: "delete", SEARCH: "search"}


def describe(token: str) -> str | None:
    """The scope in plain words for the consent page; None for a scope this server does not define."""
    if token in _PLAIN:
        return _PLAIN[token]
    scope = _lenient(token)
    if scope is None:
        return None
    verbs = [verb for letter, verb in _VERBS.items() if letter in scope.permissions]
    action = verbs[0] if len(verbs) == 1 else f"{', '.join(verbs[:-1])} and {verbs[-1]}"
    every = scope.resource_type == "*"
    if scope.context == PATIENT:
        whose = (
            "all the selected patient's records"
            if every
            else f"the selected patient's {scope.resource_type} records"
        )
    else:
        reach = "you may reach" if scope.context == USER else "this app may reach"
        whose = f"all the records {reach}" if every else f"the {scope.resource_type} records {reach}"
    return f"{action.capitalize()} {whose}"
