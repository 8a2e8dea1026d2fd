"""The client credentials grant (RFC 6749 §4.4): a token for the client itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhirauth.auth import scopes
from fhirauth.auth.flows import CLIENT_CREDENTIALS
from fhirauth.auth.grants.base import Grant, TokenRequest
from fhirauth.auth.oauth_errors import InvalidRequest, InvalidScope
from fhirauth.auth.smart import scopes as smart
from fhirauth.auth.tokens import FlowConfig, Issuance, TokenIssuer, TokenResponse

Document = dict[str, Any]


@dataclass(frozen=True)
class ValidatedClientCredentials:
    client: Document
    scope: str | None
    audience: str | None


def _backend_services_scope(scope: str | None) -> None:
    """SMART Backend Services: a client authenticated by a signed assertion asks for system/ scopes,
    and only those."""
    if not scope:
        raise InvalidScope("Ask for the system/ scopes this backend service needs")
    for token in scope.split(" "):
        resource = smart.resource_scope(token)
        if resource is None or resource.context != smart.SYSTEM:
            raise InvalidScope(f"Scope '{token}' is not a system/ scope; a backend service has those only")


class ClientCredentialsGrant(Grant[ValidatedClientCredentials]):
    grant_type = CLIENT_CREDENTIALS

    def __init__(self, tokens: TokenIssuer) -> None:
        self._tokens = tokens

    async def validate(self, request: TokenRequest) -> ValidatedClientCredentials:
        scope = scopes.requested(request.params.get("scope"), request.client, CLIENT_CREDENTIALS)
        if request.by_assertion:
            _backend_services_scope(scope)
        audience = request.params.get("audience") or None
        # Aidbox: `audience` becomes the JWT's `aud`; a client that lists audiences may ask only for those.
        if audience is not None:
            allowed = FlowConfig.of(request.client, CLIENT_CREDENTIALS).audience
            if allowed and audience not in allowed:
                raise InvalidRequest("'audience' is not one this client may ask for")
        return ValidatedClientCredentials(request.client, scope, audience)

    async def respond(self, validated: ValidatedClientCredentials) -> TokenResponse:
        issuance = Issuance(
            client=validated.client,
            flow=CLIENT_CREDENTIALS,
            scope=validated.scope,
            audience=validated.audience,
        )
        return await self._tokens.issue(issuance)
