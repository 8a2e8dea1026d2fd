"""Authorization codes: single-use records keyed by the code's SHA-256, taken atomically at exchange.

RFC 6749 §4.1.2: a code used twice is refused and the tokens issued from it are revoked. Taking the
code leaves a "used" record (until the code would have expired) that names the Session issued from
it; a second exchange marks that record and ends the Session. The first exchange re-reads the record
after creating its Session, so a reuse racing it still revokes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from fhirauth.auth.oauth_errors import InvalidGrant
from fhirauth.auth.oidc.claims import Authentication
from fhirauth.auth.pkce import CodeChallenge
from fhirauth.auth.sessions import SessionService
from fhirauth.clock import Clock
from fhirauth.resources.service import new_id
from fhirauth.security import issued_token, token_hash
from fhirauth.storage.base import Storage

Document = dict[str, Any]
T = TypeVar("T")

CODE_KIND = "authorization-code"
USED_CODE_KIND = "used-authorization-code"
# RFC 6749 §4.1.2 recommends at most 10 minutes; the browser hands the code over at once.
CODE_SECONDS = 60
_MARK_RETRIES = 5
MAX_CODE_CHARS = 256


@dataclass(frozen=True)
class AuthorizationCode:
    key: str
    client_id: str
    user_id: str
    redirect_uri: str
    scope: str | None
    challenge: CodeChallenge | None
    parent_id: str | None
    expires_at: datetime
    used_rev: int
    context: Document | None = None
    # The sign-in an OpenID code's ID token speaks of (scope with openid); None for plain OAuth.
    authentication: Authentication | None = None


class AuthorizationCodes:
    def __init__(self, storage: Storage, sessions: SessionService, clock: Clock) -> None:
        self._storage = storage
        self._sessions = sessions
        self._clock = clock

    async def issue(
        self,
        *,
        client_id: str,
        user_id: str,
        redirect_uri: str,
        scope: str | None,
        challenge: CodeChallenge | None,
        parent_id: str | None,
        context: Document | None = None,
        authentication: Authentication | None = None,
    ) -> str:
        code = issued_token()
        doc: Document = {"client": client_id, "user": user_id, "redirect_uri": redirect_uri}
        if scope:
            doc["scope"] = scope
        if challenge is not None:
            doc.update(challenge.as_dict())
        if parent_id:
            doc["parent"] = parent_id
        if context:
            doc["context"] = context
        if authentication is not None:
            doc["authentication"] = authentication.as_dict()
        expires_at = self._clock() + timedelta(seconds=CODE_SECONDS)
        await self._storage.record_put(
            CODE_KIND, token_hash(code), doc, expected_rev=None, expires_at=expires_at
        )
        return code

    async def redeem(self, code: str) -> AuthorizationCode:
        """Take the code: exactly one caller gets it. Any later caller revokes what the first one got."""
        if len(code) > MAX_CODE_CHARS:
            raise InvalidGrant("Invalid or expired authorization code")
        key = token_hash(code)
        record = await self._storage.record_take(CODE_KIND, key)
        if record is None:
            if await self._revoke_reused(key):
                raise InvalidGrant(
                    "Authorization code was already used; the tokens issued from it are revoked"
                )
            raise InvalidGrant("Invalid or expired authorization code")
        assert record.expires_at is not None
        used_rev = await self._storage.record_put(
            USED_CODE_KIND,
            key,
            {"sessions": [], "reused": False},
            expected_rev=None,
            expires_at=record.expires_at,
        )
        assert used_rev is not None, "a code taken once cannot have a used record yet"
        doc = record.document
        return AuthorizationCode(
            key=key,
            client_id=doc["client"],
            user_id=doc["user"],
            redirect_uri=doc["redirect_uri"],
            scope=doc.get("scope"),
            challenge=CodeChallenge.from_dict(doc),
            parent_id=doc.get("parent"),
            expires_at=record.expires_at,
            used_rev=used_rev,
            context=doc.get("context"),
            authentication=Authentication.from_dict(doc["authentication"])
            if "authentication" in doc
            else None,
        )

    async def exchange(self, code: AuthorizationCode, issue: Callable[[str], Awaitable[T]]) -> T:
        """Run `issue(session_id)` as the one exchange of a redeemed code; a reuse racing it revokes."""
        session_id = new_id()
        named = await self._storage.record_put(
            USED_CODE_KIND,
            code.key,
            {"sessions": [session_id], "reused": False},
            expected_rev=code.used_rev,
            expires_at=code.expires_at,
        )
        if named is None:
            raise InvalidGrant("Authorization code was already used")
        issued = await issue(session_id)
        used = await self._storage.record_get(USED_CODE_KIND, code.key)
        if used is not None and used.document.get("reused") is True:
            await self._sessions.end_by_id(session_id)
            raise InvalidGrant("Authorization code was already used; the tokens issued from it are revoked")
        return issued

    async def _revoke_reused(self, key: str) -> bool:
        for _ in range(_MARK_RETRIES):
            used = await self._storage.record_get(USED_CODE_KIND, key)
            if used is None:
                return False
            marked = await self._storage.record_put(
                USED_CODE_KIND,
                key,
                {**used.document, "reused": True},
                expected_rev=used.rev,
                expires_at=used.expires_at,
            )
            if marked is not None:
                for session_id in used.document.get("sessions", []):
                    await self._sessions.end_by_id(session_id)
                return True
        # Others kept marking it meanwhile: it was reused, and they revoke.
        return True
