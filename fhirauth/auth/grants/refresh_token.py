"""The refresh token grant (RFC 6749 §6), with rotation: a refresh token works once.

Rotation swaps the Session's token hashes, so the access token issued before the refresh dies with
it. A refresh token presented again after its rotation, whoever presents it, revokes its family
(the Session: the grant's tokens and all their rotations, RFC 9700 §4.14.2). That includes the
loser of two refreshes racing with one token: a grace for that race would be a window in which an
attacker holding a stolen token could refresh undetected, so there is none, and a client that
retries a refresh whose answer it lost signs in again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

from fhirauth.auth import scopes
from fhirauth.auth.clients import ClientRegistry
from fhirauth.auth.flows import TOKEN_FLOWS
from fhirauth.auth.grants.base import Grant, TokenRequest
from fhirauth.auth.login import is_inactive
from fhirauth.auth.oauth_errors import InvalidGrant
from fhirauth.auth.sessions import AlreadyRotated, SessionService, client_of, user_of
from fhirauth.auth.tokens import FlowConfig, TokenIssuer, TokenResponse
from fhirauth.resources.service import ResourceService

Document = dict[str, Any]


class RefreshTokenReused(InvalidGrant):
    """A rotated refresh token was presented again: its family is revoked. The ids are for the audit
    trail; the wire answer is invalid_grant like any other."""

    def __init__(self, session_id: str, user_id: str | None, client_id: str | None) -> None:
        super().__init__("Refresh token was already used; the tokens issued from it are revoked")
        self.session_id = session_id
        self.user_id = user_id
        self.client_id = client_id


@dataclass(frozen=True)
class ValidatedRefresh:
    client: Document
    session: Document
    user: Document | None
    scope: str | None


class RefreshTokenGrant(Grant[ValidatedRefresh]):
    grant_type = "refresh_token"

    def __init__(self, sessions: SessionService, tokens: TokenIssuer, resources: ResourceService) -> None:
        self._sessions = sessions
        self._tokens = tokens
        self._resources = resources

    def allows_public(self, client: Document) -> bool:
        return True

    def permitted(self, client: Document) -> bool:
        # Aidbox issues refresh tokens on `auth.<flow>.refresh_token: true`; such a client may use them
        # whether or not it also lists `refresh_token` in grant_types.
        return ClientRegistry.allows_grant(client, self.grant_type) or any(
            FlowConfig.of(client, flow).refresh_token for flow in TOKEN_FLOWS
        )

    async def validate(self, request: TokenRequest) -> ValidatedRefresh:
        presented = request.require("refresh_token")
        session = await self._sessions.find_by_refresh_token(presented)
        if session is None:
            family = await self._sessions.rotated_from(presented)
            if family is not None:
                await self._revoke_family(family)
            raise InvalidGrant("Invalid refresh token")
        if client_of(session) != request.client["id"]:
            raise InvalidGrant("Refresh token was issued to another client")
        if session.get("active") is not True:
            raise InvalidGrant("Refresh token was revoked")
        expires = session.get("refresh_token_exp")
        if isinstance(expires, int) and expires <= self._sessions.now():
            raise InvalidGrant("Refresh token expired")
        if not FlowConfig.of(request.client, session.get("type", "")).refresh_token:
            raise InvalidGrant("Refresh tokens are turned off for this client")
        scope = scopes.narrowed(request.params.get("scope"), session.get("scope"))
        user: Document | None = None
        user_id = user_of(session)
        if user_id is not None:
            stored = await self._resources.find("User", user_id)
            if stored is None:
                raise InvalidGrant("The user of this refresh token no longer exists")
            if is_inactive(stored.document):
                raise InvalidGrant("User is inactive")
            user = stored.document
        return ValidatedRefresh(request.client, session, user, scope)

    async def respond(self, validated: ValidatedRefresh) -> TokenResponse:
        try:
            response = await self._tokens.rotate(
                validated.session, validated.client, validated.user, validated.scope
            )
        except AlreadyRotated:
            await self._revoke_family(validated.session["id"])
        if response is None:
            # Ended meanwhile (the loser of a racing refresh revokes the family, perhaps before the
            # winner's swap lands): a retry could only fail, so do not suggest one.
            current = await self._sessions.find(validated.session["id"])
            if current is None or current.get("active") is not True:
                raise InvalidGrant("Refresh token was revoked")
            raise InvalidGrant("The refresh token's session changed during the refresh; try again")
        return response

    async def _revoke_family(self, session_id: str) -> NoReturn:
        ended = await self._sessions.end_by_id(session_id)
        user_id = user_of(ended) if ended is not None else None
        client_id = client_of(ended) if ended is not None else None
        raise RefreshTokenReused(session_id, user_id, client_id)
