"""The domain side of /auth/authorize (RFC 6749 §4.1.1, §4.2.1; OpenID Connect Core §3): validate the
request, decide whether the user must sign in or consent first (prompt, max_age), then issue what the
response type asks for (a code, an access token, an ID token) and say how it goes back to the client.

Two kinds of refusal: before the redirect URI is known to be registered (or, left out, to be the
client's only one for the flow) and the response mode is known, nothing may redirect
(`UnsafeAuthorizationRequest`, rendered as an HTML page); after that, errors go back to the client
in the request's response mode (`AuthorizationError.response()`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any
from urllib.parse import urlencode

from fhirauth.auth import pkce, scopes
from fhirauth.auth.clients import ClientRegistry
from fhirauth.auth.codes import AuthorizationCodes
from fhirauth.auth.consent import Consents
from fhirauth.auth.flows import IMPLICIT, redirect_uris, sole_redirect_uri
from fhirauth.auth.login import PendingLogins
from fhirauth.auth.oauth_errors import InvalidRequest, OAuthError, UnauthorizedClient, UnsupportedResponseType
from fhirauth.auth.oidc import prompt
from fhirauth.auth.oidc.claims import Authentication, IdTokenRequest
from fhirauth.auth.oidc.errors import (
    ConsentRequired,
    InteractionRequired,
    LoginRequired,
    RequestNotSupported,
    RequestUriNotSupported,
)
from fhirauth.auth.oidc.id_token import IdTokens
from fhirauth.auth.oidc.responses import (
    ALL_FLOWS,
    RESPONSE_TYPES,
    AuthorizationResponse,
    ResponseMode,
    ResponseType,
    response_mode,
    response_type,
    response_type_named,
)
from fhirauth.auth.oidc.step_up import AcrRequest, acr_request
from fhirauth.auth.pkce import CodeChallenge
from fhirauth.auth.sessions import sign_in_methods, signed_in_at
from fhirauth.auth.smart.authorization import SmartAuthorization
from fhirauth.auth.tokens import FlowConfig, Issuance, TokenIssuer
from fhirauth.clock import Clock

Document = dict[str, Any]

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
# Read only when the scope has openid (Core §3.1.2.2: without it the request is plain OAuth).
OPENID_PARAMETERS = ("nonce", "prompt", "max_age", "acr_values", "claims", "id_token_hint")
# Given twice, these leave the redirect target or the way to it in doubt, so nothing may redirect.
_TARGET_PARAMETERS = ("client_id", "redirect_uri", "response_mode")
MAX_NONCE_CHARS = 512
_SUPPORTED_TYPES = ", ".join(kind.name for kind in RESPONSE_TYPES)


class UnsafeAuthorizationRequest(Exception):
    """The client or redirect URI cannot be trusted: show an error page, never redirect (RFC 6749 §4.1.2.1)."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class Step(Enum):
    """What /auth/authorize does for a valid request: the login page, the second factor the request
    needs (step-up), the consent page, or the answer."""

    SIGN_IN = "sign-in"
    STEP_UP = "step-up"
    CONSENT = "consent"
    COMPLETE = "complete"


@dataclass(frozen=True)
class AuthorizationRequest:
    client: Document
    response_type: str
    redirect_uri: str
    state: str | None
    continuation_query: str
    mode: ResponseMode = ResponseMode.QUERY
    scope: str | None = None
    challenge: CodeChallenge | None = None
    launch: str | None = None
    nonce: str | None = None
    prompt: frozenset[str] = frozenset()
    max_age: int | None = None
    # The authentication context class the request or its client needs; None: any sign-in will do.
    acr: AcrRequest | None = None
    # The user the request's id_token_hint names: the client believes they are signed in.
    hinted_user: str | None = None

    @property
    def kind(self) -> ResponseType:
        return response_type_named(self.response_type)

    @property
    def flows(self) -> tuple[str, ...]:
        return self.kind.flows

    @property
    def first_party(self) -> bool:
        return self.client.get("first_party") is True

    @property
    def openid(self) -> bool:
        return self.scope is not None and "openid" in self.scope.split(" ")

    def respond(self, params: Mapping[str, str]) -> AuthorizationResponse:
        """The answer carrying `params` and the request's state, in the request's response mode."""
        values = list(params.items())
        if self.state is not None:
            values.append(("state", self.state))
        return AuthorizationResponse(self.redirect_uri, self.mode, tuple(values))


