"""Backups: `fhirauth export` writes every resource as stored, and `fhirauth seed` restores the file.

The export is a collection Bundle read from storage directly, not through the API view: password and
client-secret hashes stay hashes, TOTP secrets stay sealed under the master secret, recovery-code
digests and Session token hashes stay in place. Two storage records ride along as Binary entries,
because signing in afterwards needs them: the signing key set (sealed; JWTs issued before the backup
still verify, and the same key keeps signing) and the recovery-code pepper (sealed; without it no
recovery code would match). A restore needs the master secret the backup was sealed under.

Not carried: resource history and deletions, and short-lived records (authorization codes, pending
sign-ins, rate-limit and lockout counters, the TOTP replay marks), which start afresh.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson

from fhirauth.auth import keys
from fhirauth.auth.keys import SigningKeys
from fhirauth.clock import Clock, isoformat
from fhirauth.resources.bundles import BundleProcessor
from fhirauth.secretbox import SecretBox, SecretBoxError
from fhirauth.seeding import RECORD_CONTENT_TYPE, SeedError, is_record_entry, read_bundle, seed_bundle
from fhirauth.storage.base import Storage
from fhirauth.twofactor import pepper
from fhirauth.twofactor.pepper import PepperConflict, RecoveryPepper

Document = dict[str, Any]

RECORDS = ((keys.KIND, keys.KEY), (pepper.KIND, pepper.KEY))


async def export_bundle(storage: Storage, clock: Clock) -> Document:
    entries: list[Document] = []
    for kind, key in RECORDS:
        record = await storage.record_get(kind, key)
        if record is not None:
            entries.append({"resource": _binary(kind, key, record.document)})
    entries.extend({"resource": resource} for resource in await storage.all_resources())
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": isoformat(clock()),
        "entry": entries,
    }


def _binary(kind: str, key: str, document: Document) -> Document:
    data = orjson.dumps({"kind": kind, "key": key, "document": document})
    return {
        "resourceType": "Binary",
        "id": f"{kind}.{key}",
        "contentType": RECORD_CONTENT_TYPE,
        "data": base64.b64encode(data).decode("ascii"),
    }


def _split(bundle: Any, path: Path) -> tuple[list[tuple[str, Document]], Document]:
    """The records a backup carries, and the Bundle of its resources alone."""
    if not isinstance(bundle, dict) or not isinstance(bundle.get("entry"), list):
        return [], bundle
    records: list[tuple[str, Document]] = []
    resources: list[Any] = []
    for index, entry in enumerate(bundle["entry"]):
        if not is_record_entry(entry):
            resources.append(entry)
            continue
        try:
            record = orjson.loads(base64.b64decode(entry["resource"]["data"], validate=True))
            kind, key, document = record["kind"], record["key"], record["document"]
        except (KeyError, TypeError, ValueError):
            raise SeedError(f"{path}: entry[{index}] is not a storage record") from None
        if (kind, key) not in RECORDS or not isinstance(document, dict):
            raise SeedError(f"{path}: entry[{index}] is a record fhirauth does not restore ({kind}/{key})")
        records.append((kind, document))
    return records, {**bundle, "entry": resources}


def _check_sealed_fields(bundles: BundleProcessor, bundle: Document, path: Path) -> None:
    unreadable = [
        f"{entry['resource']['resourceType']}/{entry['resource'].get('id')} {field}"
        for entry in bundle["entry"]
        if isinstance(entry, dict)
        and isinstance(entry.get("resource"), dict)
        and isinstance(entry["resource"].get("resourceType"), str)
        and isinstance(entry["resource"].get("id"), str)
        for field in bundles.resources.secrets.unreadable_fields(entry["resource"])
    ]
    if unreadable:
        raise SeedError(
            f"{path}: {len(unreadable)} encrypted values do not open with the configured master secrets "
            f"(the first: {unreadable[0]}); set FHIRAUTH_SECRET_KEY to the one the backup was made under"
        )


async def restore_file(
    bundles: BundleProcessor, box: SecretBox, path: Path, *, show_progress: bool = False
) -> Document:
    """Load a Bundle file; a backup's records are restored first, after every sealed value in it was
    checked to open, so a wrong master secret writes nothing."""
    records, bundle = _split(read_bundle(path), path)
    if not records:
        return await seed_bundle(bundles, bundle, path, show_progress=show_progress)
    _check_sealed_fields(bundles, bundle, path)
    storage, clock = bundles.resources.storage, bundles.resources.clock
    # The pepper first: a store with another pepper refuses the restore before anything is written.
    for kind, document in sorted(records, key=lambda record: record[0] != pepper.KIND):
        try:
            if kind == pepper.KIND:
                await RecoveryPepper(storage, box).restore(document)
            else:
                await SigningKeys(storage, box, clock).restore(document)
        except SecretBoxError:
            raise SeedError(
                f"{path}: the {kind} record does not open with the configured master secrets; set "
                "FHIRAUTH_SECRET_KEY to the one the backup was made under"
            ) from None
        except PepperConflict:
            raise SeedError(
                f"{path}: this store has recovery codes under another pepper; restore into an empty store"
            ) from None
    return await seed_bundle(bundles, bundle, path, show_progress=show_progress)
