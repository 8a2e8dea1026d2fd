"""Who is calling: HTTP Basic (the root client, clients with `basic`) and bearer tokens."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fhirauth.auth.clients import ClientRegistry
from fhirauth.auth.principal import Principal
from fhirauth.errors import NotAuthenticated
from fhirauth.security import secrets_equal

BearerResolver = Callable[[str], Awaitable[Principal | None]]

BASIC_CHALLENGE = 'Basic realm="fhirauth", charset="UTF-8"'
BEARER_CHALLENGE = 'Bearer realm="fhirauth"'


@dataclass(frozen=True)
class BasicCredentials:
    client_id: str
    secret: str


def parse_basic(value: str) -> BasicCredentials:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise unauthenticated("Malformed Basic credentials") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        raise unauthenticated("Malformed Basic credentials")
    return BasicCredentials(client_id, secret)


def unauthenticated(message: str) -> NotAuthenticated:
    return NotAuthenticated(message, headers={"WWW-Authenticate": f"{BASIC_CHALLENGE}, {BEARER_CHALLENGE}"})


class Authenticator:
    def __init__(self, clients: ClientRegistry, bearer: BearerResolver | None = None) -> None:
        self._clients = clients
        self._bearer = bearer
        # The root's Authorization header as last seen verified: API callers send the same one on
        # every request, and matching it whole skips the Base64 decoding and the two comparisons.
        self._root_header: str | None = None

    def use_bearer(self, bearer: BearerResolver) -> None:
        self._bearer = bearer

    async def authenticate(self, authorization: str | None) -> Principal | None:
        """The caller named by an Authorization header; None when there is none.

        Credentials that are present but wrong are an error (401), never "anonymous".
        """
        if not authorization:
            return None
        # While no failure is known, no address can be refused, so the root's header may be matched
        # at once; otherwise an address past its limit is refused (by ClientRegistry.authenticate)
        # before its header is compared.
        if (
            self._root_header is not None
            and self._clients.failures_idle
            and secrets_equal(authorization, self._root_header)
        ):
            return self._root()
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            credentials = parse_basic(value)
            client = await self._clients.authenticate(credentials.client_id, credentials.secret)
            if client is not None and client["id"] == self._clients.root_id:
                self._root_header = authorization
                return self._root()
            if client is None or not self._clients.allows_grant(client, "basic"):
                raise unauthenticated("Invalid client credentials")
            return Principal("client", client=client)
        if scheme == "bearer" and self._bearer is not None:
            principal = await self._bearer(value.strip())
            if principal is None:
                raise NotAuthenticated(
                    "Invalid or expired access token",
                    headers={"WWW-Authenticate": f'{BEARER_CHALLENGE}, error="invalid_token"'},
                )
            return principal
        raise unauthenticated("Unsupported authorization scheme")

    def _root(self) -> Principal:
        return Principal("root", client=self._clients.root_document())
