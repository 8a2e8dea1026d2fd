"""The resource owner password credentials grant (RFC 6749 §4.3).

RFC 9700 §2.4 says it MUST NOT be used; it exists because Aidbox clients use it, and only for
clients that list `password` in grant_types. Checks attach to it (the 2FA requirement is one):
each runs after the password is verified and raises the OAuth error that refuses the request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fhirauth.auth import scopes
from fhirauth.auth.flows import PASSWORD, flow_settings
from fhirauth.auth.grants.base import Grant, TokenRequest
from fhirauth.auth.login import LoginRefused, Logins
from fhirauth.auth.oauth_errors import InvalidGrant
from fhirauth.auth.tokens import Issuance, TokenIssuer, TokenResponse

Document = dict[str, Any]

PasswordGrantCheck = Callable[[TokenRequest, Document], Awaitable[None]]


@dataclass(frozen=True)
class ValidatedPassword:
    client: Document
    user: Document
    scope: str | None


class PasswordGrant(Grant[ValidatedPassword]):
    grant_type = PASSWORD

    def __init__(self, logins: Logins, tokens: TokenIssuer) -> None:
        self._logins = logins
        self._tokens = tokens
        self.checks: list[PasswordGrantCheck] = []

    def add_check(self, check: PasswordGrantCheck) -> None:
        """Attach a check run for every correct password, in the order added (e.g. the TOTP step)."""
        self.checks.append(check)

    def allows_public(self, client: Document) -> bool:
        return flow_settings(client, PASSWORD).get("secret_required") is not True

    async def validate(self, request: TokenRequest) -> ValidatedPassword:
        username = request.require("username")
        password = request.require("password")
        scope = scopes.requested(request.params.get("scope"), request.client, PASSWORD)
        try:
            user = await self._logins.check_password(username, password)
        except LoginRefused as refused:
            if refused.reason == "inactive":
                raise InvalidGrant("User is inactive") from None
            raise InvalidGrant("Invalid username or password") from None
        for check in self.checks:
            await check(request, user)
        return ValidatedPassword(request.client, user, scope)

    async def respond(self, validated: ValidatedPassword) -> TokenResponse:
        issuance = Issuance(
            client=validated.client, flow=PASSWORD, user=validated.user, scope=validated.scope
        )
        return await self._tokens.issue(issuance)
