"""Signing in with a password, and the pending logins that wait for the second factor."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from fhirauth.auth.bruteforce import Outcome, PasswordLockout
from fhirauth.auth.oidc.prompt import after_sign_in
from fhirauth.auth.passwords import PasswordHasher
from fhirauth.clock import Clock
from fhirauth.ratelimit import Limit, RateLimiter
from fhirauth.resources.service import ResourceService
from fhirauth.security import issued_token, token_hash
from fhirauth.storage.base import Filter, Query, Storage

Document = dict[str, Any]

PENDING_LOGIN_KIND = "pending-login"
PENDING_LOGIN_SECONDS = 300
# Longer input is refused before any lookup or hashing: no real username or password is this long.
MAX_USERNAME_CHARS = 256
MAX_PASSWORD_CHARS = 1024

RefusalReason = Literal["unknown-user", "wrong-password", "locked", "inactive", "malformed"]


class LoginRefused(Exception):
    """The credentials do not sign anyone in. `reason` is for the audit trail, never for the page.

    `locked_until` is set when this refusal locked the account, or found it locked.
    """

    def __init__(
        self, reason: RefusalReason, user: Document | None = None, *, locked_until: datetime | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.user = user
        self.locked_until = locked_until


def is_inactive(user: Document) -> bool:
    # `active: false` is Aidbox's deprecated spelling of `inactive: true`.
    return user.get("inactive") is True or user.get("active") is False


def has_two_factor(user: Document) -> bool:
    two_factor = user.get("twoFactor")
    return isinstance(two_factor, dict) and two_factor.get("enabled") is True


class Logins:
    """The one password check behind the login page and the password grant, with its abuse limits.

    `account_limit` counts every attempt per typed username (known or not, so it tells nothing);
    `lockout` (None: brute-force protection off) counts consecutive failures per existing account.
    """

    def __init__(
        self,
        resources: ResourceService,
        passwords: PasswordHasher,
        limiter: RateLimiter,
        account_limit: Limit,
        lockout: PasswordLockout | None,
    ) -> None:
        self._resources = resources
        self._passwords = passwords
        self._limiter = limiter
        self._account_limit = account_limit
        self._lockout = lockout
        if lockout is not None:
            resources.on_change("User", self._after_user_change)

    async def find_user(self, username: str) -> Document | None:
        """The User whose email, userName or id is `username` (in that order)."""
        # Signup stores addresses in lower case; people type them as they like.
        emails = (username, username.lower()) if username != username.lower() else (username,)
        for path, values in (("email", emails), ("userName", (username,))):
            query = Query(filters=(Filter(path, values),), limit=1, count_total=False)
            page = await self._resources.storage.search("User", query)
            if page.items:
                return page.items[0]
        stored = await self._resources.find("User", username)
        return stored.document if stored is not None else None

    async def check_password(self, username: str, password: str) -> Document:
        """The User these credentials sign in, or LoginRefused (RateLimited past the account limit).

        Unknown users, wrong passwords and locked accounts cost the same one Argon2 verification and
        get the same refusal, so neither timing nor wording tells which accounts exist or are locked.
        Whether a user is inactive is told only to someone with the password.
        """
        if (
            not username
            or not password
            or len(username) > MAX_USERNAME_CHARS
            or len(password) > MAX_PASSWORD_CHARS
        ):
            raise LoginRefused("malformed")
        await self._limiter.hit(self._account_limit, username.lower())
        user = await self.find_user(username)
        stored_hash = user.get("password") if user is not None else None
        if user is None or not isinstance(stored_hash, str):
            await self._passwords.verify_dummy_async()
            raise LoginRefused("unknown-user", user)
        await self._verify(user, stored_hash, password)
        if is_inactive(user):
            raise LoginRefused("inactive", user)
        return user

    async def _verify(self, user: Document, stored_hash: str, password: str) -> None:
        if self._lockout is None:
            if not await self._passwords.verify_async(stored_hash, password):
                raise LoginRefused("wrong-password", user)
            return

        # The hash's room in the queue is taken before the attempt is counted: a busy server answers
        # 503 without bringing the account closer to its lockout.
        async with self._passwords.admitted() as verify:
            verdict = await self._lockout.attempt(user["id"], lambda: verify(stored_hash, password))
        if verdict.outcome is Outcome.LOCKED:
            # Even the right password is refused, as slowly as a wrong one.
            await self._passwords.verify_dummy_async()
            raise LoginRefused("locked", user, locked_until=verdict.locked_until)
        if not verdict.accepted:
            raise LoginRefused("wrong-password", user, locked_until=verdict.locked_until)

    async def _after_user_change(self, before: Document | None, after: Document | None) -> None:
        """A new password (an administrator's reset) lifts the brute-force lock."""
        assert self._lockout is not None
        if before is None or after is None or before.get("password") == after.get("password"):
            return
        await self._lockout.reset(after["id"])


@dataclass(frozen=True)
class PendingLogin:
    """A password accepted for `user_id`; the second factor still to come."""

    id: str
    user_id: str
    continuation: str
    document: Document
    rev: int


class PendingLogins:
    """Short-lived records (kind "pending-login", 300 s by the injected clock) keyed by a token hash.

    The id travels in the `fhirauth_pending` cookie; storage keeps only its SHA-256, so reading the
    records gives no way to take over a login in progress.
    """

    def __init__(self, storage: Storage, clock: Clock) -> None:
        self._storage = storage
        self._clock = clock

    async def create(self, user_id: str, continuation: str, **fields: Any) -> str:
        """A pending login for `user_id`; `fields` say what it started from (the methods done so far,
        the sign-in a step-up raises)."""
        pending_id = issued_token()
        document = {**fields, "user": user_id, "continuation": continuation, "webhookSent": False}
        expires_at = self._clock() + timedelta(seconds=PENDING_LOGIN_SECONDS)
        await self._storage.record_put(
            PENDING_LOGIN_KIND, token_hash(pending_id), document, expected_rev=None, expires_at=expires_at
        )
        return pending_id

    async def get(self, pending_id: str) -> PendingLogin | None:
        record = await self._storage.record_get(PENDING_LOGIN_KIND, token_hash(pending_id))
        if record is None:
            return None
        return _pending(pending_id, record.document, record.rev)

    async def mark(self, pending_id: str, **fields: Any) -> bool:
        """Set `fields` on the pending login if nobody changed it since it was read; True when written."""
        record = await self._storage.record_get(PENDING_LOGIN_KIND, token_hash(pending_id))
        if record is None:
            return False
        written = await self._storage.record_put(
            PENDING_LOGIN_KIND,
            token_hash(pending_id),
            {**record.document, **fields},
            expected_rev=record.rev,
            expires_at=record.expires_at,
        )
        return written is not None

    async def take(self, pending_id: str) -> PendingLogin | None:
        """Remove and return it: exactly one caller finishes a given pending login."""
        record = await self._storage.record_take(PENDING_LOGIN_KIND, token_hash(pending_id))
        if record is None:
            return None
        return _pending(pending_id, record.document, record.rev)


def _pending(pending_id: str, document: Document, rev: int) -> PendingLogin:
    return PendingLogin(pending_id, document["user"], document["continuation"], document, rev)


DEFAULT_CONTINUATION = "/auth/two-factor"
_MAX_REDIRECT_CHARS = 2048


def local_path(value: str, base_url: str) -> str | None:
    """`value` as a path on this server, or None when it could lead anywhere else.

    Accepts "/path?query" (not "//host", not "/\\host": browsers read both as another host) and
    absolute URLs on the server's own origin (Aidbox clients send those). Any control character,
    space or backslash refuses the value: browsers drop or rewrite them, turning "/\\t/evil" into "//evil".
    """
    if not value or len(value) > _MAX_REDIRECT_CHARS:
        return None
    if any(ch <= " " or ch == "\x7f" or ch == "\\" for ch in value):
        return None
    if value.startswith("/"):
        return None if value.startswith("//") else value
    try:
        parts, own = urlsplit(value), urlsplit(base_url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    if (parts.scheme.lower(), parts.netloc.lower()) != (own.scheme.lower(), own.netloc.lower()):
        return None
    path = parts.path or "/"
    if not path.startswith("/") or path.startswith("//"):
        return None
    return (
        path + (f"?{parts.query}" if parts.query else "") + (f"#{parts.fragment}" if parts.fragment else "")
    )


def decode_redirect_to(value: str, base_url: str) -> str | None:
    """`redirect_to` as sent to /auth/login: a local URL, plain or base64(url)-encoded (Aidbox)."""
    plain = local_path(value, base_url)
    if plain is not None:
        return plain
    compact = value.strip().rstrip("=")
    if not compact or len(compact) > _MAX_REDIRECT_CHARS:
        return None
    padded = compact + "=" * (-len(compact) % 4)
    for altchars in (b"-_", b"+/"):
        try:
            decoded = base64.b64decode(padded, altchars=altchars, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        return local_path(decoded, base_url)
    return None


def continuation_for(params: Mapping[str, str], query: str, base_url: str) -> str:
    """Where a sign-in goes next: back to /auth/authorize with the client's query (less the prompt=login
    and max_age this sign-in answers), else `redirect_to`, else the two-factor settings page."""
    if params.get("client_id"):
        return f"/auth/authorize?{after_sign_in(query)}"
    redirect_to = params.get("redirect_to")
    if redirect_to:
        target = decode_redirect_to(redirect_to, base_url)
        if target is not None:
            return target
    return DEFAULT_CONTINUATION
