"""Trusted devices: "don't ask again on this device", after a second factor given in that browser.

A device is a cookie and an entry. The cookie reads `<device id>.<random>.<mac>`: 256 random bits,
and an HMAC (a key derived from the master secret) over the user id, the device id and the random
part, so a forged cookie or another user's is refused before any storage read. The entry keeps the
random part's SHA-256 (a leaked table opens nothing), the browser, when it was trusted and last used,
and a digest of the password hash it was trusted under.

Storage: one record per user (kind `trusted-devices`, key the user id) holding at most MAX_DEVICES
entries. Records are server-managed by construction (no REST route reaches them), listing a user's
devices is one read, revoking them all is one delete, and the record expires with its last device.

Revocation: by the user (one or all), and by every User write that changes the password, turns 2FA
off (disable, an administrator's reset, the CLI's), deactivates or deletes the user, and by every
administrator's 2FA reset (whatever the second factor was). The password digest refuses a cookie
from before a password change even when no hook saw the change.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from fhirauth.auth.login import has_two_factor, is_inactive
from fhirauth.clock import Clock
from fhirauth.resources.service import ResourceService
from fhirauth.security import random_token, secrets_equal, token_hash
from fhirauth.storage.base import Record, Storage
from fhirauth.twofactor.service import Audit

Document = dict[str, Any]

KIND = "trusted-devices"
MAX_DEVICES = 10
KEY_PURPOSE = "trusted-device cookie"
DAY_SECONDS = 86400
_WRITE_RETRIES = 5
_MAC_BYTES = 16
_COOKIE = re.compile(r"([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]{43})\.([A-Za-z0-9_-]{22})")
_MAX_USER_AGENT_CHARS = 512

RefusalReason = Literal["malformed", "signature", "unknown", "expired", "password-changed"]
RevocationReason = Literal[
    "user", "limit", "password-changed", "two-factor-off", "two-factor-reset", "user-inactive", "user-deleted"
]


class NotTrusted(Exception):
    """The cookie does not stand in for the second factor. `reason` is for the audit trail.

    `ours`: the cookie was signed for this user (its device is gone or expired), so a page may
    clear it; a cookie signed for nobody here may be another user's in a shared browser.
    """

    def __init__(self, reason: RefusalReason) -> None:
        super().__init__(reason)
        self.reason = reason

    @property
    def ours(self) -> bool:
        return self.reason not in ("malformed", "signature")


@dataclass(frozen=True)
class TrustedDevice:
    """One entry; times in epoch seconds."""

    id: str
    browser: str
    created: int
    last_used: int | None
    expires: int
    methods: tuple[str, ...]

    @classmethod
    def of(cls, entry: Document) -> TrustedDevice:
        return cls(
            entry["id"],
            entry["browser"],
            entry["created"],
            entry.get("lastUsed"),
            entry["expires"],
            tuple(entry.get("methods", ())),
        )


@dataclass(frozen=True)
class Granted:
    cookie: str
    device: TrustedDevice
    max_age: int


class TrustedDevices:
    def __init__(
        self,
        storage: Storage,
        resources: ResourceService,
        keys: Sequence[bytes],
        audit: Audit,
        clock: Clock,
    ) -> None:
        """`keys`: the cookie signing keys, the first signs and any verifies (a master-secret rotation)."""
        if not keys:
            raise ValueError("TrustedDevices needs a signing key")
        self._storage = storage
        self._keys = tuple(keys)
        self._audit = audit
        self._clock = clock
        resources.on_change("User", self._after_user_change)

    async def grant(
        self,
        user: Document,
        *,
        days: int,
        methods: Sequence[str],
        user_agent: str | None,
        ip: str | None,
        replaces: str | None = None,
    ) -> Granted:
        """Trust this browser for `days` after a second factor (`methods`, its amr values). A cookie
        of this user that the browser already holds (`replaces`) gives its place to the new one."""
        if days < 1:
            raise ValueError("A device is trusted for at least a day")
        user_id: str = user["id"]
        now = self._now()
        replaced = self._device_id(user_id, replaces) if replaces else None
        device_id, secret = random_token(12), random_token(32)
        entry: Document = {
            "id": device_id,
            "hash": token_hash(secret),
            "browser": browser_of(user_agent),
            "created": now,
            "expires": now + days * DAY_SECONDS,
            "methods": list(methods),
            "password": _password_digest(user),
        }
        dropped: list[Document] = []
        for _ in range(_WRITE_RETRIES):
            record = await self._storage.record_get(KIND, user_id)
            kept = [e for e in _entries(record) if e["expires"] > now and e["id"] != replaced]
            # Oldest last: past the limit the device unused the longest goes.
            kept.sort(key=lambda e: e.get("lastUsed") or e["created"], reverse=True)
            dropped = kept[MAX_DEVICES - 1 :]
            if await self._put(user_id, record, [entry, *kept[: MAX_DEVICES - 1]]):
                break
        else:
            raise RuntimeError("The user's trusted devices are being changed concurrently")
        device = TrustedDevice.of(entry)
        await self._audit.record(
            "trusted-device-granted",
            "success",
            user=user_id,
            ip=ip,
            detail={"device": device_id, "browser": device.browser, "days": days},
        )
        for old in dropped:
            await self._audit_revoked(user_id, old, "limit", ip)
        return Granted(_cookie(self._keys[0], user_id, device_id, secret), device, days * DAY_SECONDS)

    async def recognize(self, user: Document, cookie: str, *, days: int, ip: str | None) -> TrustedDevice:
        """The device `cookie` names, if it is trusted for `user` now (recording its use); NotTrusted
        otherwise. A device counts for at most `days` from when it was trusted, whatever it was
        granted with, so shortening the setting shortens the devices already trusted."""
        try:
            device = await self._recognize(user, cookie, days)
        except NotTrusted as refused:
            await self._audit.record(
                "trusted-device-refused", "failure", user=user["id"], ip=ip, detail={"reason": refused.reason}
            )
            raise
        await self._audit.record(
            "trusted-device-used",
            "success",
            user=user["id"],
            ip=ip,
            detail={"device": device.id, "browser": device.browser},
        )
        return device

    async def _recognize(self, user: Document, cookie: str, days: int) -> TrustedDevice:
        user_id: str = user["id"]
        parts = _COOKIE.fullmatch(cookie)
        if parts is None:
            raise NotTrusted("malformed")
        device_id, secret, mac = parts.groups()
        if not self._signed(user_id, device_id, secret, mac):
            raise NotTrusted("signature")
        now = self._now()
        for _ in range(_WRITE_RETRIES):
            record = await self._storage.record_get(KIND, user_id)
            entries = _entries(record)
            entry = next((e for e in entries if e["id"] == device_id), None)
            if entry is None or not secrets_equal(entry["hash"], token_hash(secret)):
                raise NotTrusted("unknown")
            if now >= min(entry["expires"], entry["created"] + days * DAY_SECONDS):
                raise NotTrusted("expired")
            if not secrets_equal(entry.get("password", ""), _password_digest(user)):
                raise NotTrusted("password-changed")
            used = [{**e, "lastUsed": now} if e is entry else e for e in entries]
            # Compare-and-set: a revocation that lands meanwhile is read again, and refuses.
            if await self._put(user_id, record, used):
                return TrustedDevice.of({**entry, "lastUsed": now})
        raise NotTrusted("unknown")

    async def devices(self, user_id: str) -> list[TrustedDevice]:
        """The user's trusted devices, the most recently trusted first."""
        now = self._now()
        record = await self._storage.record_get(KIND, user_id)
        live = [TrustedDevice.of(e) for e in _entries(record) if e["expires"] > now]
        return sorted(live, key=lambda device: device.created, reverse=True)

    def device_of(self, user_id: str, cookie: str | None) -> str | None:
        """The id of the device a cookie signed for `user_id` names (this browser's, on a page)."""
        return self._device_id(user_id, cookie) if cookie else None

    async def revoke(self, user_id: str, device_id: str, *, ip: str | None) -> bool:
        """Forget one device; False when the user has no such device."""
        for _ in range(_WRITE_RETRIES):
            record = await self._storage.record_get(KIND, user_id)
            entries = _entries(record)
            gone = [e for e in entries if e["id"] == device_id]
            if not gone:
                return False
            if await self._put(user_id, record, [e for e in entries if e["id"] != device_id]):
                await self._audit_revoked(user_id, gone[0], "user", ip)
                return True
        raise RuntimeError("The user's trusted devices are being changed concurrently")

    async def revoke_all(
        self, user_id: str, *, reason: RevocationReason = "user", ip: str | None = None
    ) -> int:
        """Forget every device of the user; how many there were."""
        record = await self._storage.record_take(KIND, user_id)
        entries = [e for e in _entries(record) if e["expires"] > self._now()]
        for entry in entries:
            await self._audit_revoked(user_id, entry, reason, ip)
        return len(entries)

    async def after_reset(self, user_id: str, actor: str) -> None:
        """An administrator's 2FA reset (TwoFactorService.on_reset): every device goes, whatever the
        user's second factor was (a passkey-only user's reset writes no twoFactor change)."""
        await self.revoke_all(user_id, reason="two-factor-reset")

    async def after_two_factor_off(self, user_id: str) -> None:
        """The user's last passkey went and she has no TOTP (PasskeyService.on_two_factor_off): no
        User write shows that change, so the hook on User writes cannot see it."""
        await self.revoke_all(user_id, reason="two-factor-off")

    # Internals

    def _now(self) -> int:
        return int(self._clock().timestamp())

    def _signed(self, user_id: str, device_id: str, secret: str, mac: str) -> bool:
        return any(secrets_equal(_mac(key, user_id, device_id, secret), mac) for key in self._keys)

    def _device_id(self, user_id: str, cookie: str | None) -> str | None:
        parts = _COOKIE.fullmatch(cookie or "")
        if parts is None or not self._signed(user_id, *parts.groups()):
            return None
        return parts.group(1)

    async def _put(self, user_id: str, record: Record | None, entries: list[Document]) -> bool:
        """Compare-and-set the user's record to `entries`; False when someone changed it first. The
        record lasts as long as its last device (none left: it expires now)."""
        expires = max((e["expires"] for e in entries), default=self._now())
        written = await self._storage.record_put(
            KIND,
            user_id,
            {"devices": entries},
            expected_rev=record.rev if record is not None else None,
            expires_at=datetime.fromtimestamp(expires, UTC),
        )
        return written is not None

    async def _audit_revoked(self, user_id: str, entry: Document, reason: str, ip: str | None) -> None:
        await self._audit.record(
            "trusted-device-revoked",
            "success",
            user=user_id,
            ip=ip,
            detail={"device": entry["id"], "browser": entry["browser"], "reason": reason},
        )

    async def _after_user_change(self, before: Document | None, after: Document | None) -> None:
        if before is None:
            return
        reason: RevocationReason | None = None
        if after is None:
            reason = "user-deleted"
        elif before.get("password") != after.get("password"):
            reason = "password-changed"
        elif has_two_factor(before) and not has_two_factor(after):
            reason = "two-factor-off"
        elif is_inactive(after) and not is_inactive(before):
            reason = "user-inactive"
        if reason is not None:
            await self.revoke_all(before["id"], reason=reason)


