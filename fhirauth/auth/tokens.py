"""The token format, in one place: what an access or refresh token is, how long it lives, and the
Session that remembers it.

Access tokens are opaque random strings by default and JWTs when the client's flow says
`token_format: "jwt"` (RS256, or the flow's `token_signing_alg`). Refresh tokens are always opaque.
Either way storage keeps only hashes.
A grant that carries an OpenID sign-in (a code issued for the openid scope) also returns an ID token,
and so do its refreshes while their scope keeps openid (OpenID Connect Core §3.1.3.3, §12.2).
A refresh token is issued when the flow says `refresh_token: true` (Aidbox's rule), never for the
implicit flow (RFC 6749 §4.2.2).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from fhirauth.auth.flows import AUTHORIZATION_CODE, IMPLICIT, TOKEN_FLOWS, flow_settings
from fhirauth.auth.keys import ALGORITHM, ALGORITHMS, SigningKeys
from fhirauth.auth.oidc.claims import Authentication, IdTokenRequest
from fhirauth.auth.oidc.id_token import IdTokens
from fhirauth.auth.sessions import SessionService, reference
from fhirauth.clock import Clock, isoformat
from fhirauth.resources.secrets import redact
from fhirauth.resources.service import new_id
from fhirauth.security import issued_token, token_hash

Document = dict[str, Any]

DEFAULT_ACCESS_TOKEN_SECONDS = 3600
# What a refresh replaces on the Session.
_TOKEN_FIELDS = frozenset({"access_token", "refresh_token", "exp", "refresh_token_exp", "jti", "scope"})
# The flows whose tokens may come with an ID token, which lives as long as their access token.
_ID_TOKEN_FLOWS = (AUTHORIZATION_CODE, IMPLICIT)


@dataclass(frozen=True)
class FlowConfig:
    """Client.auth.<flow>: how tokens of one grant flow look and how long they live."""

    jwt: bool = False
    access_token_expiration: int = DEFAULT_ACCESS_TOKEN_SECONDS
    refresh_token: bool = False
    # Aidbox: "If not present, token will be expireless"; counted from issue or last use.
    refresh_token_expiration: int | None = None
    audience: tuple[str, ...] = ()
    # The JWT's signature (keys.ALGORITHMS); RS256 unless the flow's token_signing_alg says otherwise.
    signing_alg: str = ALGORITHM

    @classmethod
    def of(cls, client: Document, flow: str) -> FlowConfig:
        config = flow_settings(client, flow)
        access = config.get("access_token_expiration")
        refresh = config.get("refresh_token_expiration")
        audience = config.get("audience")
        signing_alg = config.get("token_signing_alg")
        return cls(
            jwt=config.get("token_format") == "jwt",
            access_token_expiration=access
            if isinstance(access, int) and access > 0
            else DEFAULT_ACCESS_TOKEN_SECONDS,
            refresh_token=config.get("refresh_token") is True and flow != IMPLICIT,
            refresh_token_expiration=refresh if isinstance(refresh, int) and refresh > 0 else None,
            audience=tuple(audience)
            if isinstance(audience, list)
            else (audience,)
            if isinstance(audience, str)
            else (),
            signing_alg=signing_alg if signing_alg in ALGORITHMS else ALGORITHM,
        )


def longest_jwt_lifetime(clients: Iterable[Document]) -> int:
    """The longest access-token lifetime of any JWT flow (or flow with ID tokens) of any client: how long
    a JWT signed now lives."""
    lifetimes = [
        config.access_token_expiration
        for client in clients
        for flow, config in ((flow, FlowConfig.of(client, flow)) for flow in TOKEN_FLOWS)
        if config.jwt or flow in _ID_TOKEN_FLOWS
    ]
    return max([DEFAULT_ACCESS_TOKEN_SECONDS, *lifetimes])


@dataclass(frozen=True)
class TokenResponse:
    """RFC 6749 §5.1 plus Aidbox's `userinfo`."""

    access_token: str
    expires_in: int
    refresh_token: str | None = None
    scope: str | None = None
    userinfo: Document | None = None
    token_type: str = "Bearer"
    id_token: str | None = None
    # SMART launch context (patient, encounter, fhirContext, …): top-level fields of the response.
    context: Document | None = None

    def as_dict(self) -> Document:
        body: Document = {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_in": self.expires_in,
        }
        for name in ("refresh_token", "scope", "userinfo", "id_token"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        if self.context:
            body.update(self.context)
        return body


@dataclass(frozen=True)
class Issuance:
    """What a grant decided: which client and user get tokens of which flow, with what scope."""

    client: Document
    flow: str
    user: Document | None = None
    scope: str | None = None
    audience: str | None = None
    parent_id: str | None = None
    session_id: str = field(default_factory=new_id)
    context: Document | None = None
    # The OpenID sign-in the grant carries: the response gets an ID token, the Session its auth_time.
    authentication: Authentication | None = None


@dataclass(frozen=True)
class _Tokens:
    access_token: str
    refresh_token: str | None
    fields: Document


class TokenIssuer:
    def __init__(
        self, sessions: SessionService, keys: SigningKeys, clock: Clock, issuer: str, id_tokens: IdTokens
    ) -> None:
        self._sessions = sessions
        self._keys = keys
        self._clock = clock
        self._issuer = issuer
        self._id_tokens = id_tokens

    @property
    def clock(self) -> Clock:
        """The clock tokens are dated by; a grant that is itself a sign-in dates it by the same."""
        return self._clock

    async def issue(self, issuance: Issuance) -> TokenResponse:
        client, user = issuance.client, issuance.user
        config = FlowConfig.of(client, issuance.flow)
        now = self._clock()
        subject = user["id"] if user is not None else client["id"]
        audience = issuance.audience or client["id"]
        tokens = await self._tokens(config, int(now.timestamp()), subject, audience, issuance.scope)
        session: Document = {
            "resourceType": "Session",
            "id": issuance.session_id,
            "type": issuance.flow,
            "active": True,
            "start": isoformat(now),
            "client": reference("Client", client["id"]),
            **tokens.fields,
        }
        if user is not None:
            session["user"] = reference("User", user["id"])
        if issuance.scope:
            session["scope"] = issuance.scope
        if issuance.audience:
            session["audience"] = issuance.audience
        if issuance.parent_id:
            session["parent"] = reference("Session", issuance.parent_id)
        if issuance.context:
            session["context"] = issuance.context
        if issuance.authentication is not None:
            session["auth_time"] = issuance.authentication.auth_time
            # How the user signed in, as the grant's ID token says, for its refreshes and introspection.
            if issuance.authentication.amr:
                session["amr"] = list(issuance.authentication.amr)
            if issuance.authentication.acr is not None:
                session["acr"] = issuance.authentication.acr
        await self._sessions.create(session)
        response = self._response(config, tokens, issuance.scope, user, issuance.context)
        return await self._with_id_token(response, config, client, user, issuance.authentication)

    async def rotate(
        self, session: Document, client: Document, user: Document | None, scope: str | None
    ) -> TokenResponse | None:
        """New access and refresh tokens for a refresh: the Session's old ones die with the swap.

        None when the Session changed meanwhile; AlreadyRotated (SessionService.rotate) when another
        refresh took the same token.
        """
        config = FlowConfig.of(client, session["type"])
        subject = user["id"] if user is not None else client["id"]
        audience = session.get("audience") or client["id"]
        tokens = await self._tokens(config, int(self._clock().timestamp()), subject, audience, scope)
        rotated = {k: v for k, v in session.items() if k not in _TOKEN_FIELDS}
        rotated.update(tokens.fields)
        if scope:
            rotated["scope"] = scope
        if await self._sessions.rotate(session, rotated) is None:
            return None
        response = self._response(config, tokens, scope, user, session.get("context"))
        return await self._with_id_token(response, config, client, user, _refreshed_sign_in(session, scope))

    async def _with_id_token(
        self,
        response: TokenResponse,
        config: FlowConfig,
        client: Document,
        user: Document | None,
        authentication: Authentication | None,
    ) -> TokenResponse:
        if authentication is None or user is None:
            return response
        request = IdTokenRequest(
            client=client,
            user=user,
            authentication=authentication,
            lifetime=config.access_token_expiration,
            access_token=response.access_token,
            scope=response.scope,
        )
        return replace(response, id_token=await self._id_tokens.sign(request))

    async def _tokens(
        self, config: FlowConfig, iat: int, subject: str, audience: str, scope: str | None
    ) -> _Tokens:
        exp = iat + config.access_token_expiration
        fields: Document = {"exp": exp}
        if config.jwt:
            jti = new_id()
            claims: Document = {
                "iss": self._issuer,
                "sub": subject,
                "aud": audience,
                "exp": exp,
                "iat": iat,
                "jti": jti,
            }
            if scope:
                claims["scope"] = scope
            access_token = await self._keys.sign(claims, config.signing_alg)
            fields["jti"] = jti
        else:
            access_token = issued_token()
        fields["access_token"] = token_hash(access_token)
        refresh_token = issued_token() if config.refresh_token else None
        if refresh_token is not None:
            fields["refresh_token"] = token_hash(refresh_token)
            if config.refresh_token_expiration is not None:
                fields["refresh_token_exp"] = iat + config.refresh_token_expiration
        return _Tokens(access_token, refresh_token, fields)

    @staticmethod
    def _response(
        config: FlowConfig,
        tokens: _Tokens,
        scope: str | None,
        user: Document | None,
        context: Document | None,
    ) -> TokenResponse:
        return TokenResponse(
            access_token=tokens.access_token,
            expires_in=config.access_token_expiration,
            refresh_token=tokens.refresh_token,
            scope=scope,
            userinfo=redact(user) if user is not None else None,
            context=context,
        )


def _refreshed_sign_in(session: Document, scope: str | None) -> Authentication | None:
    """The sign-in a refresh's ID token speaks of: the grant's, while the scope keeps openid. Core §12.2:
    the same auth_time, and no nonce (it belonged to the authorization request). Its session is the
    browser sign-in the grant came from, or (the password grant, a sign-in itself) the grant's own."""
    auth_time = session.get("auth_time")
    parent = session.get("parent")
    if not isinstance(auth_time, int) or scope is None:
        return None
    if "openid" not in scope.split(" "):
        return None
    amr, acr = session.get("amr"), session.get("acr")
    return Authentication(
        auth_time,
        parent["id"] if isinstance(parent, dict) else session["id"],
        amr=tuple(amr) if isinstance(amr, list) else (),
        acr=acr if isinstance(acr, str) else None,
    )
