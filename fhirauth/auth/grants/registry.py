"""The token endpoint's dispatch: a table of grants keyed by grant_type (adding one touches no if-chain)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fhirauth.auth.client_auth import ClientAuthenticator, ClientCredentials
from fhirauth.auth.grants.base import Grant, TokenRequest
from fhirauth.auth.oauth_errors import InvalidClient, InvalidRequest, UnauthorizedClient, UnsupportedGrantType
from fhirauth.auth.tokens import TokenResponse


class GrantRegistry:
    def __init__(self, clients: ClientAuthenticator, grants: Iterable[Grant[Any]]) -> None:
        self._clients = clients
        self._grants: dict[str, Grant[Any]] = {}
        for grant in grants:
            self.register(grant)

    def register(self, grant: Grant[Any]) -> None:
        self._grants[grant.grant_type] = grant

    def __getitem__(self, grant_type: str) -> Grant[Any]:
        return self._grants[grant_type]

    @property
    def grant_types(self) -> list[str]:
        return list(self._grants)

    async def token(self, params: Mapping[str, str], credentials: ClientCredentials) -> TokenResponse:
        grant_type = params.get("grant_type")
        if not grant_type:
            raise InvalidRequest("Missing 'grant_type'")
        grant = self._grants.get(grant_type)
        if grant is None:
            raise UnsupportedGrantType(f"Unsupported 'grant_type'; use one of {', '.join(self._grants)}")
        authenticated = await self._clients.authenticate(credentials)
        client = authenticated.client
        if authenticated.public and not grant.allows_public(client):
            raise InvalidClient(
                f"The {grant_type} grant needs client authentication", scheme=credentials.scheme
            )
        if not grant.permitted(client):
            raise UnauthorizedClient(f"This client may not use the {grant_type} grant")
        validated = await grant.validate(TokenRequest(params, client, authenticated.by_assertion))
        return await grant.respond(validated)
