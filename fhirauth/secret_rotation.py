"""`fhirauth secrets rotate`: re-seal under the first master secret everything sealed under another.

Run while the servers hold both master secrets (FHIRAUTH_SECRET_KEY = new, FHIRAUTH_PREVIOUS_SECRET_KEYS
= [old]); afterwards the old one can go. Every write is a compare-and-set of one resource or record,
so servers keep serving meanwhile: a value changed under our feet is read again, and a second run
finds nothing left to do. Only current versions are re-sealed; older versions in a resource's
history keep the ciphertext they were written with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhirauth.auth.keys import SigningKeys
from fhirauth.errors import PreconditionFailed
from fhirauth.resources.secrets import ENCRYPTED
from fhirauth.resources.service import ResourceService
from fhirauth.secretbox import SecretBoxError
from fhirauth.twofactor.pepper import RecoveryPepper

Document = dict[str, Any]

_SAVE_RETRIES = 5


@dataclass
class Resealed:
    """What one rotation did to one kind of sealed value: how many it re-sealed, how many were sealed
    under the first master secret already, and which ones (by id) it could not open or kept losing
    a compare-and-set on."""

    what: str
    resealed: int = 0
    current: int = 0
    unreadable: list[str] = field(default_factory=list)
    changing: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.unreadable and not self.changing


async def rotate_secrets(
    resources: ResourceService, keys: SigningKeys, pepper: RecoveryPepper
) -> list[Resealed]:
    results = [await _reseal_resources(resources, resource_type) for resource_type in ENCRYPTED]
    signing = Resealed("signing keys")
    signing.resealed, signing.current = await keys.reseal()
    recovery = Resealed("recovery-code pepper")
    recovery.resealed, recovery.current = await pepper.reseal()
    return [*results, signing, recovery]


async def _reseal_resources(resources: ResourceService, resource_type: str) -> Resealed:
    result = Resealed(f"{resource_type} {', '.join(ENCRYPTED[resource_type])}")
    for first_read in await resources.storage.all_resources(resource_type):
        doc: Document | None = first_read
        for _ in range(_SAVE_RETRIES):
            if doc is None or not resources.secrets.sealed_fields(doc):
                break
            try:
                resealed = resources.secrets.reseal(doc)
            except SecretBoxError:
                result.unreadable.append(doc["id"])
                break
            if resealed is None:
                result.current += 1
                break
            try:
                await resources.save(resealed, int(doc["meta"]["versionId"]))
            except PreconditionFailed:
                # Changed meanwhile (a sign-in, an edit): read it again and retry.
                stored = await resources.find(resource_type, doc["id"])
                doc = None if stored is None or stored.deleted else stored.document
                continue
            result.resealed += 1
            break
        else:
            result.changing.append(first_read["id"])
    return result
