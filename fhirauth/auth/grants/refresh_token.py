"""The refresh token grant (RFC 6749 §6), with rotation: a refresh token works once.

Rotation swaps the Session's token hashes by compare-and-set, so of two refreshes presenting the
same token exactly one succeeds; the access token issued before the refresh dies with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhirauth.auth import scopes
from fhirauth.auth.clients import ClientRegistry
from fhirauth.auth.flows import TOKEN_FLOWS
from fhirauth.auth.grants.base import Grant, TokenRequest
from fhirauth.auth.login import is_inactive
from fhirauth.auth.oauth_errors import InvalidGrant
from fhirauth.auth.sessions import SessionService
from fhirauth.auth.tokens import FlowConfig, TokenIssuer, TokenResponse
from fhirauth.resources.service import ResourceService

Document = dict[str, Any]


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
        session = await self._sessions.find_by_refresh_token(request.require("refresh_token"))
        if session is None:
            raise InvalidGrant("Invalid refresh token")
        if (session.get("client") or {}).get("id") != request.client["id"]:
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
        user_id = (session.get("user") or {}).get("id")
        if user_id is not None:
            stored = await self._resources.find("User", user_id)
            if stored is None:
                raise InvalidGrant("The user of this refresh token no longer exists")
            if is_inactive(stored.document):
                raise InvalidGrant("User is inactive")
            user = stored.document
        return ValidatedRefresh(request.client, session, user, scope)

    async def respond(self, validated: ValidatedRefresh) -> TokenResponse:
        response = await self._tokens.rotate(
            validated.session, validated.client, validated.user, validated.scope
        )
        if response is None:
            raise InvalidGrant("Refresh token was already used")
        return response
