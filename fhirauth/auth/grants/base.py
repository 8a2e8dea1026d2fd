"""What every grant is: a `grant_type`, `validate` (guard clauses that raise the wire error) and
`respond` (the tokens), in that order."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from fhirauth.auth.clients import ClientRegistry
from fhirauth.auth.oauth_errors import InvalidRequest
from fhirauth.auth.tokens import TokenResponse

Document = dict[str, Any]
V = TypeVar("V")


@dataclass(frozen=True)
class TokenRequest:
    """A token request after client authentication: its parameters, the authenticated client, and
    whether it authenticated with a signed assertion (private_key_jwt)."""

    params: Mapping[str, str]
    client: Document
    by_assertion: bool = False

    def require(self, name: str) -> str:
        value = self.params.get(name)
        if not value:
            raise InvalidRequest(f"Missing '{name}'")
        return value


class Grant(Generic[V]):
    grant_type: ClassVar[str]

    def allows_public(self, client: Document) -> bool:
        """Whether a client without a secret may use this grant."""
        return False

    def permitted(self, client: Document) -> bool:
        """Whether the client may use this grant at all (Client.grant_types)."""
        return ClientRegistry.allows_grant(client, self.grant_type)

    async def validate(self, request: TokenRequest) -> V:
        raise NotImplementedError  # pragma: no cover

    async def respond(self, validated: V) -> TokenResponse:
        raise NotImplementedError  # pragma: no cover
