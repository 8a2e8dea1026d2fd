"""CSRF protection for the HTML forms: a random cookie and, in every form, its HMAC.

The cookie (`fhirauth_csrf`, HttpOnly, SameSite=Lax) is random per browser; the form field is
HMAC-SHA256 of it under a key derived from the master secret. Another site can neither read the
cookie nor compute the field, so a forged POST lacks a matching pair. During a master-secret rotation
a field made under a previous master secret (a form shown before the deploy) is still accepted.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from fhirauth.secretbox import SecretBox
from fhirauth.security import random_token, secrets_equal

CSRF_FIELD = "csrf"


class CsrfRefused(Exception):
    """A POSTed form without the right CSRF field: answered 403 and nothing is written."""


class Csrf:
    def __init__(self, keys: Sequence[bytes]) -> None:
        self._keys = tuple(keys)

    @classmethod
    def from_box(cls, box: SecretBox) -> Csrf:
        return cls(box.derived_keys("csrf"))

    @staticmethod
    def new_cookie() -> str:
        return random_token()

    def field_for(self, cookie: str) -> str:
        return _field(self._keys[0], cookie)

    def check(self, cookie: str | None, field: str | None) -> None:
        if not cookie or not field:
            raise CsrfRefused()
        # Every key is tried, so the time taken does not say which master secret matched.
        matches = [secrets_equal(_field(key, cookie), field) for key in self._keys]
        if not any(matches):
            raise CsrfRefused()


def _field(key: bytes, cookie: str) -> str:
    return hmac.new(key, cookie.encode(), hashlib.sha256).hexdigest()
