"""Passkeys and security keys (WebAuthn Level 3) as a second factor and for passwordless sign-in.

py_webauthn checks each response (challenge, origin, rpIdHash, flags, signature, attestation);
this module adds what a relying party must (reference §6.3):

* Challenges are storage records (kind `webauthn-challenge`) keyed by the SHA-256 of the challenge
  itself, which the response carries in its clientDataJSON: a finish finds its ceremony without
  another cookie. Each holds the ceremony's purpose, user and binding (the sign-in, pending login or
  browser it was made for); it expires after five minutes and is taken (read and deleted at once)
  by the finish, so of two finishes racing with one ceremony exactly one gets it.
* Credentials are WebAuthnCredential resources whose id is the SHA-256 (hex) of the credential id:
  a sign-in reads the one it names, verifies one signature, and stores the new counter by
  compare-and-set.
* The counter rule, in one place (`_counter_refused`): when the stored or the new counter is above
  0, the new one must be above the stored one; otherwise the use is refused and audited as a
  possible cloned authenticator. The library's own check is given 0 so that this rule, after the
  signature is known good, is the one that decides and audits.
* amr: `hwk` for a credential bound to its device, `swk` for one that may be synced (its
  backup-eligible flag); a passkey that verified its user is two factors (fhirauth/auth/oidc/amr.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import orjson
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import options_to_json_dict
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from fhirauth.auth.grants.base import TokenRequest
from fhirauth.auth.grants.password import PasswordGrantCheck
from fhirauth.auth.login import has_two_factor
from fhirauth.auth.oauth_errors import InvalidGrant
from fhirauth.auth.oidc.amr import HWK, SWK
from fhirauth.clock import Clock, isoformat
from fhirauth.errors import BadRequest, Conflict
from fhirauth.resources.service import ResourceService
from fhirauth.security import secrets_equal, token_hash
from fhirauth.storage.base import Filter, Query, Replace, VersionConflict
from fhirauth.twofactor.config import TwoFactorConfig
from fhirauth.twofactor.service import Audit, TwoFactorError

Document = dict[str, Any]

RESOURCE = "WebAuthnCredential"
CHALLENGE_KIND = "webauthn-challenge"
CHALLENGE_SECONDS = 300
MAX_NAME_CHARS = 64
MAX_PASSKEYS = 20
# A credential response is a few hundred bytes; attestation certificates make a few kilobytes.
_MAX_CREDENTIAL_CHARS = 64 * 1024
_USER_HANDLE_BYTES = 32
_TRANSPORTS = frozenset(transport.value for transport in AuthenticatorTransport)


class Purpose(StrEnum):
    REGISTER = "register"
    # The second factor of a sign-in, a step-up, or the confirmation of a change: a known user.
    AUTHENTICATE = "authenticate"
    # A sign-in with a discoverable passkey alone: the user is whoever the passkey names.
    PASSWORDLESS = "passwordless"


class PasskeyError(TwoFactorError):
    """A refused ceremony, in the two-factor operations' wire shape (422 `{error, error_description}`)."""


def challenge_invalid() -> PasskeyError:
    return PasskeyError("challenge_invalid", "The passkey request is unknown, used or expired; start again")


def passkey_refused() -> PasskeyError:
    return PasskeyError("passkey_refused", "The passkey's response could not be verified")


def unknown_passkey() -> PasskeyError:
    return PasskeyError("unknown_passkey", "This passkey is not registered for this account")


def counter_rollback() -> PasskeyError:
    return PasskeyError(
        "passkey_refused", "The passkey's signature counter went backwards; it may have been copied"
    )


def already_registered() -> PasskeyError:
    return PasskeyError("already_registered", "This passkey is already registered")


def too_many() -> PasskeyError:
    return PasskeyError("too_many_passkeys", f"At most {MAX_PASSKEYS} passkeys per account")


