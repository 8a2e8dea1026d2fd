"""Recovery codes: shown once, stored only as peppered HMAC digests, each good for one sign-in.

Spending a code (removing its digest) belongs to whoever stores the digests, with compare-and-set;
this module makes, normalises, digests and finds codes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence

from fhirauth.security import secrets_equal

# Crockford's Base32 alphabet: 32 symbols, so ten characters carry 50 bits, with no i, l, o or u.
# A user who types the look-alikes (o for 0, i or l for 1) still gets the code right.
ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
GROUP = 5
GROUPS = 2
_LOOKALIKES = str.maketrans({"o": "0", "i": "1", "l": "1"})
_SEPARATORS = re.compile(r"[\s\-]+")
_NORMALISED = re.compile(f"[{ALPHABET}]{{{GROUP * GROUPS}}}")


class RecoveryCodes:
    def __init__(self, pepper: bytes) -> None:
        if len(pepper) < 16:
            raise ValueError("The recovery-code pepper must be at least 16 bytes")
        self._pepper = pepper

    def generate(self, n: int = 10) -> list[str]:
        """`n` distinct codes such as `k7mqx-4trwp`."""
        codes: list[str] = []
        while len(codes) < n:
            raw = "".join(secrets.choice(ALPHABET) for _ in range(GROUP * GROUPS))
            code = "-".join(raw[i : i + GROUP] for i in range(0, len(raw), GROUP))
            if code not in codes:
                codes.append(code)
        return codes

    @staticmethod
    def normalise(code: str) -> str:
        """Lower case, separators gone, look-alike letters read as the digits they resemble."""
        return _SEPARATORS.sub("", code).lower().translate(_LOOKALIKES)

    def digest(self, code: str) -> str:
        return hmac.new(self._pepper, self.normalise(code).encode(), hashlib.sha256).hexdigest()

    def find(self, code: str, digests: Sequence[str]) -> int | None:
        """The index of the digest `code` matches, or None."""
        if not _NORMALISED.fullmatch(self.normalise(code)):
            # A malformed code can match nothing; refusing it early reveals nothing stored.
            return None
        candidate = self.digest(code)
        found: int | None = None
        # Every digest is compared, so the time taken does not say which one (if any) matched.
        for index, stored in enumerate(digests):
            if secrets_equal(candidate, stored) and found is None:
                found = index
        return found
