"""The RS256 signing keys: made on first start, kept in storage with the private part sealed.

One record (kind "signing-key") holds the key set, newest first. `fhirauth keys rotate` puts a new
key in front with compare-and-set: it is published at once and signs from `signsFrom`
(PUBLISH_AHEAD_SECONDS later), so every server publishes it before any server signs with it. The
keys it replaces get `retires` = `signsFrom` + the longest access-token lifetime: they stay in
/.well-known/jwks.json until every token they signed has expired, then leave (pruned from the record
by the next rotation). Running servers re-read the record at most RELOAD_SECONDS apart, when they
sign or publish: a request that finds the set read longer ago waits for the read, and from
REFRESH_SECONDS on one read in the background renews it while requests use the set held. They never
verify their own JWTs by signature (a bearer token is found by its hash), so the JWKS is for outside
verifiers only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

from fhirauth.clock import Clock, isoformat
from fhirauth.secretbox import SecretBox
from fhirauth.storage.base import Record, Storage, StorageUnavailable

Document = dict[str, Any]

log = logging.getLogger("fhirauth.keys")

KIND = "signing-key"
KEY = "rs256"
ALGORITHM = "RS256"
RELOAD_SECONDS = 10
# A worker that serves requests renews its set in the background from this age, so none of them waits
# for the read (in a MongoDB outage, one server-selection timeout). RELOAD_SECONDS stays the hard bound
# that rotation relies on: a set past it is read again before it answers, because an idle worker's set
# may predate a rotation, and published as it is, lack the key another server already signs with.
REFRESH_SECONDS = RELOAD_SECONDS / 2
_RELOAD = timedelta(seconds=RELOAD_SECONDS)
_REFRESH = timedelta(seconds=REFRESH_SECONDS)
PUBLISH_AHEAD_SECONDS = 2 * RELOAD_SECONDS
# Verifiers commonly accept a JWT up to a minute past `exp` (clock leeway); a replaced key stays as long.
VERIFIER_LEEWAY_SECONDS = 60
_RSA_BITS = 2048
_WRITE_RETRIES = 5


def _aad(kid: str) -> str:
    # Binds each sealed private key to its own kid: a sealed blob copied onto another entry does not open.
    return f"signing-key:{kid}"


def _new_entry(box: SecretBox, created: datetime) -> Document:
    key = RSAKey.generate_key(_RSA_BITS, private=True)
    kid = key.thumbprint()
    return {
        "kid": kid,
        "created": isoformat(created),
        "private": box.encrypt(key.as_pem(private=True).decode("ascii"), aad=_aad(kid)),
    }


def _moment(entry: Document, field: str) -> datetime | None:
    value = entry.get(field)
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _retired(entry: Document, now: datetime) -> bool:
    retires = _moment(entry, "retires")
    return retires is not None and retires <= now


@dataclass(frozen=True)
class _Key:
    key: RSAKey
    signs_from: datetime | None
    retires: datetime | None

    def published(self, now: datetime) -> bool:
        return self.retires is None or self.retires > now

    def signs(self, now: datetime) -> bool:
        return self.signs_from is None or self.signs_from <= now


def _open_entry(box: SecretBox, entry: Document) -> _Key:
    kid = entry["kid"]
    pem = box.decrypt(entry["private"], aad=_aad(kid))
    key = RSAKey.import_key(pem, {"kid": kid, "use": "sig", "alg": ALGORITHM})
    return _Key(key, _moment(entry, "signsFrom"), _moment(entry, "retires"))


@dataclass(frozen=True)
class Rotation:
    """What `rotate` did: the new key, when it signs, when the keys it replaced leave, what it pruned."""

    kid: str
    signs_from: datetime
    retiring: dict[str, datetime]
    pruned: list[str]


class SigningKeys:
    def __init__(self, storage: Storage, box: SecretBox, clock: Clock) -> None:
        self._storage = storage
        self._box = box
        self._clock = clock
        self._keys: list[_Key] = []
        self._rev: int | None = None
        self._read_at: datetime | None = None
        self._loading = asyncio.Lock()
        self._refreshing: asyncio.Task[None] | None = None
        # Loads that failed on storage: how a caller waiting for the lock learns that the one before it
        # failed.
        self._failed_loads = 0
        # Its own pool, one thread per core: anyio's to_thread costs more per call (a capacity limiter
        # and a checkpoint around the handoff), and a sign is short enough for that to show.
        self._signers = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="jwt-sign")

    async def load(self) -> None:
        """Read the key set, making it first if there is none.

        Workers starting together race to create it: the create-only put lets exactly one win, and
        the others read the winner's set.
        """
        await self._load(_RELOAD)

    async def _load(self, older_than: timedelta | None) -> None:
        """Read the key set if the one held was read `older_than` ago or longer; if None, read it anyway
        (after a write of ours, which a load that read before it and finished while we waited would hide).
        """
        failed_loads = self._failed_loads
        async with self._loading:
            if older_than is not None and not self._older_than(older_than):
                return
            if self._failed_loads != failed_loads:
                # Trying again, each waiter in turn, answered the k-th one after k storage timeouts
                # (a worker that never loaded the keys, in a MongoDB outage).
                raise StorageUnavailable("storage failed the signing key load this call waited for")
            try:
                record = await self._record()
            except StorageUnavailable:
                self._failed_loads += 1
                raise
            if record.rev != self._rev:
                self._keys = [_open_entry(self._box, entry) for entry in record.document["keys"]]
                self._rev = record.rev
            self._read_at = self._clock()

    def _older_than(self, age: timedelta) -> bool:
        return self._read_at is None or self._clock() - self._read_at >= age

    async def _record(self) -> Record:
        record = await self._storage.record_get(KIND, KEY)
        if record is not None:
            return record
        document = {"keys": [_new_entry(self._box, self._clock())]}
        await self._storage.record_put(KIND, KEY, document, expected_rev=None)
        record = await self._storage.record_get(KIND, KEY)
        assert record is not None, "the signing key set vanished while being created"
        return record

    async def _current(self) -> list[_Key]:
        if self._older_than(_RELOAD):
            try:
                await self.load()
            except StorageUnavailable:
                if not self._keys:
                    raise
                self._hold_through_outage()
        elif self._older_than(_REFRESH) and self._refreshing is None:
            self._refreshing = asyncio.create_task(self._refresh())
        now = self._clock()
        return [key for key in self._keys if key.published(now)]

    async def _refresh(self) -> None:
        try:
            await self._load(_REFRESH)
        except StorageUnavailable:
            self._hold_through_outage()
        except Exception:
            # Not an outage (the stored set does not open, say): the set held must not pass for fresh,
            # so the requests after RELOAD_SECONDS read it themselves and fail with it, as they did
            # before reads moved to the background. The traceback names no key material.
            log.exception("reloading the signing key set failed")
        finally:
            self._refreshing = None

    def _hold_through_outage(self) -> None:
        """Count a read that storage failed as made. An outage must not take the published keys down
        with it: the set held keeps serving, and the next try is REFRESH_SECONDS from now, not the next
        request's, so a storage that is down gets one read per REFRESH_SECONDS from a busy worker and
        its requests never reach RELOAD_SECONDS and wait."""
        self._read_at = self._clock()

    async def close(self) -> None:
        """Stop a background reload in flight, before storage closes under it."""
        if self._refreshing is not None:
            self._refreshing.cancel()
            await asyncio.wait([self._refreshing])

    async def sign(self, claims: Document) -> str:
        now = self._clock()
        for entry in await self._current():
            if entry.signs(now):
                header = {"alg": ALGORITHM, "typ": "JWT", "kid": entry.key.kid}
                # pyca/cryptography releases the GIL while it signs (about 0.7 ms for RSA-2048), so a
                # thread per core lets one worker sign on every core while the loop serves requests.
                encode = functools.partial(jwt.encode, header, claims, entry.key, algorithms=[ALGORITHM])
                return await asyncio.get_running_loop().run_in_executor(self._signers, encode)
        # The newest key never retires, and the one it replaced outlives its signsFrom.
        raise LookupError("No signing key is active")

    async def jwks(self) -> Document:
        return {"keys": [entry.key.as_dict(private=False) for entry in await self._current()]}

    async def rotate(self, retire_after: int) -> Rotation:
        """Add a new key in front; the keys still without a retirement time leave `retire_after`
        seconds after the new one starts signing. Retired keys are dropped from the record."""
        if retire_after < 0:
            raise ValueError("retire_after must not be negative")
        for _ in range(_WRITE_RETRIES):
            record = await self._record()
            now = self._clock()
            signs_from = now + timedelta(seconds=PUBLISH_AHEAD_SECONDS)
            retires = signs_from + timedelta(seconds=retire_after)
            new = {**_new_entry(self._box, now), "signsFrom": isoformat(signs_from)}
            kept: list[Document] = []
            retiring: dict[str, datetime] = {}
            for entry in record.document["keys"]:
                if _retired(entry, now):
                    continue
                if "retires" not in entry:
                    entry = {**entry, "retires": isoformat(retires)}
                    retiring[entry["kid"]] = retires
                kept.append(entry)
            pruned = [entry["kid"] for entry in record.document["keys"] if _retired(entry, now)]
            document = {**record.document, "keys": [new, *kept]}
            if await self._storage.record_put(KIND, KEY, document, expected_rev=record.rev) is not None:
                await self._reload_now()
                return Rotation(new["kid"], signs_from, retiring, pruned)
        raise RuntimeError("The signing key set kept changing while being rotated; try again")

    async def reseal(self) -> tuple[int, int]:
        """Re-seal the private keys sealed under an older master secret; (re-sealed, already current)."""
        for _ in range(_WRITE_RETRIES):
            record = await self._storage.record_get(KIND, KEY)
            if record is None:
                return 0, 0
            entries = record.document["keys"]
            stale = [entry for entry in entries if self._box.needs_rotation(entry["private"])]
            if not stale:
                return 0, len(entries)
            resealed = [
                {**entry, "private": self._box.rotate(entry["private"], aad=_aad(entry["kid"]))}
                if entry in stale
                else entry
                for entry in entries
            ]
            document = {**record.document, "keys": resealed}
            if await self._storage.record_put(KIND, KEY, document, expected_rev=record.rev) is not None:
                await self._reload_now()
                return len(stale), len(entries) - len(stale)
        raise RuntimeError("The signing key set kept changing while being re-sealed; try again")

    async def restore(self, document: Document) -> None:
        """Take in a backup's key set. Into an empty store it comes back as it was; where a set exists,
        that set keeps signing and the backup's other keys are published beside it, so JWTs signed
        before the backup still verify. Raises SecretBoxError before writing if a key does not open."""
        for entry in document["keys"]:
            _open_entry(self._box, entry)
        for _ in range(_WRITE_RETRIES):
            record = await self._storage.record_get(KIND, KEY)
            if record is None:
                if await self._storage.record_put(KIND, KEY, document, expected_rev=None) is not None:
                    return
                continue
            known = {entry["kid"] for entry in record.document["keys"]}
            added = [entry for entry in document["keys"] if entry["kid"] not in known]
            if not added:
                return
            merged = {**record.document, "keys": [*record.document["keys"], *added]}
            if await self._storage.record_put(KIND, KEY, merged, expected_rev=record.rev) is not None:
                return
        raise RuntimeError("The signing key set kept changing while being restored; try again")

    async def _reload_now(self) -> None:
        await self._load(None)