@dataclass(frozen=True)
class RelyingParty:
    id: str
    origins: tuple[str, ...]

    @classmethod
    def of(cls, base_url: str, rp_id: str | None = None, origins: list[str] | None = None) -> RelyingParty:
        """rpId from the base URL's host unless set; the expected origins are the base URL's own
        unless listed (a single-page app served from another origin under the same domain)."""
        parts = urlsplit(base_url)
        own = f"{parts.scheme}://{parts.netloc}"
        return cls(rp_id or (parts.hostname or ""), tuple(origins or (own,)))


@dataclass(frozen=True)
class Ceremony:
    """What a ceremony's finish must match: its purpose, the user (None for passwordless) and the
    binding (an opaque string naming the sign-in, pending login or browser that began it)."""

    purpose: Purpose
    binding: str
    user_id: str | None = None


@dataclass(frozen=True)
class PasskeyUse:
    """A verified assertion: whose passkey, which one, the amr method it gives, and whether the
    authenticator verified the user."""

    user_id: str
    passkey_id: str
    method: str
    user_verified: bool


def passkey_method(credential: Document) -> str:
    """RFC 8176: a synced passkey's private key leaves the device (`swk`); a device-bound one's
    does not (`hwk`)."""
    return SWK if credential.get("backupEligible") is True else HWK


def passkey_id(raw_credential_id: bytes) -> str:
    return hashlib.sha256(raw_credential_id).hexdigest()


def check_name(name: object) -> str:
    """A passkey's label: 1 to 64 characters, no control characters."""
    if not isinstance(name, str) or not name.strip():
        raise BadRequest("Give the passkey a name", "name")
    name = name.strip()
    if len(name) > MAX_NAME_CHARS or any(ch < " " or "\x7f" <= ch <= "\x9f" for ch in name):
        raise BadRequest(
            f"A passkey name has at most {MAX_NAME_CHARS} characters, none of them control characters", "name"
        )
    return name


def visible(credential: Document) -> Document:
    """What the settings page and the JSON list show of a credential."""
    return {
        "id": credential["id"],
        "name": credential.get("name"),
        "created": credential.get("created"),
        "lastUsed": credential.get("lastUsed"),
        "transports": credential.get("transports", []),
        "synced": credential.get("backupEligible") is True,
    }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _parsed(credential: object) -> Document:
    """The credential JSON as an object (it may come as a string, from a form field)."""
    if isinstance(credential, str):
        if len(credential) > _MAX_CREDENTIAL_CHARS:
            raise passkey_refused()
        try:
            credential = orjson.loads(credential)
        except orjson.JSONDecodeError:
            raise passkey_refused() from None
    if not isinstance(credential, dict):
        raise passkey_refused()
    return credential


def _challenge_of(credential: Document) -> str:
    """The challenge the response signed, read from its clientDataJSON; the library checks the rest."""
    response = credential.get("response")
    client_data = response.get("clientDataJSON") if isinstance(response, dict) else None
    if not isinstance(client_data, str) or len(client_data) > _MAX_CREDENTIAL_CHARS:
        raise passkey_refused()
    try:
        parsed = orjson.loads(_unb64url(client_data))
    except (binascii.Error, ValueError):
        raise passkey_refused() from None
    challenge = parsed.get("challenge") if isinstance(parsed, dict) else None
    if not isinstance(challenge, str) or not challenge:
        raise passkey_refused()
    return challenge


def _raw_id(credential: Document) -> bytes:
    raw = credential.get("rawId")
    if not isinstance(raw, str) or not raw or len(raw) > 2048:
        raise passkey_refused()
    try:
        return _unb64url(raw)
    except (binascii.Error, ValueError):
        raise passkey_refused() from None


def _counter_refused(stored: int, new: int) -> bool:
    """WebAuthn L3 §6.1.1: a counter that does not grow, when the authenticator keeps one, is a
    sign that the credential was copied."""
    return (new > 0 or stored > 0) and new <= stored


