"""What /auth/authorize returns and how it gets there: the response types (RFC 6749 §3.1.1, OAuth 2.0
Multiple Response Types §3, Core §3.3) and the response modes (query, fragment, Form Post Response
Mode §2).

Which grant types a response type needs (Client.grant_types, Aidbox's names): `code` needs
authorization_code; anything returning a token or an ID token from this endpoint (`token`,
`id_token`, `id_token token`) needs implicit; hybrid types (code plus a token) need both, since the
client both redeems the code and takes tokens through the browser (Keycloak asks the same of a
client: standard and implicit flow both on).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlencode, urlsplit, urlunsplit

from fhirauth.auth.flows import AUTHORIZATION_CODE, IMPLICIT

ALL_FLOWS = (AUTHORIZATION_CODE, IMPLICIT)


class ResponseMode(Enum):
    QUERY = "query"
    FRAGMENT = "fragment"
    FORM_POST = "form_post"


@dataclass(frozen=True)
class ResponseType:
    name: str
    code: bool
    token: bool
    id_token: bool

    @property
    def flows(self) -> tuple[str, ...]:
        """The flows whose grant type and redirect URIs the response type uses."""
        front_channel = (IMPLICIT,) if self.token or self.id_token else ()
        return ((AUTHORIZATION_CODE,) if self.code else ()) + front_channel

    @property
    def openid(self) -> bool:
        """Defined by OpenID Connect only, so meaningless without the openid scope (Core §3.3)."""
        return self.id_token or (self.code and self.token)

    @property
    def default_mode(self) -> ResponseMode:
        # MRT §5 and Core §3.2.2.5: tokens in the fragment, a code alone in the query.
        return ResponseMode.FRAGMENT if self.token or self.id_token else ResponseMode.QUERY

    def allows(self, mode: ResponseMode) -> bool:
        """Tokens never go in the query (MRT §5): proxies and servers log it, and Referer repeats it."""
        return mode is not ResponseMode.QUERY or not (self.token or self.id_token)


def _response_type(name: str) -> ResponseType:
    values = name.split(" ")
    return ResponseType(name, "code" in values, "token" in values, "id_token" in values)


RESPONSE_TYPES = tuple(
    _response_type(name)
    for name in (
        "code",
        "token",
        "id_token",
        "id_token token",
        "code id_token",
        "code token",
        "code id_token token",
    )
)
_BY_VALUES = {frozenset(kind.name.split(" ")): kind for kind in RESPONSE_TYPES}
_BY_NAME = {kind.name: kind for kind in RESPONSE_TYPES}
RESPONSE_MODES = tuple(mode.value for mode in ResponseMode)


def response_type(value: str) -> ResponseType | None:
    """The response type `value` names, in any order of its values (MRT §2); None if unsupported."""
    values = value.split(" ")
    if len(set(values)) != len(values):
        return None
    return _BY_VALUES.get(frozenset(values))


def response_type_named(name: str) -> ResponseType:
    return _BY_NAME[name]


def response_mode(value: str) -> ResponseMode | None:
    try:
        return ResponseMode(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class AuthorizationResponse:
    """An answer for the client: `params` sent to `redirect_uri` the way `mode` says."""

    redirect_uri: str
    mode: ResponseMode
    params: tuple[tuple[str, str], ...]

    def location(self) -> str:
        """The redirect URL (query and fragment modes): a registered query is kept, never replaced."""
        assert self.mode is not ResponseMode.FORM_POST, "a form_post answer is a page, not a redirect"
        parts = urlsplit(self.redirect_uri)
        encoded = urlencode(self.params)
        if self.mode is ResponseMode.FRAGMENT:
            return urlunsplit(parts._replace(fragment=encoded))
        query = f"{parts.query}&{encoded}" if parts.query else encoded
        return urlunsplit(parts._replace(query=query))
