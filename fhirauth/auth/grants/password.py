"""The resource owner password credentials grant (RFC 6749 §4.3).

RFC 9700 §2.4 says it MUST NOT be used; it exists because Aidbox clients use it, and only for
clients that list `password` in grant_types. Checks attach to it (the 2FA requirement is one):
each runs after the password is verified and raises the OAuth error that refuses the request, or
names the sign-in method it verified (amr `otp`).

With the openid scope the grant is an OpenID sign-in, as Keycloak's direct grant is: the response
carries an ID token about the user, whose `sid` is the grant's Session and whose `amr` lists the
password and the methods the checks verified.
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
from fhirauth.auth.oidc.amr import OTP, SignInMethods
from fhirauth.auth.oidc.claims import Authentication
from fhirauth.auth.oidc.userinfo import has_openid
from fhirauth.auth.tokens import Issuance, TokenIssuer, TokenResponse
from fhirauth.resources.service import new_id

Document = dict[str, Any]

# A check refuses with an OAuthError, or passes: with the amr method it verified, or None.
PasswordGrantCheck = Callable[[TokenRequest, Document], Awaitable[str | None]]


@dataclass(frozen=True)
class ValidatedPassword:
    client: Document
    user: Document
    scope: str | None
    methods: SignInMethods


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
        now = int(self._tokens.clock().timestamp())
        methods = SignInMethods.password(now)
        for check in self.checks:
            if await check(request, user) == OTP:
                methods = methods.with_otp(now)
        return ValidatedPassword(request.client, user, scope, methods)

    async def respond(self, validated: ValidatedPassword) -> TokenResponse:
        session_id = new_id()
        authentication = (
            Authentication(validated.methods.auth_time, session_id, amr=validated.methods.amr)
            if has_openid(validated.scope)
            else None
        )
        issuance = Issuance(
            client=validated.client,
            flow=PASSWORD,
            user=validated.user,
            scope=validated.scope,
            session_id=session_id,
            authentication=authentication,
        )
        return await self._tokens.issue(issuance)
