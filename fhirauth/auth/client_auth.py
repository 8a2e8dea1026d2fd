"""Client authentication at the token, introspection and revocation endpoints (RFC 6749 §2.3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhirauth.auth.clients import ClientRegistry
from fhirauth.auth.oauth_errors import InvalidClient

Document = dict[str, Any]


@dataclass(frozen=True)
class ClientCredentials:
    """What the request presented: from HTTP Basic (`scheme="Basic"`) or the body (`scheme=None`)."""

    client_id: str | None
    secret: str | None
    scheme: str | None = None


@dataclass(frozen=True)
class AuthenticatedClient:
    """The client, and whether it proved itself with a secret (public clients have none to prove)."""

    client: Document
    public: bool


class ClientAuthenticator:
    def __init__(self, clients: ClientRegistry) -> None:
        self._clients = clients

    async def authenticate(self, credentials: ClientCredentials) -> AuthenticatedClient:
        scheme = credentials.scheme
        if not credentials.client_id:
            raise InvalidClient("Client authentication required: HTTP Basic or 'client_id'", scheme=scheme)
        if credentials.secret is None:
            client = await self._clients.get(credentials.client_id)
            if client is None:
                raise InvalidClient("Unknown client", scheme=scheme)
            if isinstance(client.get("secret"), str) or self._clients.root_id == client["id"]:
                raise InvalidClient("This client must authenticate with its secret", scheme=scheme)
            return AuthenticatedClient(client, public=True)
        client = await self._clients.authenticate(credentials.client_id, credentials.secret)
        if client is None:
            raise InvalidClient("Invalid client credentials", scheme=scheme)
        return AuthenticatedClient(client, public=False)

    async def authenticate_confidential(self, credentials: ClientCredentials) -> Document:
        """Introspection and revocation are for clients that hold a secret (RFC 7662 §2.1, RFC 7009 §2.1)."""
        authenticated = await self.authenticate(credentials)
        if authenticated.public:
            raise InvalidClient("This endpoint needs client credentials", scheme=credentials.scheme)
        return authenticated.client
