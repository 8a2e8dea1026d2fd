"""The domain side of /auth/authorize (RFC 6749 §4.1.1, §4.2.1): validate the request, then issue a
code or (implicit flow) an access token for the signed-in user and say where to redirect.

Two kinds of refusal: before the redirect URI is known to be registered (or, left out, to be the
client's only one for the flow), nothing may redirect (`UnsafeAuthorizationRequest`, rendered as an
HTML page); after that, errors go back to the client (`AuthorizationError.redirect_url()`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from fhirauth.auth import pkce, scopes
from fhirauth.auth.clients import ClientRegistry
from fhirauth.auth.codes import AuthorizationCodes
from fhirauth.auth.flows import AUTHORIZATION_CODE, IMPLICIT, redirect_uris, sole_redirect_uri
from fhirauth.auth.oauth_errors import InvalidRequest, OAuthError, UnauthorizedClient, UnsupportedResponseType
from fhirauth.auth.pkce import CodeChallenge
from fhirauth.auth.smart.authorization import SmartAuthorization
from fhirauth.auth.tokens import Issuance, TokenIssuer

Document = dict[str, Any]

# response_type → the flow whose Client.auth block and grant_types entry govern it.
RESPONSE_TYPES = {"code": AUTHORIZATION_CODE, "token": IMPLICIT}
# What the request is read for; RFC 6749 §3.1: anything else is ignored, repeated or not.
PARAMETERS = (
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "launch",
    "aud",
)
# Given twice, these leave the redirect target in doubt, so nothing may redirect.
_TARGET_PARAMETERS = ("client_id", "redirect_uri")


class UnsafeAuthorizationRequest(Exception):
    """The client or redirect URI cannot be trusted: show an error page, never redirect (RFC 6749 §4.1.2.1)."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclass(frozen=True)
class AuthorizationRequest:
    client: Document
    response_type: str
    redirect_uri: str
    state: str | None
    continuation_query: str
    scope: str | None = None
    challenge: CodeChallenge | None = None
    launch: str | None = None

    @property
    def flow(self) -> str:
        return RESPONSE_TYPES[self.response_type]

    @property
    def first_party(self) -> bool:
        return self.client.get("first_party") is True

    def redirect_with(self, params: Mapping[str, str | None]) -> str:
        """The redirect URI carrying `params`: in the query for codes, in the fragment for tokens."""
        values = {name: value for name, value in params.items() if value is not None}
        if self.state is not None:
            values["state"] = self.state
        parts = urlsplit(self.redirect_uri)
        if self.response_type == "token":
            return urlunsplit(parts._replace(fragment=urlencode(values)))
        query = f"{parts.query}&{urlencode(values)}" if parts.query else urlencode(values)
        return urlunsplit(parts._replace(query=query))


class AuthorizationError(Exception):
    """An error the client hears about through its redirect URI (RFC 6749 §4.1.2.1, §4.2.2.1)."""

    def __init__(self, error: str, description: str, request: AuthorizationRequest) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.request = request

    @classmethod
    def of(cls, error: OAuthError, request: AuthorizationRequest) -> AuthorizationError:
        return cls(error.error, error.description, request)

    def redirect_url(self) -> str:
        return self.request.redirect_with({"error": self.error, "error_description": self.description})


class AuthorizationService:
    def __init__(
        self, clients: ClientRegistry, codes: AuthorizationCodes, tokens: TokenIssuer, smart: SmartAuthorization
    ) -> None:
        self._clients = clients
        self._codes = codes
        self._tokens = tokens
        self._smart = smart

    async def validate(
        self, params: Mapping[str, str], repeated: Collection[str] = ()
    ) -> AuthorizationRequest:
        """The request of `params` (first values), `repeated` naming the parameters given more than once."""
        for name in _TARGET_PARAMETERS:
            if name in repeated:
                raise UnsafeAuthorizationRequest(_repeated(name))
        client_id = params.get("client_id")
        if not client_id:
            raise UnsafeAuthorizationRequest("Missing 'client_id'")
        client = await self._clients.get(client_id)
        if client is None:
            raise UnsafeAuthorizationRequest("Unknown or inactive client")
        response_type = "" if "response_type" in repeated else params.get("response_type", "")
        flow = RESPONSE_TYPES.get(response_type)
        flows = [flow] if flow is not None else list(RESPONSE_TYPES.values())
        request = AuthorizationRequest(
            client=client,
            response_type=response_type if flow is not None else "code",
            redirect_uri=_redirect_uri(client, params.get("redirect_uri"), flows),
            state=params.get("state") or None,
            continuation_query=urlencode(list(params.items())),
        )
        try:
            given_twice = [name for name in PARAMETERS if name in repeated]
            if given_twice:
                raise InvalidRequest(_repeated(given_twice[0]))
            if not response_type:
                raise InvalidRequest("Missing 'response_type'")
            if flow is None:
                raise UnsupportedResponseType("'response_type' must be 'code' or 'token'")
            if not ClientRegistry.allows_grant(client, flow):
                raise UnauthorizedClient(f"This client may not use the {flow} flow")
            scope = scopes.requested(params.get("scope"), client, flow)
            challenge = pkce.read_challenge(params, client) if flow == AUTHORIZATION_CODE else None
            launch = await self._smart.validate(params, client_id, scope, challenge)
        except OAuthError as error:
            raise AuthorizationError.of(error, request) from None
        return replace(request, scope=scope, challenge=challenge, launch=launch)

    async def complete(self, request: AuthorizationRequest, user: Document, browser_session: Document) -> str:
        """Issue the code or token for `user` and return the URL to redirect the browser to."""
        if request.flow == AUTHORIZATION_CODE:
            try:
                context = await self._smart.context(request.launch, request.client["id"], user, request.scope)
            except OAuthError as error:
                return AuthorizationError.of(error, request).redirect_url()
            code = await self._codes.issue(
                client_id=request.client["id"],
                user_id=user["id"],
                redirect_uri=request.redirect_uri,
                scope=request.scope,
                challenge=request.challenge,
                parent_id=browser_session["id"],
                context=context,
            )
            return request.redirect_with({"code": code})
        issuance = Issuance(
            client=request.client,
            flow=IMPLICIT,
            user=user,
            scope=request.scope,
            parent_id=browser_session["id"],
        )
        response = await self._tokens.issue(issuance)
        return request.redirect_with(
            {
                "access_token": response.access_token,
                "token_type": "bearer",
                "expires_in": str(response.expires_in),
            }
        )


def _repeated(name: str) -> str:
    return f"The parameter '{name}' is given more than once."


def _redirect_uri(client: Document, given: str | None, flows: list[str]) -> str:
    """Where this request's answers may go, or UnsafeAuthorizationRequest."""
    if given:
        # RFC 6749 §3.1.2.4, RFC 9700 §2.1: exact string comparison, never a prefix or pattern.
        if not any(given in redirect_uris(client, flow) for flow in flows):
            raise UnsafeAuthorizationRequest("'redirect_uri' is not registered for this client")
        return given
    # RFC 6749 §3.1: an empty parameter counts as left out.
    sole = sole_redirect_uri(client, flows)
    if sole is not None:
        return sole
    if any(redirect_uris(client, flow) for flow in flows):
        raise UnsafeAuthorizationRequest(
            "Missing 'redirect_uri': this client has several registered, so the request must name one"
        )
    raise UnsafeAuthorizationRequest("Missing 'redirect_uri': this client has none registered for this flow")
