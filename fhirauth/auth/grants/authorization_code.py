"""The authorization code grant (RFC 6749 §4.1.3), with PKCE (RFC 7636 §4.6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhirauth.auth import pkce
from fhirauth.auth.codes import AuthorizationCode, AuthorizationCodes
from fhirauth.auth.flows import AUTHORIZATION_CODE, sole_redirect_uri
from fhirauth.auth.grants.base import Grant, TokenRequest
from fhirauth.auth.login import is_inactive
from fhirauth.auth.oauth_errors import InvalidGrant, InvalidRequest
from fhirauth.auth.tokens import Issuance, TokenIssuer, TokenResponse
from fhirauth.resources.service import ResourceService

Document = dict[str, Any]


@dataclass(frozen=True)
class ValidatedCode:
    client: Document
    code: AuthorizationCode
    user: Document


def check_redirect_uri(given: str | None, code: AuthorizationCode, client: Document) -> None:
    """RFC 6749 §4.1.3: the token request repeats the authorization request's redirect URI exactly.

    A client with a single registered URI may leave it out (as Aidbox's examples do): the code can
    only ever have gone there (the rule /auth/authorize applies to an authorization request without it).
    """
    if given is None:
        if sole_redirect_uri(client, [AUTHORIZATION_CODE]) != code.redirect_uri:
            raise InvalidRequest("Missing 'redirect_uri'")
        return
    if given != code.redirect_uri:
        raise InvalidGrant("'redirect_uri' does not match the authorization request")


class AuthorizationCodeGrant(Grant[ValidatedCode]):
    grant_type = AUTHORIZATION_CODE

    def __init__(self, codes: AuthorizationCodes, tokens: TokenIssuer, resources: ResourceService) -> None:
        self._codes = codes
        self._tokens = tokens
        self._resources = resources

    def allows_public(self, client: Document) -> bool:
        # Public clients cannot get a code without PKCE (/auth/authorize requires it of them).
        return True

    async def validate(self, request: TokenRequest) -> ValidatedCode:
        code = await self._codes.redeem(request.require("code"))
        if code.client_id != request.client["id"]:
            raise InvalidGrant("Authorization code was issued to another client")
        check_redirect_uri(request.params.get("redirect_uri"), code, request.client)
        pkce.verify(code.challenge, request.params.get("code_verifier"))
        stored = await self._resources.find("User", code.user_id)
        if stored is None:
            raise InvalidGrant("The user of this authorization code no longer exists")
        if is_inactive(stored.document):
            raise InvalidGrant("User is inactive")
        return ValidatedCode(request.client, code, stored.document)

    async def respond(self, validated: ValidatedCode) -> TokenResponse:
        code = validated.code

        async def issue(session_id: str) -> TokenResponse:
            issuance = Issuance(
                client=validated.client,
                flow=AUTHORIZATION_CODE,
                user=validated.user,
                scope=code.scope,
                parent_id=code.parent_id,
                session_id=session_id,
                context=code.context,
                authentication=code.authentication,
            )
            return await self._tokens.issue(issuance)

        return await self._codes.exchange(code, issue)
