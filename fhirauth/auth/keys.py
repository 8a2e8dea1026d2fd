"""The RS256 signing keys: made on first start, kept in storage with the private part sealed.

One record (kind "signing-key") holds the key set, newest first: the newest signs, all are
published at /.well-known/jwks.json. A rotation puts a new key in front with compare-and-set;
until then the set holds the one key made at first start.
"""

from __future__ import annotations

import asyncio
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

from fhirauth.clock import Clock, isoformat
from fhirauth.secretbox import SecretBox
from fhirauth.storage.base import Storage

Document = dict[str, Any]

KIND = "signing-key"
KEY = "rs256"
ALGORITHM = "RS256"
_RSA_BITS = 2048


def _aad(kid: str) -> str:
    # Binds each sealed private key to its own kid: a sealed blob copied onto another entry does not open.
    return f"signing-key:{kid}"


def _new_entry(box: SecretBox, created: str) -> Document:
    key = RSAKey.generate_key(_RSA_BITS, private=True)
    kid = key.thumbprint()
    return {
        "kid": kid,
        "created": created,
        "private": box.encrypt(key.as_pem(private=True).decode("ascii"), aad=_aad(kid)),
    }


def _open_entry(box: SecretBox, entry: Document) -> RSAKey:
    kid = entry["kid"]
    pem = box.decrypt(entry["private"], aad=_aad(kid))
    return RSAKey.import_key(pem, {"kid": kid, "use": "sig", "alg": ALGORITHM})


class SigningKeys:
    def __init__(self, storage: Storage, box: SecretBox, clock: Clock) -> None:
        self._storage = storage
        self._box = box
        self._clock = clock
        self._keys: list[RSAKey] = []
        self._loading = asyncio.Lock()

    async def load(self) -> None:
        """Read the key set, making it first if there is none.

        Workers starting together race to create it: the create-only put lets exactly one win, and
        the others read the winner's set.
        """
        async with self._loading:
            if self._keys:
                return
            record = await self._storage.record_get(KIND, KEY)
            if record is None:
                entries = {"keys": [_new_entry(self._box, isoformat(self._clock()))]}
                created = await self._storage.record_put(KIND, KEY, entries, expected_rev=None)
                if created is None:
                    record = await self._storage.record_get(KIND, KEY)
                    assert record is not None, "the signing key set vanished while being created"
                    entries = record.document
            else:
                entries = record.document
            self._keys = [_open_entry(self._box, entry) for entry in entries["keys"]]

    async def _current(self) -> list[RSAKey]:
        if not self._keys:
            await self.load()
        return self._keys

    async def sign(self, claims: Document) -> str:
        key = (await self._current())[0]
        header = {"alg": ALGORITHM, "typ": "JWT", "kid": key.kid}
        return jwt.encode(header, claims, key, algorithms=[ALGORITHM])

    async def jwks(self) -> Document:
        keys = await self._current()
        return {"keys": [key.as_dict(private=False) for key in keys]}
