"""The recovery-code pepper: a key of its own, kept in storage sealed under the master secret.

Recovery-code digests are HMACs, which cannot be re-keyed: a pepper derived from the master secret
would turn every user's codes dead the day the old master secret is dropped after a rotation. So the
pepper is data, sealed like a TOTP secret: `fhirauth secrets rotate` re-seals it, its value never
changes, and the codes keep working through any number of master-secret rotations (and in a restored
backup, which carries the sealed record). Its first value is the key fhirauth derived from the master
secret before the pepper was stored, so digests made then still match.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from fhirauth.secretbox import SecretBox
from fhirauth.security import secrets_equal
from fhirauth.storage.base import Record, Storage
from fhirauth.twofactor.recovery import RecoveryCodes

Document = dict[str, Any]

KIND = "recovery-pepper"
KEY = "hmac-sha256"
_AAD = "recovery-code pepper"
_WRITE_RETRIES = 5


class PepperConflict(Exception):
    """A restore would replace the pepper the stored recovery-code digests were made with."""


class RecoveryPepper:
    def __init__(self, storage: Storage, box: SecretBox) -> None:
        self._storage = storage
        self._box = box
        self._codes: RecoveryCodes | None = None
        self._loading = asyncio.Lock()

    async def codes(self) -> RecoveryCodes:
        """Recovery codes under the stored pepper (read once, made on first use)."""
        if self._codes is not None:
            return self._codes
        async with self._loading:
            if self._codes is None:
                record = await self._record()
                sealed = record.document["pepper"]
                self._codes = RecoveryCodes(base64.b64decode(self._box.decrypt(sealed, aad=_AAD)))
            return self._codes

    async def _record(self) -> Record:
        record = await self._storage.record_get(KIND, KEY)
        if record is not None:
            return record
        pepper = base64.b64encode(self._box.derive_key("recovery-codes")).decode("ascii")
        document = {"pepper": self._box.encrypt(pepper, aad=_AAD)}
        # Workers racing to make it: the create-only put lets one win, and all read the winner's.
        await self._storage.record_put(KIND, KEY, document, expected_rev=None)
        record = await self._storage.record_get(KIND, KEY)
        assert record is not None, "the recovery-code pepper vanished while being created"
        return record

    async def restore(self, document: Document) -> None:
        """Take in a backup's pepper, so its users' recovery codes match here. A store that has a
        pepper of its own keeps it if it is the same, and refuses a different one (its digests would
        stop matching). Raises SecretBoxError before writing if the backup's pepper does not open."""
        wanted = self._box.decrypt(document["pepper"], aad=_AAD)
        record = await self._storage.record_get(KIND, KEY)
        if record is None:
            if await self._storage.record_put(KIND, KEY, document, expected_rev=None) is not None:
                return
            record = await self._storage.record_get(KIND, KEY)
            assert record is not None, "the recovery-code pepper vanished while being restored"
        if not secrets_equal(self._box.decrypt(record.document["pepper"], aad=_AAD), wanted):
            raise PepperConflict("This store already has another recovery-code pepper")

    async def reseal(self) -> tuple[int, int]:
        """Re-seal the pepper if an older master secret sealed it; (re-sealed, already current)."""
        for _ in range(_WRITE_RETRIES):
            record = await self._storage.record_get(KIND, KEY)
            if record is None:
                return 0, 0
            sealed = record.document["pepper"]
            if not self._box.needs_rotation(sealed):
                return 0, 1
            document = {**record.document, "pepper": self._box.rotate(sealed, aad=_AAD)}
            if await self._storage.record_put(KIND, KEY, document, expected_rev=record.rev) is not None:
                return 1, 0
        raise RuntimeError("The recovery-code pepper kept changing while being re-sealed; try again")
