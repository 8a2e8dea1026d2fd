"""CSRF protection for the HTML forms: a random cookie and, in every form, its HMAC.

The cookie (`fhirauth_csrf`, HttpOnly, SameSite=Lax) is random per browser; the form field is
HMAC-SHA256 of it under a key derived from the master secret. Another site can neither read the
cookie nor compute the field, so a forged POST lacks a matching pair.
"""

from __future__ import annotations

import hashlib
import hmac

from fhirauth.secretbox import SecretBox
from fhirauth.security import random_token, secrets_equal

CSRF_FIELD = "csrf"


class CsrfRefused(Exception):
    """A POSTed form without the right CSRF field: answered 403 and nothing is written."""


class Csrf:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def from_box(cls, box: SecretBox) -> Csrf:
        return cls(box.derive_key("csrf"))

    @staticmethod
    def new_cookie() -> str:
        return random_token()

    def field_for(self, cookie: str) -> str:
        return hmac.new(self._key, cookie.encode(), hashlib.sha256).hexdigest()

    def check(self, cookie: str | None, field: str | None) -> None:
        if not cookie or not field or not secrets_equal(self.field_for(cookie), field):
            raise CsrfRefused()
