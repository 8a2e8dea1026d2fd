"""Two-factor authentication for users: enrolment, the sign-in check, recovery codes, disable, reset.

One service behind every face (HTML pages, the JSON operations of the Aidbox demo app, the password
grant, the CLI), so each rule is enforced the same way everywhere.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from fhirauth.audit import Outcome, Party
from fhirauth.auth.login import has_two_factor
from fhirauth.clock import Clock
from fhirauth.errors import NotFound, PreconditionFailed
from fhirauth.notify import NotificationFailed
from fhirauth.resources.secrets import SecretFields
from fhirauth.resources.service import ResourceService
from fhirauth.security import secrets_equal
from fhirauth.storage.base import Stored
from fhirauth.twofactor import totp
from fhirauth.twofactor.config import TwoFactorConfig
from fhirauth.twofactor.guard import AttemptGuard, Reason, Verdict
from fhirauth.twofactor.pepper import RecoveryPepper
from fhirauth.twofactor.uri import provisioning_uri
from fhirauth.twofactor.webhook import WebhookSender

log = logging.getLogger("fhirauth.twofactor")

Document = dict[str, Any]
_SAVE_RETRIES = 5
# Writes made by this service carry this mark, so the change hook can tell them from an admin's.
_service_write: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "two_factor_service_write", default=False
)


class Audit(Protocol):
    async def record(
        self,
        action: str,
        outcome: Outcome,
        *,
        user: Party = None,
        client: Party = None,
        ip: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None: ...


class Notify(Protocol):
    async def send(self, to: str, subject: str, text: str) -> None:
        """Raises NotificationFailed when the message cannot be delivered."""


class TwoFactorError(Exception):
    """A refusal with the Aidbox demo's wire shape: 422 `{error, error_description}`."""

    status = 422

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def already_enabled() -> TwoFactorError:
    return TwoFactorError("already_enabled", "2FA is already enabled")


def not_requested() -> TwoFactorError:
    return TwoFactorError("not_requested", "2FA is not requested")


def wrong_token() -> TwoFactorError:
    return TwoFactorError("wrong_token", "Wrong token")


def not_enabled() -> TwoFactorError:
    return TwoFactorError("not_enabled", "2FA is not enabled")


def not_set_up() -> TwoFactorError:
    return TwoFactorError("not_set_up", "2FA is enabled but not set up; an administrator must reset it")


class FirstPartyRequired(TwoFactorError):
    status = 403

    def __init__(self) -> None:
        super().__init__(
            "first_party_client_required", "Two-factor operations need a token issued to a first-party client"
        )


def require_first_party(client: Document | None) -> None:
    """Only a first-party client's token manages a user's second factor: enrolment hands out the
    secret, and the other operations spend codes and count toward the lockout that guards sign-in.
    A browser cookie sent as a bearer token names no client."""
    if client is None or client.get("first_party") is not True:
        raise FirstPartyRequired()


def sign_in_of(session: Document) -> str:
    """The sign-in a Session speaks for, to which a pending secret is bound: the browser sign-in a
    first-party token came from (its `parent`, which it shares as it shares the sign-out), else the
    Session itself (a browser sign-in, a password grant; a refresh keeps the Session)."""
    parent = session.get("parent")
    if isinstance(parent, dict) and isinstance(parent.get("id"), str):
        parent_id: str = parent["id"]
        return parent_id
    session_id: str = session["id"]
    return session_id


class Locked(TwoFactorError):
    status = 429

    def __init__(self, until: datetime | None) -> None:
        super().__init__("locked", "Too many wrong codes; try again later")
        self.until = until


@dataclass(frozen=True)
class Enrollment:
    uri: str
    secret: str
    account: str


@dataclass(frozen=True)
class Status:
    enabled: bool
    pending: bool
    transport: str | None
    recovery_codes_left: int


def enabled_without_secret(user: Document) -> bool:
    """2FA on with no secret to check a code against (an administrator's write, an import). No sign-in
    succeeds until an administrator resets 2FA: letting the password alone enrol a new secret would be
    the bypass that turning 2FA on was meant to close."""
    return has_two_factor(user) and not isinstance(user["twoFactor"].get("secretKey"), str)


def status_of(user: Document) -> Status:
    two_factor = user.get("twoFactor") or {}
    enabled = has_two_factor(user)
    return Status(
        enabled=enabled,
        pending=not enabled and bool(two_factor.get("secretKey")),
        transport=two_factor.get("transport"),
        recovery_codes_left=len(_recovery_digests(two_factor)),
    )