class AuthorizationError(Exception):
    """An error the client hears about through its redirect URI (RFC 6749 §4.1.2.1, §4.2.2.1), in the
    request's response mode (OAuth 2.0 Multiple Response Types §2.2)."""

    def __init__(self, error: str, description: str, request: AuthorizationRequest) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.request = request

    @classmethod
    def of(cls, error: OAuthError, request: AuthorizationRequest) -> AuthorizationError:
        return cls(error.error, error.description, request)

    def response(self) -> AuthorizationResponse:
        return self.request.respond({"error": self.error, "error_description": self.description})


class AuthorizationService:
    def __init__(
        self,
        clients: ClientRegistry,
        codes: AuthorizationCodes,
        tokens: TokenIssuer,
        smart: SmartAuthorization,
        id_tokens: IdTokens,
        consents: Consents,
        pending_logins: PendingLogins,
        clock: Clock,
    ) -> None:
        self._clients = clients
        self._codes = codes
        self._tokens = tokens
        self._smart = smart
        self._id_tokens = id_tokens
        self._consents = consents
        self._pending_logins = pending_logins
        self._clock = clock

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
        given_type = "" if "response_type" in repeated else params.get("response_type", "")
        kind = response_type(given_type)
        mode = _response_mode(params.get("response_mode"))
        # Core §3.1.2.6: an unknown response type is answered in the query, as a code would be.
        answered_as = kind or response_type_named("code")
        request = AuthorizationRequest(
            client=client,
            response_type=answered_as.name,
            redirect_uri=_redirect_uri(client, params.get("redirect_uri"), kind.flows if kind else ALL_FLOWS),
            state=params.get("state") or None,
            continuation_query=urlencode(list(params.items())),
            mode=mode if mode is not None and answered_as.allows(mode) else answered_as.default_mode,
        )
        try:
            given_twice = [name for name in PARAMETERS if name in repeated]
            if given_twice:
                raise InvalidRequest(_repeated(given_twice[0]))
            if not given_type:
                raise InvalidRequest("Missing 'response_type'")
            if kind is None:
                raise UnsupportedResponseType(f"Unsupported 'response_type'; use one of: {_SUPPORTED_TYPES}")
            if mode is not None and mode is not request.mode:
                raise InvalidRequest(
                    f"response_mode '{mode.value}' cannot carry the tokens of response_type '{kind.name}'; "
                    "use 'fragment' or 'form_post'"
                )
            for flow in kind.flows:
                if not ClientRegistry.allows_grant(client, flow):
                    raise UnauthorizedClient(f"This client may not use the {flow} flow")
            scope = scopes.requested(params.get("scope"), client, kind.flows[0])
            request = replace(request, scope=scope)
            if request.openid:
                request = _with_openid_parameters(request, params, repeated)
                hint = params.get("id_token_hint")
                if hint:
                    request = replace(request, hinted_user=await self._id_tokens.hinted_subject(hint))
            elif kind.openid:
                raise InvalidRequest(f"response_type '{kind.name}' needs 'openid' in 'scope'")
            request = replace(request, acr=acr_request(client, params, request.openid))
            challenge = pkce.read_challenge(params, client) if kind.code else None
            launch = await self._smart.validate(params, client_id, scope, challenge)
        except OAuthError as error:
            raise AuthorizationError.of(error, request) from None
        return replace(request, challenge=challenge, launch=launch)

    async def next_step(
        self,
        request: AuthorizationRequest,
        user: Document | None,
        browser_session: Document | None,
        pending_login: str | None,
    ) -> Step:
        """What this browser needs before the answer (Core §3.1.2.3); under prompt=none, an
        AuthorizationError instead of any page. `pending_login` is the browser's pending 2FA login."""
        silent = prompt.NONE in request.prompt
        try:
            if user is None or browser_session is None:
                if not silent:
                    return Step.SIGN_IN
                if pending_login is not None and await self._pending_logins.get(pending_login) is not None:
                    raise InteractionRequired("The user's sign-in waits for the second factor")
                raise LoginRequired("The user is not signed in")
            if request.hinted_user is not None and request.hinted_user != user["id"]:
                # Core §3.1.2.1: never answer for another user than the hint's; the sign-in that
                # follows answers the hint (prompt.after_sign_in).
                if silent:
                    raise LoginRequired("The id_token_hint names another user than the one signed in")
                return Step.SIGN_IN
            if prompt.LOGIN in request.prompt:
                return Step.SIGN_IN
            now = int(self._clock().timestamp())
            if prompt.too_old(request.max_age, signed_in_at(browser_session), now):
                if silent:
                    raise LoginRequired("The user signed in longer ago than 'max_age' allows")
                return Step.SIGN_IN
            if request.acr is not None and not request.acr.met_by(sign_in_methods(browser_session).amr):
                if silent:
                    raise InteractionRequired("The request needs a second factor this sign-in has not given")
                return Step.STEP_UP
            if prompt.CONSENT in request.prompt:
                return Step.CONSENT
            if await self._consents.needed(request.client, user, request.scope):
                if silent:
                    raise ConsentRequired("The user has not consented to this client's request")
                return Step.CONSENT
        except OAuthError as error:
            raise AuthorizationError.of(error, request) from None
        return Step.COMPLETE

    async def complete(
        self, request: AuthorizationRequest, user: Document, browser_session: Document
    ) -> AuthorizationResponse:
        """Issue what the response type asks for, for `user` signed in by `browser_session`."""
        kind = request.kind
        amr = sign_in_methods(browser_session).amr
        authentication = (
            Authentication(
                signed_in_at(browser_session),
                browser_session["id"],
                request.nonce,
                amr,
                request.acr.claim(amr) if request.acr is not None else None,
            )
            if request.openid
            else None
        )
        params: dict[str, str] = {}
        if kind.code:
            try:
                context = await self._smart.context(request.launch, request.client["id"], user, request.scope)
            except OAuthError as error:
                return AuthorizationError.of(error, request).response()
            params["code"] = await self._codes.issue(
                client_id=request.client["id"],
                user_id=user["id"],
                redirect_uri=request.redirect_uri,
                scope=request.scope,
                challenge=request.challenge,
                parent_id=browser_session["id"],
                context=context,
                authentication=authentication,
            )
        if kind.token:
            issuance = Issuance(
                client=request.client,
                flow=IMPLICIT,
                user=user,
                scope=request.scope,
                parent_id=browser_session["id"],
            )
            response = await self._tokens.issue(issuance)
            params.update(
                access_token=response.access_token, token_type="bearer", expires_in=str(response.expires_in)
            )
        if kind.id_token:
            assert authentication is not None, "validate() refuses an id_token response type without openid"
            params["id_token"] = await self._id_tokens.sign(
                IdTokenRequest(
                    client=request.client,
                    user=user,
                    authentication=authentication,
                    lifetime=FlowConfig.of(request.client, IMPLICIT).access_token_expiration,
                    access_token=params.get("access_token"),
                    code=params.get("code"),
                    scope=request.scope,
                )
            )
        return request.respond(params)


