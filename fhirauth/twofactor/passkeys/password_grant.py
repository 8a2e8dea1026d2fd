"""The password grant cannot ask for a passkey: a user whose only second factor is one does not get
a token from the password alone. (One with TOTP too sends its code: require_second_factor.)"""

from __future__ import annotations

from fhirauth.auth.grants.base import TokenRequest
from fhirauth.auth.grants.password import PasswordGrantCheck
from fhirauth.auth.login import has_two_factor
from fhirauth.auth.oauth_errors import InvalidGrant
from fhirauth.twofactor.passkeys.responses import Document
from fhirauth.twofactor.passkeys.service import PasskeyService


def refuse_passkey_only(passkeys: PasskeyService) -> PasswordGrantCheck:
    async def check(request: TokenRequest, user: Document) -> None:
        if not has_two_factor(user) and await passkeys.has_passkeys(user["id"]):
            raise InvalidGrant("This account's second factor is a passkey; sign in through the browser")

    return check
