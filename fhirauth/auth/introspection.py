"""Token introspection (RFC 7662): whether a token is active and what it stands for.

RFC 7662 §2.1 leaves it to the server which tokens a caller may introspect: its own (the root client
every token), and those of the clients its `introspect_clients` names (`["*"]`: every token), so a
resource server serving several clients can check all of theirs. Any other token answers exactly
as an unknown one does, so a client cannot learn that another client's token exists.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhirauth.auth.oidc.amr import acr_of
from fhirauth.auth.principal import Principal
from fhirauth.auth.sessions import SessionService, client_of

Document = dict[str, Any]

INACTIVE: Document = {"active": False}
EVERY_CLIENT = "*"


class Introspection:
    def __init__(self, sessions: SessionService, issuer: str) -> None:
        self._sessions = sessions
        self._issuer = issuer

    async def introspect(self, token: str, hint: str | None, client: Document) -> Document:
        """What `client` may learn of `token`. RFC 7662 §2.2: unknown, expired, revoked and orphaned
        tokens, and those it may not introspect, all answer just `active: false`."""
        held = await self._sessions.find_by_token(token, hint, with_user=True)
        if held is None:
            return dict(INACTIVE)
        field, found = held
        session = found.document
        if session.get("active") is not True or not self._may_introspect(client, session):
            return dict(INACTIVE)
        is_refresh = field == "refresh_token"
        if is_refresh:
            exp = session.get("refresh_token_exp")
            if isinstance(exp, int) and exp <= self._sessions.now():
                return dict(INACTIVE)
        elif not self._sessions.is_live(session):
            return dict(INACTIVE)
        principal = await self._sessions.principal(session, user=found.referenced)
        if principal is None:
            return dict(INACTIVE)
        return self._claims(session, principal, is_refresh)

    def _may_introspect(self, client: Document, session: Document) -> bool:
        # The caller's Client was read by its authentication: this check costs no storage read.
        if self._sessions.held_by(session, client):
            return True
        allowed = client.get("introspect_clients")
        return isinstance(allowed, list) and (EVERY_CLIENT in allowed or client_of(session) in allowed)

    def _claims(self, session: Document, principal: Principal, is_refresh: bool) -> Document:
        # The Session is written when its current tokens are issued (at start or at the last refresh).
        issued = datetime.fromisoformat(session["meta"]["lastUpdated"])
        body: Document = {"active": True}
        if principal.client_id is not None:
            body["client_id"] = principal.client_id
        if principal.user is not None:
            username = principal.user.get("userName") or principal.user.get("email")
            if isinstance(username, str):
                body["username"] = username
        body["sub"] = principal.user_id or principal.client_id
        if session.get("scope"):
            body["scope"] = session["scope"]
        exp = session.get("refresh_token_exp" if is_refresh else "exp")
        if isinstance(exp, int):
            body["exp"] = exp
        body["iat"] = int(issued.timestamp())
        body["token_type"] = "refresh_token" if is_refresh else "Bearer"
        body["iss"] = self._issuer
        audience = session.get("audience") or principal.client_id
        if audience is not None:
            body["aud"] = audience
        if session.get("jti") and not is_refresh:
            body["jti"] = session["jti"]
        # How the user signed in, for the tokens of an OpenID sign-in, as their ID token says.
        amr = session.get("amr")
        if isinstance(amr, list) and amr:
            body["amr"] = amr
            acr = session.get("acr")
            body["acr"] = acr if isinstance(acr, str) else acr_of(amr)
        # SMART (token-introspection.md): the launch context, as the token response gave it.
        context = session.get("context")
        if isinstance(context, dict):
            body.update({name: value for name, value in context.items() if name not in body})
        return body
