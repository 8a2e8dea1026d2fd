"""The password grant's second factor: a user with 2FA on must send `totp` with the password; a code
accepted makes the grant's sign-in amr `otp` (and so `mfa`)."""

from __future__ import annotations

from typing import Any

from fhirauth.auth.grants.base import TokenRequest
from fhirauth.auth.grants.password import PasswordGrantCheck
from fhirauth.auth.login import has_two_factor
from fhirauth.auth.oauth_errors import InvalidGrant
from fhirauth.auth.oidc.amr import OTP
from fhirauth.twofactor.guard import Reason
from fhirauth.twofactor.service import TwoFactorService, enabled_without_secret, not_set_up

# Keycloak's direct grant reads `totp` or `otp`; Aidbox's reset endpoint uses `totp`.
CODE_PARAMETERS = ("totp", "otp")


def require_second_factor(two_factor: TwoFactorService) -> PasswordGrantCheck:
    async def check(request: TokenRequest, user: dict[str, Any]) -> str | None:
        if not has_two_factor(user):
            return None
        if enabled_without_secret(user):
            raise InvalidGrant(not_set_up().description)
        code = next((request.params[p] for p in CODE_PARAMETERS if request.params.get(p)), None)
        if code is None:
            raise InvalidGrant("Two-factor authentication code required")
        verdict = await two_factor.verify_user(user, code, client=request.client.get("id"))
        if verdict.reason is Reason.LOCKED:
            raise InvalidGrant("Too many wrong two-factor codes; try again later")
        if not verdict.accepted:
            raise InvalidGrant("Invalid two-factor authentication code")
        return OTP

    return check
