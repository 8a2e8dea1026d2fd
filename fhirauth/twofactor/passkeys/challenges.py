"""Ceremony challenges: storage records (kind `webauthn-challenge`) keyed by the SHA-256 of the
challenge itself, which the response carries in its clientDataJSON, so a finish finds its ceremony
without another cookie. Each holds the ceremony's purpose, user and binding (the sign-in, pending
login or browser it was made for); it expires after five minutes and is taken (read and deleted at
once) by the finish, so of two finishes racing with one ceremony exactly one gets it."""

from __future__ import annotations

import binascii
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from fhirauth.clock import Clock
from fhirauth.security import secrets_equal, token_hash
from fhirauth.storage.base import Storage
from fhirauth.twofactor.passkeys.errors import challenge_invalid
from fhirauth.twofactor.passkeys.responses import Document, b64url, challenge_of, unb64url

CHALLENGE_KIND = "webauthn-challenge"
CHALLENGE_SECONDS = 300


class Purpose(StrEnum):
    REGISTER = "register"
    # The second factor of a sign-in, a step-up, or the confirmation of a change: a known user.
    AUTHENTICATE = "authenticate"
    # A sign-in with a discoverable passkey alone: the user is whoever the passkey names.
    PASSWORDLESS = "passwordless"


@dataclass(frozen=True)
class Ceremony:
    """What a ceremony's finish must match: its purpose, the user (None for passwordless) and the
    binding (an opaque string naming the sign-in, pending login or browser that began it)."""

    purpose: Purpose
    binding: str
    user_id: str | None = None


class Challenges:
    def __init__(self, storage: Storage, clock: Clock) -> None:
        self._storage = storage
        self._clock = clock

    async def new(self, ceremony: Ceremony, **fields: Any) -> bytes:
        challenge = secrets.token_bytes(32)
        document = {
            "purpose": ceremony.purpose.value,
            "binding": token_hash(ceremony.binding),
            "user": ceremony.user_id,
            **fields,
        }
        expires_at = self._clock() + timedelta(seconds=CHALLENGE_SECONDS)
        await self._storage.record_put(
            CHALLENGE_KIND, token_hash(b64url(challenge)), document, expected_rev=None, expires_at=expires_at
        )
        return challenge

    async def take(self, credential: Document, ceremony: Ceremony) -> tuple[bytes, Document]:
        """The challenge the response names, spent: refused when it is unknown, used, expired, or
        made for another purpose, user or binding (it is spent all the same)."""
        challenge = challenge_of(credential)
        record = await self._storage.record_take(CHALLENGE_KIND, token_hash(challenge))
        if record is None:
            raise challenge_invalid()
        stored = record.document
        if (
            stored.get("purpose") != ceremony.purpose.value
            or stored.get("user") != ceremony.user_id
            or not secrets_equal(str(stored.get("binding", "")), token_hash(ceremony.binding))
        ):
            raise challenge_invalid()
        try:
            return unb64url(challenge), stored
        except (binascii.Error, ValueError):
            raise challenge_invalid() from None
