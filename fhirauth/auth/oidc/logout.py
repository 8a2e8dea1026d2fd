"""RP-Initiated Logout 1.0: validating a logout request from a client (§2, §3, §4), and the browser
sign-in its id_token_hint names.

The hint must be an ID token this server signed (a key of /.well-known/jwks.json, our issuer, a
`sid`); its expiry does not matter (§4: expired hints are to be accepted), for it only names the
client (its `aud`) and the sign-in (its `sid`). post_logout_redirect_uri must equal one of the
client's post_logout_redirect_uris exactly, and needs the hint or client_id to name the client.
Anything invalid is an error page, never a redirect (§4).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from fhirauth.auth.clients import ClientRegistry
from fhirauth.auth.keys import ALGORITHMS, SigningKeys
from fhirauth.auth.sessions import BROWSER, SessionService, user_of

Document = dict[str, Any]

# What a logout request may carry (§2); any of them makes /auth/logout the end-session endpoint.
PARAMETERS = ("id_token_hint", "logout_hint", "client_id", "post_logout_redirect_uri", "state", "ui_locales")
_SINGLE = ("id_token_hint", "client_id", "post_logout_redirect_uri", "state")
MAX_HINT_CHARS = 8192


class InvalidLogoutRequest(Exception):
    """The request cannot be trusted to say where to go, or for whom: an error page (§4)."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


def is_logout_request(params: Collection[str]) -> bool:
    return any(name in params for name in PARAMETERS)


@dataclass(frozen=True)
class LogoutRequest:
    params: tuple[tuple[str, str], ...]
    client_id: str | None
    redirect_uri: str | None
    state: str | None
    # The browser sign-in and the user the id_token_hint names.
    sid: str | None
    subject: str | None

    @property
    def query(self) -> str:
        """The request again, for the confirmation form to post back."""
        return urlencode(self.params)

    def location(self) -> str | None:
        """Where to send the browser afterwards (§3: with the state), if anywhere."""
        if self.redirect_uri is None:
            return None
        if self.state is None:
            return self.redirect_uri
        parts = urlsplit(self.redirect_uri)
        state = urlencode({"state": self.state})
        return urlunsplit(parts._replace(query=f"{parts.query}&{state}" if parts.query else state))


class RpLogout:
    def __init__(
        self, keys: SigningKeys, clients: ClientRegistry, sessions: SessionService, issuer: str
    ) -> None:
        self._keys = keys
        self._clients = clients
        self._sessions = sessions
        self._issuer = issuer

    async def validate(self, params: Mapping[str, str], repeated: Collection[str] = ()) -> LogoutRequest:
        for name in _SINGLE:
            if name in repeated:
                raise InvalidLogoutRequest(f"The parameter '{name}' is given more than once.")
        hint = params.get("id_token_hint") or None
        claims = await self._verify(hint) if hint is not None else None
        client_id = params.get("client_id") or None
        if claims is not None:
            audience = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
            if client_id is not None and client_id not in audience:
                raise InvalidLogoutRequest("'client_id' does not match the id_token_hint's audience")
            client_id = client_id or (audience[0] if len(audience) == 1 else None)
        client = await self._clients.get(client_id) if client_id is not None else None
        if client_id is not None and client is None:
            raise InvalidLogoutRequest("Unknown or inactive client")
        redirect_uri = params.get("post_logout_redirect_uri") or None
        if redirect_uri is not None:
            if client is None:
                raise InvalidLogoutRequest(
                    "'post_logout_redirect_uri' needs 'id_token_hint' or 'client_id' to name the client"
                )
            registered = client.get("post_logout_redirect_uris")
            # §3: exact string comparison, as for redirect_uri (RFC 6749 §3.1.2.4).
            if not isinstance(registered, list) or redirect_uri not in registered:
                raise InvalidLogoutRequest("'post_logout_redirect_uri' is not registered for this client")
        return LogoutRequest(
            params=tuple((name, params[name]) for name in PARAMETERS if params.get(name)),
            client_id=client_id,
            redirect_uri=redirect_uri,
            state=params.get("state") or None,
            sid=claims["sid"] if claims is not None else None,
            subject=claims["sub"] if claims is not None else None,
        )

    async def end_hinted(self, request: LogoutRequest) -> Document | None:
        """End the browser sign-in the hint names, when it is still on and its user is the hint's
        subject (a cross-site POST carries no SameSite=Lax cookie, so the hint is all there is).
        The Session as it was, if it was ended."""
        if request.sid is None:
            return None
        stored = await self._sessions.find(request.sid)
        if (
            stored is None
            or stored.get("type") != BROWSER
            or not self._sessions.is_live(stored)
            or user_of(stored) != request.subject
        ):
            return None
        await self._sessions.end(stored)
        return stored

    async def _verify(self, hint: str) -> Document:
        if len(hint) > MAX_HINT_CHARS:
            raise InvalidLogoutRequest("The id_token_hint was not issued by this server")
        keys = KeySet.import_key_set(await self._keys.jwks())  # type: ignore[arg-type]  # joserfc types a key set as its TypedDict; ours is the same JSON as a dict
        try:
            claims = jwt.decode(hint, keys, algorithms=list(ALGORITHMS)).claims
        except (JoseError, ValueError, TypeError):
            raise InvalidLogoutRequest("The id_token_hint was not issued by this server") from None
        if claims.get("iss") != self._issuer:
            raise InvalidLogoutRequest("The id_token_hint was not issued by this server")
        # JWT access tokens are signed with the same keys; only ID tokens name a sign-in.
        if not all(isinstance(claims.get(name), str) for name in ("sid", "sub")) or not claims.get("aud"):
            raise InvalidLogoutRequest("The id_token_hint is not an ID token")
        return claims
