"""The two-factor settings of an AuthConfig, with fhirauth's defaults filled in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhirauth.twofactor.guard import LockoutPolicy

DEFAULT_ISSUER = "fhirauth"
DEFAULT_WEBHOOK_TIMEOUT_MS = 5000
DEFAULT_PENDING_SECRET_SECONDS = 600
DEFAULT_TRUSTED_DEVICE_DAYS = 30


@dataclass(frozen=True)
class Webhook:
    endpoint: str
    timeout_ms: int = DEFAULT_WEBHOOK_TIMEOUT_MS
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TwoFactorConfig:
    issuer: str = DEFAULT_ISSUER
    past: int = 1
    future: int = 0
    lockout: LockoutPolicy = LockoutPolicy(max_attempts=5, lockout_seconds=300)
    recovery_codes: bool = True
    webhook: Webhook | None = None
    pending_secret_seconds: int = DEFAULT_PENDING_SECRET_SECONDS
    # "Don't ask again on this device" lasts this many days; 0: not offered, and no device counts.
    trusted_device_days: int = DEFAULT_TRUSTED_DEVICE_DAYS
    # "Sign in with a passkey" on the login page (a discoverable passkey, no password).
    passkey_sign_in: bool = False

    @classmethod
    def from_auth_config(cls, auth_config: dict[str, Any]) -> TwoFactorConfig:
        raw = auth_config.get("twoFactor") or {}
        hook = raw.get("webhook")
        return cls(
            issuer=raw.get("issuerName") or DEFAULT_ISSUER,
            past=int(raw.get("validPastTokensCount", 1)),
            future=int(raw.get("validFutureTokensCount", 0)),
            lockout=LockoutPolicy(
                max_attempts=int(raw.get("maxAttempts", 5)),
                lockout_seconds=int(raw.get("lockoutSeconds", 300)),
            ),
            recovery_codes=bool(raw.get("recoveryCodes", True)),
            pending_secret_seconds=int(raw.get("pendingSecretSeconds", DEFAULT_PENDING_SECRET_SECONDS)),
            trusted_device_days=int(raw.get("trustedDeviceDays", DEFAULT_TRUSTED_DEVICE_DAYS)),
            passkey_sign_in=raw.get("passkeySignIn") is True,
            webhook=Webhook(
                endpoint=hook["endpoint"],
                timeout_ms=int(hook.get("timeout", DEFAULT_WEBHOOK_TIMEOUT_MS)),
                headers=dict(hook.get("headers") or {}),
            )
            if isinstance(hook, dict) and hook.get("endpoint")
            else None,
        )
