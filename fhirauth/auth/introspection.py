"""Token introspection (RFC 7662): whether a token is active and what it stands for."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhirauth.auth.principal import Principal
from fhirauth.auth.sessions import SessionService

Document = dict[str, Any]

INACTIVE: Document = {"active": False}


class Introspection:
    def __init__(self, sessions: SessionService, issuer: str) -> None:
        self._sessions = sessions
        self._issuer = issuer

    async def introspect(self, token: str, hint: str | None) -> Document:
        """RFC 7662 §2.2: unknown, expired, revoked and orphaned tokens all answer just `active: false`."""
        held = await self._sessions.find_by_token(token, hint, with_user=True)
        if held is None:
            return dict(INACTIVE)
        field, found = held
        session = found.document
        if session.get("active") is not True:
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
        return body
