"""Self-service signup: e-mail → Registration → confirmation link → password → a new User.

The answer to a signup never says whether the address already has an account: both cases send an
e-mail (a confirmation link, or a "you already have an account" note) and look the same to the form.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from fhirauth.auth.login import MAX_PASSWORD_CHARS
from fhirauth.clock import Clock, isoformat
from fhirauth.errors import PreconditionFailed
from fhirauth.notify import Notifier
from fhirauth.resources.service import ResourceService, new_id
from fhirauth.security import issued_token, secrets_equal, token_hash
from fhirauth.storage.base import Filter, Query

Document = dict[str, Any]

REGISTRATION_SECONDS = 24 * 3600
MIN_PASSWORD_CHARS = 8
MAX_EMAIL_CHARS = 254
MAX_CONTINUATION_CHARS = 4096
# Deliberately loose: one @, no spaces or control characters, a dot in the domain. The e-mail that
# follows is the real check.
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")

CONFIRMATION_SUBJECT = "Registration Confirmation"
EXISTING_ACCOUNT_SUBJECT = "You already have an account"


class SignupError(Exception):
    """A signup step refused; the message is meant for the person at the form."""


class InvalidEmail(SignupError):
    pass


class WeakPassword(SignupError):
    pass


class LinkInvalid(SignupError):
    """Unknown, wrong, expired or used: one answer for all, so the link tells nothing more."""

    def __init__(self, reason: str) -> None:
        super().__init__("This sign-up link is invalid, has expired or was already used.")
        self.reason = reason


class AccountExists(SignupError):
    def __init__(self) -> None:
        super().__init__("An account with this e-mail address already exists. Sign in instead.")


def normalize_email(raw: str) -> str:
    email = raw.strip().lower()
    if len(email) > MAX_EMAIL_CHARS or not _EMAIL.match(email):
        raise InvalidEmail("Enter a valid e-mail address.")
    return email


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise WeakPassword(f"The password must have at least {MIN_PASSWORD_CHARS} characters.")
    if len(password) > MAX_PASSWORD_CHARS:
        raise WeakPassword(f"The password must have at most {MAX_PASSWORD_CHARS} characters.")


class Signups:
    """`start(email, continuation)` sends the e-mail; `check` and `confirm` finish with the link."""

    def __init__(
        self,
        resources: ResourceService,
        notifier: Notifier,
        clock: Clock,
        *,
        base_url: str,
    ) -> None:
        self._resources = resources
        self._notifier = notifier
        self._clock = clock
        self._base_url = base_url.rstrip("/")

    async def start(self, raw_email: str, continuation: str) -> Document | None:
        """Send the confirmation (or existing-account) e-mail; returns the Registration, if one was made.

        `continuation` is the local URL to go to once the user is signed in (stored, never in the link).
        """
        email = normalize_email(raw_email)
        if len(continuation) > MAX_CONTINUATION_CHARS:
            continuation = ""
        if await self._user_with_email(email) is not None:
            await self._notifier.send(email, EXISTING_ACCOUNT_SUBJECT, self._existing_account_text(email))
            return None
        token = issued_token()
        expires = self._clock() + timedelta(seconds=REGISTRATION_SECONDS)
        registration = await self._resources.create(
            "Registration",
            {
                "status": "active",
                "email": email,
                "token": token_hash(token),
                "expires": isoformat(expires),
                "params": {"continuation": continuation},
            },
        )
        doc = registration.resource
        await self._notifier.send(email, CONFIRMATION_SUBJECT, self._confirmation_text(doc, token, expires))
        return doc

    def confirmation_link(self, registration_id: str, token: str) -> str:
        return f"{self._base_url}/auth/signup/confirm/{quote(registration_id, safe='')}?token={quote(token)}"

    async def check(self, registration_id: str, token: str) -> Document:
        """The active, unexpired Registration this link opens, or LinkInvalid."""
        stored = await self._resources.find("Registration", registration_id)
        if stored is None:
            raise LinkInvalid("unknown")
        registration = stored.document
        stored_hash = registration.get("token")
        if not isinstance(stored_hash, str) or not secrets_equal(token_hash(token), stored_hash):
            raise LinkInvalid("wrong-token")
        if registration.get("status") != "active":
            raise LinkInvalid("used")
        if self._clock() >= _parse_time(registration.get("expires")):
            raise LinkInvalid("expired")
        return registration

    async def confirm(self, registration_id: str, token: str, password: str) -> tuple[Document, str]:
        """Set the password: create the User and use up the link. Returns (user, continuation)."""
        check_password(password)
        registration = await self.check(registration_id, token)
        if await self._user_with_email(registration["email"]) is not None:
            raise AccountExists()
        user_id = new_id()
        activated = {
            **registration,
            "status": "activated",
            "resource": {"resourceType": "User", "id": user_id},
        }
        try:
            # Compare-and-set: of two confirmations racing with the same link, one wins.
            await self._resources.save(activated, int(registration["meta"]["versionId"]))
        except PreconditionFailed:
            raise LinkInvalid("used") from None
        user = (
            await self._resources.create(
                "User", {"email": registration["email"], "password": password}, id=user_id
            )
        ).resource
        params = registration.get("params")
        continuation = params.get("continuation", "") if isinstance(params, dict) else ""
        return user, continuation if isinstance(continuation, str) else ""

    async def _user_with_email(self, email: str) -> Document | None:
        query = Query(filters=(Filter("email", (email,)),), limit=1, count_total=False)
        page = await self._resources.storage.search("User", query)
        return page.items[0] if page.items else None

    def _confirmation_text(self, registration: Document, token: str, expires: datetime) -> str:
        return (
            "Hello,\n\n"
            "someone (hopefully you) asked to create an account with this e-mail address.\n"
            "To finish, open this link and choose a password:\n\n"
            f"{self.confirmation_link(registration['id'], token)}\n\n"
            f"The link works once and expires at {isoformat(expires)}.\n"
            "If you did not ask for an account, ignore this e-mail.\n"
        )

    def _existing_account_text(self, email: str) -> str:
        return (
            "Hello,\n\n"
            f"someone asked to create an account for {email}, but this address already has one.\n"
            "Sign in here instead:\n\n"
            f"{self._base_url}/auth/login\n\n"
            "If that was not you, ignore this e-mail; nothing was changed.\n"
        )


def _parse_time(value: Any) -> datetime:
    # A Registration without a readable expiry counts as expired.
    if not isinstance(value, str):
        return datetime.min.replace(tzinfo=UTC)
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