def _repeated(name: str) -> str:
    return f"The parameter '{name}' is given more than once."


def _response_mode(value: str | None) -> ResponseMode | None:
    if not value:
        return None
    mode = response_mode(value)
    if mode is None:
        # Core §3.1.2.6: no way to know how the client wants to hear of it.
        raise UnsafeAuthorizationRequest("Unsupported 'response_mode'; use query, fragment or form_post")
    return mode


def _with_openid_parameters(
    request: AuthorizationRequest, params: Mapping[str, str], repeated: Collection[str]
) -> AuthorizationRequest:
    """The request with its OpenID Connect parameters read; InvalidRequest (or the request-object
    errors) when they are wrong."""
    given_twice = [name for name in OPENID_PARAMETERS if name in repeated]
    if given_twice:
        raise InvalidRequest(_repeated(given_twice[0]))
    # Core §6: discovery says request_parameter_supported and request_uri_parameter_supported false.
    if params.get("request"):
        raise RequestNotSupported("The 'request' parameter is not supported")
    if params.get("request_uri"):
        raise RequestUriNotSupported("The 'request_uri' parameter is not supported")
    nonce = params.get("nonce") or None
    if nonce is None and request.kind.id_token:
        # Core §3.2.2.1, §3.3.2.11: an ID token from this endpoint must be bound to the client's session.
        raise InvalidRequest(
            "Missing 'nonce': it is required when an ID token comes from the authorization endpoint"
        )
    if nonce is not None and len(nonce) > MAX_NONCE_CHARS:
        raise InvalidRequest(f"'nonce' is longer than {MAX_NONCE_CHARS} characters")
    return replace(
        request,
        nonce=nonce,
        prompt=prompt.read_prompt(params.get("prompt")),
        max_age=prompt.read_max_age(params.get("max_age")),
    )


def _redirect_uri(client: Document, given: str | None, flows: Collection[str]) -> str:
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