def _entries(record: Record | None) -> list[Document]:
    devices = record.document.get("devices") if record is not None else None
    return [e for e in devices if isinstance(e, dict)] if isinstance(devices, list) else []


def _mac(key: bytes, user_id: str, device_id: str, secret: str) -> str:
    digest = hmac.new(key, f"{user_id}.{device_id}.{secret}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:_MAC_BYTES]).rstrip(b"=").decode("ascii")


def _cookie(key: bytes, user_id: str, device_id: str, secret: str) -> str:
    return f"{device_id}.{secret}.{_mac(key, user_id, device_id, secret)}"


def _password_digest(user: Document) -> str:
    password = user.get("password")
    return hashlib.sha256(password.encode()).hexdigest() if isinstance(password, str) else ""


# Most specific first: Edge and Opera say Chrome too, Chrome says Safari, iOS says Mac OS X.
_BROWSERS = (
    ("Edg/", "Edge"),
    ("EdgA/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("FxiOS/", "Firefox"),
    ("CriOS/", "Chrome"),
    ("Chromium/", "Chromium"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
)
_SYSTEMS = (
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iOS"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def browser_of(user_agent: str | None) -> str:
    """A summary a user recognises ("Firefox on Windows"), never the raw header (it is free text)."""
    text = (user_agent or "")[:_MAX_USER_AGENT_CHARS]
    browser = next((name for marker, name in _BROWSERS if marker in text), None)
    if browser is None:
        return "Unknown browser"
    system = next((name for marker, name in _SYSTEMS if marker in text), None)
    return f"{browser} on {system}" if system else browser
