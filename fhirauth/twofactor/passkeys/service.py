"""The passkey ceremonies: registration, authentication (second factor, step-up, passwordless) and
removal, as a relying party must run them (reference §6.3) around py_webauthn's checks of each
response (challenge, origin, rpIdHash, flags, signature, attestation).

A finish takes its challenge (challenges.py), reads the one credential it names (credentials.py),
verifies one signature, and stores the new counter by compare-and-set. The counter rule
(`counter_refused`) decides after the signature is known good: the library's own check is given 0.
amr: `hwk` for a credential bound to its device, `swk` for one that may be synced; a passkey that
verified its user is two factors (fhirauth/auth/oidc/amr.py).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_registration_response,
)
from webauthn.helpers import options_to_json_dict
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from fhirauth.audit import Outcome, Party
from fhirauth.auth.login import has_two_factor
from fhirauth.clock import Clock, isoformat
from fhirauth.errors import Conflict
from fhirauth.resources.service import ResourceService
from fhirauth.storage.base import Filter, Query, Replace, VersionConflict, Write
from fhirauth.twofactor.config import TwoFactorConfig
from fhirauth.twofactor.passkeys.assertion import AssertionRefused, verify_assertion
from fhirauth.twofactor.passkeys.challenges import CHALLENGE_SECONDS, Ceremony, Challenges, Purpose
from fhirauth.twofactor.passkeys.credentials import (
    MAX_PASSKEYS,
    RESOURCE,
    TRANSPORTS,
    check_name,
    counter_refused,
    descriptor,
    passkey_id,
    passkey_method,
)
from fhirauth.twofactor.passkeys.errors import (
    already_registered,
    counter_rollback,
    passkey_refused,
    too_many,
    unknown_passkey,
)
from fhirauth.twofactor.passkeys.relying_party import RelyingParty
from fhirauth.twofactor.passkeys.responses import (
    Document,
    b64url,
    credential_json,
    raw_id,
    same_user_handle,
    unb64url,
)
from fhirauth.twofactor.service import Audit

_USER_HANDLE_BYTES = 32


class PasskeyAudit(Audit, Protocol):
    async def record_with(
        self,
        writes: Sequence[Write],
        action: str,
        outcome: Outcome,
        *,
        user: Party = None,
        client: Party = None,
        ip: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class PasskeyUse:
    """A verified assertion: whose passkey, which one, the amr method it gives, and whether the
    authenticator verified the user."""

    user_id: str
    passkey_id: str
    method: str
    user_verified: bool


class PasskeyService:
    def __init__(
        self,
        resources: ResourceService,
        audit: PasskeyAudit,
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
        self._challenges = Challenges(self._storage, clock)
        self._rp_id_hash = hashlib.sha256(rp.id.encode()).digest()
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

    # Registration

    async def registration_options(self, user: Document, *, binding: str) -> Document:
        existing = await self.passkeys(user["id"])
        if len(existing) >= MAX_PASSKEYS:
            raise too_many(MAX_PASSKEYS)
        handle = next((c["userHandle"] for c in existing if isinstance(c.get("userHandle"), str)), None)
        handle = handle or b64url(secrets.token_bytes(_USER_HANDLE_BYTES))
        challenge = await self._challenges.new(
            Ceremony(Purpose.REGISTER, binding, user["id"]), userHandle=handle
        )
        label = user.get("email") or user.get("userName") or user["id"]
        options = generate_registration_options(
            rp_id=self.rp.id,
            rp_name=(await self._config()).issuer,
            user_name=label,
            user_id=unb64url(handle),
            user_display_name=user.get("displayName") or label,
            challenge=challenge,
            timeout=CHALLENGE_SECONDS * 1000,
            # Discoverable when the authenticator can, so the same passkey also signs in without a
            # password; a security key without room for one still serves as a second factor.
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
            exclude_credentials=[descriptor(c) for c in existing],
        )
        return options_to_json_dict(options)

    async def register(
        self, user_id: str, credential: object, name: object, *, binding: str, ip: str | None = None
    ) -> Document:
        label = check_name(name)
        parsed = credential_json(credential)
        challenge, ceremony = await self._challenges.take(
            parsed, Ceremony(Purpose.REGISTER, binding, user_id)
        )
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
            "credentialId": b64url(verified.credential_id),
            "publicKey": b64url(verified.credential_public_key),
            "signCount": verified.sign_count,
            "userHandle": ceremony["userHandle"],
            "transports": sorted({t for t in transports if t in TRANSPORTS})
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
            allowed = [descriptor(c) for c in await self.passkeys(ceremony.user_id)]
            if not allowed:
                raise unknown_passkey()
        challenge = await self._challenges.new(ceremony)
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
        parsed = credential_json(credential)
        await self._challenges.take(parsed, ceremony)
        raw = raw_id(parsed)
        id = passkey_id(raw)
        stored = await self._storage.get(RESOURCE, id)
        owner = (
            stored.document.get("user", {}).get("id") if stored is not None and not stored.deleted else None
        )
        if stored is None or owner is None or (ceremony.user_id is not None and owner != ceremony.user_id):
            await self._refused(ceremony.user_id, ip, client, {"reason": "unknown-passkey", "passkey": id})
            raise unknown_passkey()
        document = stored.document
        passwordless = ceremony.purpose is Purpose.PASSWORDLESS
        if passwordless and not same_user_handle(parsed, document):
            await self._refused(owner, ip, client, {"reason": "user-handle", "passkey": id})
            raise unknown_passkey()
        try:
            verified = verify_assertion(
                parsed,
                raw,
                rp_id_hash=self._rp_id_hash,
                origins=self.rp.origins,
                public_key=document["publicKey"],
                require_user_verification=passwordless,
            )
        except AssertionRefused as error:
            await self._refused(owner, ip, client, {"reason": str(error)[:200], "passkey": id})
            raise passkey_refused() from None
        stored_count = int(document.get("signCount", 0))
        if counter_refused(stored_count, verified.sign_count):
            await self._audit.record(
                "passkey-counter-rollback",
                "failure",
                user=owner,
                client=client,
                ip=ip,
                detail={"passkey": id, "stored": stored_count, "received": verified.sign_count},
            )
            raise counter_rollback()
        updated = {
            **document,
            "signCount": verified.sign_count,
            "backedUp": verified.backed_up,
            "lastUsed": isoformat(self._clock()),
        }
        version = stored.version + 1
        updated["meta"] = {**document["meta"], "versionId": str(version), "lastUpdated": updated["lastUsed"]}
        try:
            # The document is the stored one with three fields the server computed: written as it is,
            # without the read and validation of a ResourceService write (this is the sign-in's path),
            # in one commit with its AuditEvent.
            await self._audit.record_with(
                [Replace(updated, stored.version)],
                "passkey-used",
                "success",
                user=owner,
                client=client,
                ip=ip,
                detail={"passkey": id, "purpose": ceremony.purpose.value},
            )
        except VersionConflict:
            # Another use of this passkey was stored first: its counter is the one to beat.
            await self._refused(owner, ip, client, {"reason": "concurrent-use", "passkey": id})
            raise passkey_refused() from None
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