class PasskeyService:
    def __init__(
        self,
        resources: ResourceService,
        audit: Audit,
        clock: Clock,
        rp: RelyingParty,
        config: Callable[[], Awaitable[TwoFactorConfig]],
    ) -> None:
        self._resources = resources
        self._storage = resources.storage
        self._audit = audit
        self._clock = clock
        self.rp = rp
        self._config = config
        self._off_hooks: list[Callable[[str], Awaitable[object]]] = []
        resources.on_change("User", self._after_user_change)

    def on_two_factor_off(self, hook: Callable[[str], Awaitable[object]]) -> None:
        """Call `hook(user_id)` when a user removes her last passkey and has no TOTP: what stood in
        for her second factor (trusted devices) must go with it."""
        self._off_hooks.append(hook)

    # Reading

    async def passkeys(self, user_id: str) -> list[Document]:
        query = Query(filters=(Filter("user.id", (user_id,)),), limit=MAX_PASSKEYS, count_total=False)
        page = await self._storage.search(RESOURCE, query)
        return sorted(page.items, key=lambda item: str(item.get("created", "")))

    async def has_passkeys(self, user_id: str) -> bool:
        query = Query(filters=(Filter("user.id", (user_id,)),), limit=1, count_total=False)
        return bool((await self._storage.search(RESOURCE, query)).items)

    # Challenges

    async def _new_challenge(self, ceremony: Ceremony, **fields: Any) -> bytes:
        challenge = secrets.token_bytes(32)
        document = {
            "purpose": ceremony.purpose.value,
            "binding": token_hash(ceremony.binding),
            "user": ceremony.user_id,
            **fields,
        }
        expires_at = self._clock() + timedelta(seconds=CHALLENGE_SECONDS)
        await self._storage.record_put(
            CHALLENGE_KIND, token_hash(_b64url(challenge)), document, expected_rev=None, expires_at=expires_at
        )
        return challenge

    async def _take_challenge(self, credential: Document, ceremony: Ceremony) -> tuple[bytes, Document]:
        """The challenge the response names, spent: refused when it is unknown, used, expired, or
        made for another purpose, user or binding (it is spent all the same)."""
        challenge = _challenge_of(credential)
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
            return _unb64url(challenge), stored
        except (binascii.Error, ValueError):
            raise challenge_invalid() from None

    # Registration

    async def registration_options(self, user: Document, *, binding: str) -> Document:
        existing = await self.passkeys(user["id"])
        if len(existing) >= MAX_PASSKEYS:
            raise too_many()
        handle = next((c["userHandle"] for c in existing if isinstance(c.get("userHandle"), str)), None)
        handle = handle or _b64url(secrets.token_bytes(_USER_HANDLE_BYTES))
        challenge = await self._new_challenge(
            Ceremony(Purpose.REGISTER, binding, user["id"]), userHandle=handle
        )
        label = user.get("email") or user.get("userName") or user["id"]
        options = generate_registration_options(
            rp_id=self.rp.id,
            rp_name=(await self._config()).issuer,
            user_name=label,
            user_id=_unb64url(handle),
            user_display_name=user.get("displayName") or label,
            challenge=challenge,
            timeout=CHALLENGE_SECONDS * 1000,
            # Discoverable when the authenticator can, so the same passkey also signs in without a
            # password; a security key without room for one still serves as a second factor.
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
            exclude_credentials=[_descriptor(c) for c in existing],
        )
        return options_to_json_dict(options)

    async def register(
        self, user_id: str, credential: object, name: object, *, binding: str, ip: str | None = None
    ) -> Document:
        label = check_name(name)
        parsed = _parsed(credential)
        challenge, ceremony = await self._take_challenge(parsed, Ceremony(Purpose.REGISTER, binding, user_id))
        try:
            verified = verify_registration_response(
                credential=parsed,
                expected_challenge=challenge,
                expected_rp_id=self.rp.id,
                expected_origin=list(self.rp.origins),
            )
        except (WebAuthnException, ValueError, KeyError, TypeError) as error:
            await self._audit.record(
                "passkey-registration-refused",
                "failure",
                user=user_id,
                ip=ip,
                detail={"reason": str(error)[:200]},
            )
            raise passkey_refused() from None
        response = parsed.get("response")
        transports = response.get("transports") if isinstance(response, dict) else None
        attachment = parsed.get("authenticatorAttachment")
        now = isoformat(self._clock())
        document: Document = {
            "resourceType": RESOURCE,
            "user": {"resourceType": "User", "id": user_id},
            "name": label,
            "credentialId": _b64url(verified.credential_id),
            "publicKey": _b64url(verified.credential_public_key),
            "signCount": verified.sign_count,
            "userHandle": ceremony["userHandle"],
            "transports": sorted({t for t in transports if t in _TRANSPORTS})
            if isinstance(transports, list)
            else [],
            "aaguid": verified.aaguid,
            "backupEligible": verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE,
            "backedUp": verified.credential_backed_up,
            "userVerified": verified.user_verified,
            "created": now,
        }
        if attachment in ("platform", "cross-platform"):
            document["attachment"] = attachment
        id = passkey_id(verified.credential_id)
        try:
            written = await self._resources.create(RESOURCE, document, id=id, administrator=True)
        except Conflict:
            raise already_registered() from None
        await self._audit.record(
            "passkey-registered", "success", user=user_id, ip=ip, detail={"passkey": id, "name": label}
        )
        return written.resource

    # Authentication

    async def authentication_options(self, ceremony: Ceremony) -> Document:
        if ceremony.purpose is Purpose.REGISTER:
            raise ValueError("registration has options of its own")
        allowed: list[PublicKeyCredentialDescriptor] = []
        if ceremony.user_id is not None:
            allowed = [_descriptor(c) for c in await self.passkeys(ceremony.user_id)]
            if not allowed:
                raise unknown_passkey()
        challenge = await self._new_challenge(ceremony)
        options = generate_authentication_options(
            rp_id=self.rp.id,
            challenge=challenge,
            timeout=CHALLENGE_SECONDS * 1000,
            allow_credentials=allowed,
            # Without a password, the passkey must be two factors by itself.
            user_verification=UserVerificationRequirement.REQUIRED
            if ceremony.purpose is Purpose.PASSWORDLESS
            else UserVerificationRequirement.PREFERRED,
        )
        return options_to_json_dict(options)

    async def authenticate(
        self, credential: object, ceremony: Ceremony, *, ip: str | None = None, client: str | None = None
    ) -> PasskeyUse:
        """Verify an assertion for `ceremony`: one challenge taken, one credential read, one
        signature verified, one compare-and-set of the counter."""
        parsed = _parsed(credential)
        challenge, _ = await self._take_challenge(parsed, ceremony)
        id = passkey_id(_raw_id(parsed))
        stored = await self._storage.get(RESOURCE, id)
        owner = (
            stored.document.get("user", {}).get("id") if stored is not None and not stored.deleted else None
        )
        if stored is None or owner is None or (ceremony.user_id is not None and owner != ceremony.user_id):
            await self._refused(ceremony.user_id, ip, client, {"reason": "unknown-passkey", "passkey": id})
            raise unknown_passkey()
        document = stored.document
        passwordless = ceremony.purpose is Purpose.PASSWORDLESS
        if passwordless and not _same_user_handle(parsed, document):
            await self._refused(owner, ip, client, {"reason": "user-handle", "passkey": id})
            raise unknown_passkey()
        try:
            verified = verify_authentication_response(
                credential=parsed,
                expected_challenge=challenge,
                expected_rp_id=self.rp.id,
                expected_origin=list(self.rp.origins),
                credential_public_key=_unb64url(document["publicKey"]),
                # 0 turns the library's counter check off: `_counter_refused` decides, and audits.
                credential_current_sign_count=0,
                require_user_verification=passwordless,
            )
        except (WebAuthnException, ValueError, KeyError, TypeError) as error:
            await self._refused(owner, ip, client, {"reason": str(error)[:200], "passkey": id})
            raise passkey_refused() from None
        stored_count = int(document.get("signCount", 0))
        if _counter_refused(stored_count, verified.new_sign_count):
            await self._audit.record(
                "passkey-counter-rollback",
                "failure",
                user=owner,
                client=client,
                ip=ip,
                detail={"passkey": id, "stored": stored_count, "received": verified.new_sign_count},
            )
            raise counter_rollback()
        updated = {
            **document,
            "signCount": verified.new_sign_count,
            "backedUp": verified.credential_backed_up,
            "lastUsed": isoformat(self._clock()),
        }
        version = stored.version + 1
        updated["meta"] = {**document["meta"], "versionId": str(version), "lastUpdated": updated["lastUsed"]}
        try:
            # The document is the stored one with three fields the server computed: written as it is,
            # without the read and validation of a ResourceService write (this is the sign-in's path).
            await self._storage.write([Replace(updated, stored.version)])
        except VersionConflict:
            # Another use of this passkey was stored first: its counter is the one to beat.
            await self._refused(owner, ip, client, {"reason": "concurrent-use", "passkey": id})
            raise passkey_refused() from None
        await self._audit.record(
            "passkey-used",
            "success",
            user=owner,
            client=client,
            ip=ip,
            detail={"passkey": id, "purpose": ceremony.purpose.value},
        )
        return PasskeyUse(owner, id, passkey_method(document), verified.user_verified)

    async def _refused(
        self, user_id: str | None, ip: str | None, client: str | None, detail: Document
    ) -> None:
        await self._audit.record(
            "passkey-refused", "failure", user=user_id, client=client, ip=ip, detail=detail
        )

    # Removal

    async def remove(self, user_id: str, id: str, *, ip: str | None = None, by: str = "user") -> None:
        """Remove one of the user's passkeys. The caller has checked a fresh second factor."""
        stored = await self._resources.find(RESOURCE, id)
        if stored is None or stored.document.get("user", {}).get("id") != user_id:
            raise unknown_passkey()
        await self._resources.delete(RESOURCE, id, administrator=True)
        await self._audit.record(
            "passkey-removed", "success", user=user_id, ip=ip, detail={"passkey": id, "by": by}
        )
        if not await self.has_passkeys(user_id):
            user = await self._resources.find("User", user_id)
            if user is None or not has_two_factor(user.document):
                for hook in self._off_hooks:
                    await hook(user_id)

    async def remove_all(self, user_id: str, by: str) -> int:
        """Every passkey of the user (an administrator's reset, a deleted User); how many."""
        removed = 0
        while True:
            found = await self.passkeys(user_id)
            if not found:
                return removed
            for credential in found:
                await self._resources.delete(RESOURCE, credential["id"], administrator=True)
                await self._audit.record(
                    "passkey-removed", "success", user=user_id, detail={"passkey": credential["id"], "by": by}
                )
                removed += 1

    async def _after_user_change(self, before: Document | None, after: Document | None) -> None:
        """A deleted User's passkeys go with her: a User created later with her id must not inherit them."""
        if before is not None and after is None:
            await self.remove_all(before["id"], by="user-deleted")


def refuse_passkey_only(passkeys: PasskeyService) -> PasswordGrantCheck:
    """The password grant cannot ask for a passkey: a user whose only second factor is one does not
    get a token from the password alone. (One with TOTP too sends its code: require_second_factor.)"""

    async def check(request: TokenRequest, user: Document) -> None:
        if not has_two_factor(user) and await passkeys.has_passkeys(user["id"]):
            raise InvalidGrant("This account's second factor is a passkey; sign in through the browser")

    return check


def _descriptor(credential: Document) -> PublicKeyCredentialDescriptor:
    transports = [AuthenticatorTransport(t) for t in credential.get("transports", []) if t in _TRANSPORTS]
    return PublicKeyCredentialDescriptor(
        id=_unb64url(credential["credentialId"]), transports=transports or None
    )


def _same_user_handle(credential: Document, stored: Document) -> bool:
    """Reference §6.3: for a discoverable sign-in the library does not compare the user handle."""
    response = credential.get("response")
    handle = response.get("userHandle") if isinstance(response, dict) else None
    return isinstance(handle, str) and secrets_equal(handle.rstrip("="), str(stored.get("userHandle", "")))