class TwoFactorService:
    def __init__(
        self,
        resources: ResourceService,
        secrets: SecretFields,
        guard: AttemptGuard,
        recovery: RecoveryPepper,
        webhook: WebhookSender,
        audit: Audit,
        notify: Notify,
        auth_config: Callable[[], Awaitable[Document]],
        clock: Clock,
    ) -> None:
        self._resources = resources
        self._secrets = secrets
        self._guard = guard
        self._recovery = recovery
        self._webhook = webhook
        self._audit = audit
        self._notify = notify
        self._auth_config = auth_config
        self._clock = clock
        # The AuthConfig document the config was last made from: the source caches the document.
        self._config_of: tuple[Document, TwoFactorConfig] | None = None
        self._reset_hooks: list[Callable[[str, str], Awaitable[object]]] = []
        resources.on_change("User", self._after_user_change)

    def on_reset(self, hook: Callable[[str, str], Awaitable[object]]) -> None:
        """Call `hook(user_id, actor)` at every administrator's reset: the other second factors a user
        holds (passkeys, trusted devices) go with it."""
        self._reset_hooks.append(hook)

    async def config(self) -> TwoFactorConfig:
        auth_config = await self._auth_config()
        if self._config_of is None or self._config_of[0] is not auth_config:
            self._config_of = (auth_config, TwoFactorConfig.from_auth_config(auth_config))
        return self._config_of[1]

    async def user(self, user_id: str) -> Stored:
        stored = await self._resources.find("User", user_id)
        if stored is None:
            raise NotFound(f"Resource User/{user_id} not found")
        return stored

    # Enrolment

    async def begin_enrollment(
        self, user_id: str, transport: str | None = None, *, sign_in: str
    ) -> Enrollment:
        """Create a pending secret for `sign_in`, or return the one it already has (a reload shows the
        same QR). One pending for another sign-in, or expired, is replaced, never shown."""
        config = await self.config()
        for _ in range(_SAVE_RETRIES):
            stored = await self.user(user_id)
            user = stored.document
            status = status_of(user)
            if status.enabled:
                raise already_enabled()
            now = int(self._clock().timestamp())
            if (
                status.pending
                and (transport is None or transport == status.transport)
                and _pending_for(user["twoFactor"], sign_in, now)
            ):
                secret = self._secrets.reveal_totp_secret(user)
                assert secret is not None
                break
            secret = totp.new_secret()
            updated = copy.deepcopy(user)
            updated["twoFactor"] = {
                "enabled": False,
                "secretKey": self._secrets.seal_totp_secret(user_id, secret),
                # Counted from creation: a reload neither stretches it nor writes.
                "pending": {"session": sign_in, "exp": now + config.pending_secret_seconds},
            }
            if transport:
                updated["twoFactor"]["transport"] = transport
            if await self._save(updated, stored.version) is not None:
                break
        else:
            raise PreconditionFailed("The user is being changed concurrently; try again")
        account = user.get("email") or user_id
        return Enrollment(provisioning_uri(secret, account, config.issuer), secret, account)

    async def confirm_enrollment(
        self, user_id: str, code: str, *, sign_in: str, ip: str | None = None
    ) -> list[str]:
        """Turn 2FA on with a code from the secret pending for `sign_in`; returns the recovery codes to
        show once. A secret pending for another sign-in, or expired, is not requested: its code is
        not even checked."""
        config = await self.config()
        stored = await self.user(user_id)
        status = status_of(stored.document)
        if status.enabled:
            raise already_enabled()
        now = int(self._clock().timestamp())
        if not status.pending or not _pending_for(stored.document["twoFactor"], sign_in, now):
            raise not_requested()
        sealed = stored.document["twoFactor"]["secretKey"]
        secret = self._secrets.reveal_totp_secret(stored.document)
        assert secret is not None
        verdict = await self._guard.verify_totp(
            user_id, secret, code, past=config.past, future=config.future, policy=config.lockout
        )
        await self._audit_refusal(verdict, user_id, ip)
        if not verdict.accepted:
            raise Locked(verdict.locked_until) if verdict.reason is Reason.LOCKED else wrong_token()
        recovery = await self._recovery.codes()
        codes = recovery.generate() if config.recovery_codes else []
        for _ in range(_SAVE_RETRIES):
            current = await self.user(user_id)
            if status_of(current.document).enabled:
                raise already_enabled()
            # Another sign-in may have replaced the secret while the code was checked.
            if not secrets_equal((current.document.get("twoFactor") or {}).get("secretKey") or "", sealed):
                raise not_requested()
            updated = copy.deepcopy(current.document)
            updated["twoFactor"]["enabled"] = True
            updated["twoFactor"]["recoveryCodes"] = [recovery.digest(c) for c in codes]
            updated["twoFactor"].pop("pending", None)
            if await self._save(updated, current.version) is not None:
                break
        else:
            raise PreconditionFailed("The user is being changed concurrently; try again")
        await self._audit.record("2fa-enabled", "success", user=user_id, ip=ip)
        return codes

    # Checking a code

    async def verify(
        self, user_id: str, code: str, *, ip: str | None = None, client: str | None = None
    ) -> Verdict:
        """The second factor at sign-in: a TOTP code, or an unused recovery code (which is then spent)."""
        return await self.verify_user((await self.user(user_id)).document, code, ip=ip, client=client)

    async def verify_user(
        self, user: Document, code: str, *, ip: str | None = None, client: str | None = None
    ) -> Verdict:
        """`verify` for a User document the caller has just read."""
        config = await self.config()
        user_id = user["id"]
        if not has_two_factor(user):
            return Verdict(Reason.INVALID)
        if enabled_without_secret(user):
            raise not_set_up()
        code = code.strip()
        if _looks_like_recovery_code(code):
            verdict = await self._guard.attempt(
                user_id, config.lockout, lambda: self._spend_recovery_code(user_id, code)
            )
            if verdict.accepted:
                left = status_of((await self.user(user_id)).document).recovery_codes_left
                await self._audit.record(
                    "2fa-recovery-used", "success", user=user_id, client=client, ip=ip, detail={"left": left}
                )
        else:
            secret = self._secrets.reveal_totp_secret(user)
            assert secret is not None
            verdict = await self._guard.verify_totp(
                user_id, secret, code, past=config.past, future=config.future, policy=config.lockout
            )
        await self._audit_refusal(verdict, user_id, ip, client)
        return verdict

    async def require(self, user: Document, code: str, *, ip: str | None = None) -> None:
        """`verify_user` for a user who must have 2FA on, raising the demo app's refusals
        (not_enabled and wrong_token 422, lockout 429). Also a step-up check on its own."""
        if not has_two_factor(user):
            raise not_enabled()
        verdict = await self.verify_user(user, code, ip=ip)
        if verdict.reason is Reason.LOCKED:
            raise Locked(verdict.locked_until)
        if not verdict.accepted:
            raise wrong_token()

    async def _spend_recovery_code(self, user_id: str, code: str) -> Verdict:
        recovery = await self._recovery.codes()
        for _ in range(_SAVE_RETRIES):
            stored = await self.user(user_id)
            digests = _recovery_digests(stored.document.get("twoFactor") or {})
            index = recovery.find(code, digests)
            if index is None:
                return Verdict(Reason.INVALID)
            updated = copy.deepcopy(stored.document)
            del digests[index]
            updated["twoFactor"]["recoveryCodes"] = digests
            # Compare-and-set: of two sign-ins racing with one code, only one removes it.
            if await self._save(updated, stored.version) is not None:
                return Verdict(Reason.ACCEPTED)
        return Verdict(Reason.INVALID)

    # After enrolment

    async def regenerate_recovery_codes(self, user_id: str, code: str, *, ip: str | None = None) -> list[str]:
        await self.require((await self.user(user_id)).document, code, ip=ip)
        recovery = await self._recovery.codes()
        codes = recovery.generate()
        await self._update_two_factor(
            user_id, lambda tf: {**tf, "recoveryCodes": [recovery.digest(c) for c in codes]}
        )
        await self._audit.record("2fa-recovery-regenerated", "success", user=user_id, ip=ip)
        await self._tell(
            user_id,
            "Your recovery codes were replaced",
            "New two-factor recovery codes were made for your account; the old ones no longer work.",
        )
        return codes

    async def disable(self, user_id: str, code: str, *, ip: str | None = None) -> None:
        await self.require((await self.user(user_id)).document, code, ip=ip)
        await self._update_two_factor(user_id, _switched_off)
        await self._audit.record("2fa-disabled", "success", user=user_id, ip=ip)
        await self._tell(
            user_id,
            "Two-factor authentication was turned off",
            "Two-factor authentication was turned off for your account. If this was not you, contact your administrator.",
        )

    async def reset(self, user_id: str, *, actor: str | None = None) -> None:
        """An administrator's reset for a user who lost the device: 2FA off, lockout cleared."""
        await self.user(user_id)
        await self._update_two_factor(user_id, _switched_off)
        await self._guard.reset(user_id)
        for hook in self._reset_hooks:
            await hook(user_id, actor or "admin")
        await self._audit.record("2fa-reset", "success", user=user_id, detail={"by": actor or "admin"})

    # Webhook

    async def send_code(self, user: Document, *, ip: str | None = None) -> bool:
        """Deliver the current code through the webhook, if one is configured. False when it failed."""
        config = await self.config()
        status = status_of(user)
        if config.webhook is None or not (status.enabled or status.pending) or enabled_without_secret(user):
            return False
        secret = self._secrets.reveal_totp_secret(user)
        assert secret is not None
        code = totp.code_at(secret, totp.step_at(self._clock().timestamp()))
        failure = await self._webhook.send(config.webhook, user, code)
        if failure is not None:
            await self._audit.record(
                "2fa-webhook-failed",
                "failure",
                user=user["id"],
                ip=ip,
                detail={"endpoint": config.webhook.endpoint, "reason": failure},
            )
            return False
        return True

    async def close(self) -> None:
        await self._webhook.close()

    # Internals

    async def _update_two_factor(self, user_id: str, change: Callable[[Document], Document]) -> None:
        for _ in range(_SAVE_RETRIES):
            stored = await self.user(user_id)
            updated = copy.deepcopy(stored.document)
            updated["twoFactor"] = change(updated.get("twoFactor") or {})
            if await self._save(updated, stored.version) is not None:
                return
        raise PreconditionFailed("The user is being changed concurrently; try again")

    async def _save(self, user: Document, expected_version: int) -> Document | None:
        token = _service_write.set(True)
        try:
            return await self._resources.save(user, expected_version)
        except PreconditionFailed:
            return None
        finally:
            _service_write.reset(token)

    async def _after_user_change(self, before: Document | None, after: Document | None) -> None:
        """An administrator who writes `twoFactor.enabled = false` resets 2FA for that user."""
        if _service_write.get() or before is None or after is None:
            return
        if status_of(before).enabled and not status_of(after).enabled:
            await self.reset(after["id"], actor="api")

    async def _audit_refusal(
        self, verdict: Verdict, user_id: str, ip: str | None, client: str | None = None
    ) -> None:
        if verdict.accepted:
            return
        action = {
            Reason.INVALID: "2fa-code-refused",
            Reason.REPLAYED: "2fa-replay-refused",
            Reason.LOCKED: "2fa-lockout",
        }[verdict.reason]
        detail = {"lockedUntil": verdict.locked_until.isoformat()} if verdict.locked_until else None
        await self._audit.record(action, "failure", user=user_id, client=client, ip=ip, detail=detail)
        if verdict.reason is not Reason.LOCKED and verdict.locked_until is not None:
            await self._audit.record(
                "2fa-lockout", "failure", user=user_id, client=client, ip=ip, detail=detail
            )

    async def _tell(self, user_id: str, subject: str, text: str) -> None:
        user = (await self.user(user_id)).document
        # A failed notice is logged by the notifier. The change is stored (new recovery codes, say):
        # failing the request now would hide its result, and a notice is no part of it.
        if user.get("email"):
            with contextlib.suppress(NotificationFailed):
                await self._notify.send(user["email"], subject, text)


def _pending_for(two_factor: Document, sign_in: str, now: int) -> bool:
    """Whether the pending secret was made for `sign_in` and has not expired. One stored before
    secrets were bound (no `pending`) belongs to no sign-in."""
    pending = two_factor.get("pending")
    if not isinstance(pending, dict):
        return False
    exp = pending.get("exp")
    return pending.get("session") == sign_in and isinstance(exp, int) and now < exp


def _recovery_digests(two_factor: Document) -> list[str]:
    """The stored digests. The field is written by this service, but also by restores and by
    administrators: whatever else it holds matches no code."""
    stored = two_factor.get("recoveryCodes")
    return [digest for digest in stored if isinstance(digest, str)] if isinstance(stored, list) else []


def _switched_off(two_factor: Document) -> Document:
    # The secret goes with it: enabling again makes a new one, and a lost device's key stays dead.
    return {
        "enabled": False,
        **({"transport": two_factor["transport"]} if two_factor.get("transport") else {}),
    }


def _looks_like_recovery_code(code: str) -> bool:
    return not code.replace(" ", "").isdigit()
