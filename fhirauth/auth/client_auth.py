"""Client authentication: the limits on its failures, which every face shares, and the rules of the
token, introspection and revocation endpoints (RFC 6749 §2.3): a secret, none (public clients), or a
signed assertion (private_key_jwt, client_assertion.py)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fhirauth.auth.client_assertion import PRIVATE_KEY_JWT
from fhirauth.auth.oauth_errors import InvalidClient
from fhirauth.ratelimit import FailureLimiter, Keys, RateLimits

if TYPE_CHECKING:
    from fhirauth.auth.client_assertion import ClientAssertions
    from fhirauth.auth.clients import ClientRegistry

Document = dict[str, Any]


class ClientAuthLimits:
    """The limits on failed client authentication: by the address a request came from, and by the
    client id it named.

    ClientRegistry.authenticate applies them where a secret would cost an Argon2id verification. An
    address past its limit is refused before its client is even looked up; a client id past its limit
    only where its secret would be hashed, and only to addresses that have failed, so a flood of wrong
    secrets naming a client does not lock the client out. A wrong root client secret counts
    against its address alone, so that no one can lock the administrator out.
    """

    def __init__(
        self, limiter: FailureLimiter, limits: RateLimits, address: Callable[[], str | None]
    ) -> None:
        self._limiter = limiter
        self._by_address = limits.client_auth_ip
        self._by_client = limits.client_auth_client
        # The key of the address the request being served came from (None outside a request). Client
        # credentials reach this layer through several faces, and only the HTTP layer knows it.
        self._address = address

    @property
    def idle(self) -> bool:
        """Whether no failure is known in this process: then nothing can be refused."""
        return self._limiter.idle

    def check_address(self) -> None:
        """RateLimited when the request's address has failed too often; free while nothing failed."""
        if not self._limiter.idle:
            self._limiter.check(self._keys(None))

    def attempt(self, client_id: str) -> AbstractContextManager[None]:
        """Hold a verification of a secret naming `client_id` while it runs; RateLimited first when
        its address has failed too often, or when the client id has and so has its address.

        Past its limit, a client id is refused only to addresses that have failed in this window (as
        far as this process knows): a flood of wrong secrets naming a client must not lock the client
        out where it authenticates from, which does not fail. Each address still has its own limit,
        and fails once before it is refused.
        """
        address = self._address()
        by_address = [(self._by_address, address)] if address is not None else []
        by_client = [(self._by_client, client_id)]
        self._limiter.check(by_address)
        if address is None or not self._limiter.is_clean(self._by_address, address):
            self._limiter.check(by_client)
        return self._limiter.holding([*by_address, *by_client])

    async def failed(self, client_id: str | None) -> None:
        """Count a failure against the address, and against `client_id`; None for an id naming no
        client with a secret, counted against the address alone (made-up ids would each open a
        counter of their own)."""
        await self._limiter.failed(self._keys(client_id))

    def _keys(self, client_id: str | None) -> Keys:
        address = self._address()
        keys = [(self._by_address, address)] if address is not None else []
        if client_id is not None:
            keys.append((self._by_client, client_id))
        return keys


@dataclass(frozen=True)
class ClientCredentials:
    """What the request presented: from HTTP Basic (`scheme="Basic"`) or the body (`scheme=None`), or
    a signed JWT (`assertion`, private_key_jwt), with `client_id` when the body names one."""

    client_id: str | None
    secret: str | None
    scheme: str | None = None
    assertion: str | None = None


@dataclass(frozen=True)
class AuthenticatedClient:
    """The client, whether it proved itself (public clients have nothing to prove), and whether it did
    so with a signed assertion (private_key_jwt) rather than a secret."""

    client: Document
    public: bool
    by_assertion: bool = False


def signs_assertions(client: Document) -> bool:
    """Whether the client authenticates with private_key_jwt: it registered its keys, or said so."""
    method = client.get("token_endpoint_auth_method")
    if method is not None:
        return bool(method == PRIVATE_KEY_JWT)
    return "jwks" in client or "jwks_uri" in client


class ClientAuthenticator:
    def __init__(self, clients: ClientRegistry, assertions: ClientAssertions) -> None:
        self._clients = clients
        self._assertions = assertions

    async def authenticate(self, credentials: ClientCredentials) -> AuthenticatedClient:
        scheme = credentials.scheme
        if credentials.assertion is not None:
            signer = await self._assertions.authenticate(credentials.assertion, credentials.client_id)
            if not signs_assertions(signer):
                raise InvalidClient("This client authenticates with its secret, not a client assertion")
            return AuthenticatedClient(signer, public=False, by_assertion=True)
        if not credentials.client_id:
            raise InvalidClient("Client authentication required: HTTP Basic or 'client_id'", scheme=scheme)
        if credentials.secret is None:
            client = await self._clients.get(credentials.client_id)
            if client is None:
                raise InvalidClient("Unknown client", scheme=scheme)
            if signs_assertions(client):
                raise InvalidClient("This client must authenticate with a client assertion", scheme=scheme)
            if isinstance(client.get("secret"), str) or self._clients.root_id == client["id"]:
                raise InvalidClient("This client must authenticate with its secret", scheme=scheme)
            return AuthenticatedClient(client, public=True)
        client = await self._clients.authenticate(credentials.client_id, credentials.secret)
        if client is None:
            raise InvalidClient("Invalid client credentials", scheme=scheme)
        if signs_assertions(client):
            raise InvalidClient("This client must authenticate with a client assertion", scheme=scheme)
        return AuthenticatedClient(client, public=False)

    async def close(self) -> None:
        await self._assertions.close()

    async def authenticate_confidential(self, credentials: ClientCredentials) -> Document:
        """Introspection and revocation are for clients that hold a secret (RFC 7662 §2.1, RFC 7009 §2.1)."""
        authenticated = await self.authenticate(credentials)
        if authenticated.public:
            raise InvalidClient("This endpoint needs client credentials", scheme=credentials.scheme)
        return authenticated.client
