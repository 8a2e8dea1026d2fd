"""The JWT signing keys, one set per algorithm (RS256, the default; ES256; EdDSA with Ed25519): made on
first start, kept in storage with the private parts sealed.

One record (kind "signing-key") holds the sets, each newest first: RS256's under `keys` (where it has
always been, so a server of an earlier version still reads it, and keeps the other sets when it
rotates), the others under a field of their own (ALGORITHMS). `fhirauth keys rotate` puts a new key
in front of each set with one compare-and-set: it is published at once and signs from `signsFrom`
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
import base64
import binascii
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from fhirauth.clock import Clock, isoformat
from fhirauth.secretbox import SecretBox
from fhirauth.storage.base import Record, Storage, StorageUnavailable

Document = dict[str, Any]
SigningKey = RSAKey | ECKey | OKPKey

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


@dataclass(frozen=True)
class _Algorithm:
    name: str
    # Where the record keeps this algorithm's set.
    field: str
    key_type: type[SigningKey]
    generate: Callable[[], SigningKey]
    # OpenID Connect Core §3.1.3.6 (at_hash, c_hash): the hash of the signature's algorithm; SHA-512
    # for Ed25519 (Core errata set 2).
    half_hash: Callable[[bytes], Any]


_ALGORITHMS = {
    algorithm.name: algorithm
    for algorithm in (
        _Algorithm(
            "RS256", "keys", RSAKey, lambda: RSAKey.generate_key(_RSA_BITS, private=True), hashlib.sha256
        ),
        _Algorithm(
            "ES256", "es256Keys", ECKey, lambda: ECKey.generate_key("P-256", private=True), hashlib.sha256
        ),
        _Algorithm(
            "EdDSA", "eddsaKeys", OKPKey, lambda: OKPKey.generate_key("Ed25519", private=True), hashlib.sha512
        ),
    )
}
#: The algorithms a JWT can be signed with (Client.auth.<flow>.token_signing_alg,
#: Client.id_token_signed_response_alg), the default first.
ALGORITHMS = tuple(_ALGORITHMS)


class UnsupportedAlgorithm(ValueError):
    """An algorithm fhirauth holds no signing keys for."""


def _algorithm(name: str) -> _Algorithm:
    try:
        return _ALGORITHMS[name]
    except KeyError:
        raise UnsupportedAlgorithm(f"No signing keys for '{name}': one of {', '.join(ALGORITHMS)}") from None


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class JWTSigner:
    """Signs JWTs with one key. The header is encoded once; a JWT costs the claims' encoding and the
    signature, nothing else (joserfc's jwt.encode re-validates and re-encodes the header and looks the
    algorithm up on every call: as much again as an ES256 signature)."""

    __slots__ = ("_header", "_key", "_model", "_half_hash", "alg", "kid")

    def __init__(self, algorithm: _Algorithm, key: SigningKey) -> None:
        self.alg = algorithm.name
        self.kid: str = key.kid or key.thumbprint()
        self._header = _b64(orjson.dumps({"alg": self.alg, "typ": "JWT", "kid": self.kid})) + b"."
        self._key = key
        # From the registry's table, not get_alg(), which warns on each call that RFC 9864 prefers
        # "Ed25519" to "EdDSA": verifiers know "EdDSA".
        self._model: JWSAlgModel = JWSRegistry.algorithms[self.alg]
        self._half_hash = algorithm.half_hash

    def sign(self, claims: Mapping[str, Any]) -> str:
        """A compact JWS of `claims` (RFC 7515 §7.1), with `alg`, `typ` and `kid` in its header."""
        signing_input = self._header + _b64(orjson.dumps(claims))
        return (signing_input + b"." + _b64(self._model.sign(signing_input, self._key))).decode("ascii")

    def half_hash(self, value: str) -> str:
        """`at_hash` / `c_hash` of `value` for a token this key signs (OpenID Connect Core §3.1.3.6)."""
        digest = self._half_hash(value.encode("ascii")).digest()
        return _b64(digest[: len(digest) // 2]).decode("ascii")

    def verifies(self, signing_input: bytes, signature: bytes) -> bool:
        try:
            return bool(self._model.verify(signing_input, signature, self._key))
        except ValueError:
            return False


class _SigningTurn:
    """The signatures asked for in one turn of the event loop, made back to back at the start of the
    next. A signature right after the rest of a request's work costs about twice what the next one
    costs (in-process, ES256: ~75 µs against ~35 µs; RS256 ~55 µs more than in a loop): the curve's
    tables and OpenSSL's code are out of the CPU's caches. Under load the requests whose bytes came
    in together reach their signature in the same turn, and all but the first find the caches warm.
    A request alone waits one turn of the loop, no longer."""

    def __init__(self) -> None:
        self._pending: list[tuple[JWTSigner, Mapping[str, Any], asyncio.Future[str]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def sign(self, signer: JWTSigner, claims: Mapping[str, Any]) -> asyncio.Future[str]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        if not self._pending:
            self._loop = loop
            loop.call_soon(self._sign_all)
        elif loop is not self._loop:
            # One SigningKeys used from a second event loop (tests, tools): a turn belongs to one.
            future.set_result(signer.sign(claims))
            return future
        self._pending.append((signer, claims, future))
        return future

    def _sign_all(self) -> None:
        pending, self._pending = self._pending, []
        for signer, claims, future in pending:
            if future.cancelled():
                continue
            try:
                future.set_result(signer.sign(claims))
            except Exception as error:
                # Not swallowed: raised in the request that asked for this signature, where it awaits.
                future.set_exception(error)


_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _b64decode(segment: str) -> bytes:
    """base64url without padding (RFC 7515 §2), strictly: binascii's strict mode, at half the cost of
    base64.b64decode(altchars=..., validate=True), which translates and matches a pattern first."""
    padded = (segment + "=" * (-len(segment) % 4)).encode("ascii")
    return binascii.a2b_base64(padded.translate(_URLSAFE), strict_mode=True)


def compact_parts(token: str) -> tuple[Document, Document, bytes, bytes] | None:
    """A compact JWS's header, claims, signing input and signature (RFC 7515 §7.1), each part decoded
    strictly; None unless it is one whose header and payload are JSON objects."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header, claims = orjson.loads(_b64decode(parts[0])), orjson.loads(_b64decode(parts[1]))
        signature = _b64decode(parts[2])
        signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    except ValueError:
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return header, claims, signing_input, signature


def _aad(kid: str) -> str:
    # Binds each sealed private key to its own kid: a sealed blob copied onto another entry does not open.
    return f"signing-key:{kid}"


def _new_entry(algorithm: _Algorithm, box: SecretBox, created: datetime) -> Document:
    key = algorithm.generate()
    kid = key.thumbprint()
    return {
        "kid": kid,
        "created": isoformat(created),
        "private": box.encrypt(key.as_pem(private=True).decode("ascii"), aad=_aad(kid)),
    }


def _new_sets(box: SecretBox, created: datetime, stored: Document) -> Document:
    """A set of one key for each algorithm the `stored` record lacks."""
    return {
        algorithm.field: [_new_entry(algorithm, box, created)]
        for algorithm in _ALGORITHMS.values()
        if algorithm.field not in stored
    }


def _moment(entry: Document, field: str) -> datetime | None:
    value = entry.get(field)
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _retired(entry: Document, now: datetime) -> bool:
    retires = _moment(entry, "retires")
    return retires is not None and retires <= now


@dataclass(frozen=True)
class _Key:
    signer: JWTSigner
    public: Document
    signs_from: datetime | None
    retires: datetime | None

    def published(self, now: datetime) -> bool:
        return self.retires is None or self.retires > now

    def signs(self, now: datetime) -> bool:
        return self.signs_from is None or self.signs_from <= now


def _open_entry(algorithm: _Algorithm, box: SecretBox, entry: Document) -> _Key:
    kid = entry["kid"]
    pem = box.decrypt(entry["private"], aad=_aad(kid))
    key = algorithm.key_type.import_key(pem, {"kid": kid, "use": "sig", "alg": algorithm.name})
    return _Key(
        JWTSigner(algorithm, key),
        key.as_dict(private=False),
        _moment(entry, "signsFrom"),
        _moment(entry, "retires"),
    )


def _open_sets(box: SecretBox, document: Document) -> dict[str, list[_Key]]:
    return {
        algorithm.name: [_open_entry(algorithm, box, entry) for entry in document.get(algorithm.field, [])]
        for algorithm in _ALGORITHMS.values()
    }


@dataclass(frozen=True)
class Rotation:
    """What `rotate` did to one algorithm's set: the new key, when it signs, when the keys it replaced
    leave, what it pruned."""

    alg: str
    kid: str
    signs_from: datetime
    retiring: dict[str, datetime]
    pruned: list[str]


class SigningKeys:
    def __init__(self, storage: Storage, box: SecretBox, clock: Clock) -> None:
        self._storage = storage
        self._box = box
        self._clock = clock
        self._keys: dict[str, list[_Key]] = {}
        self._rev: int | None = None
        self._read_at: datetime | None = None
        self._loading = asyncio.Lock()
        self._refreshing: asyncio.Task[None] | None = None
        # Loads that failed on storage: how a caller waiting for the lock learns that the one before it
        # failed.
        self._failed_loads = 0
        self._turn = _SigningTurn()

    async def load(self) -> None:
        """Read the key sets, making those there are none of yet.

        Workers starting together race to create them: the compare-and-set lets exactly one win, and
        the others read the winner's sets.
        """
        await self._load(_RELOAD)

    async def _load(self, older_than: timedelta | None) -> None:
        """Read the key sets if the ones held were read `older_than` ago or longer; if None, read them
        anyway (after a write of ours, which a load that read before it and finished while we waited
        would hide).
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
                self._keys = _open_sets(self._box, record.document)
                self._rev = record.rev
            self._read_at = self._clock()

    def _older_than(self, age: timedelta) -> bool:
        return self._read_at is None or self._clock() - self._read_at >= age

    async def _record(self) -> Record:
        """The stored record, with a set for every algorithm. A set that is missing (a new store, or
        one written before its algorithm was added) is made with a key that signs at once: no server
        could sign with that algorithm before."""
        for _ in range(_WRITE_RETRIES):
            record = await self._storage.record_get(KIND, KEY)
            missing = _new_sets(self._box, self._clock(), record.document if record is not None else {})
            if not missing:
                assert record is not None
                return record
            if record is None:
                await self._storage.record_put(KIND, KEY, missing, expected_rev=None)
            else:
                document = {**record.document, **missing}
                await self._storage.record_put(KIND, KEY, document, expected_rev=record.rev)
            # Won or lost, the stored record is read again: a loser takes the winner's keys.
        raise RuntimeError("The signing key set kept changing while being completed; try again")

    async def _current(self) -> dict[str, list[_Key]]:
        if self._older_than(_RELOAD):
            try:
                await self.load()
            except StorageUnavailable:
                if not self._keys:
                    raise
                self._hold_through_outage()
        elif self._older_than(_REFRESH) and self._refreshing is None:
            self._refreshing = asyncio.create_task(self._refresh())
        return self._keys

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

    async def signer_for(self, alg: str = ALGORITHM) -> JWTSigner:
        """The signer of `alg` whose time has come; UnsupportedAlgorithm for one fhirauth has no keys
        for. Its `sign` runs on the event loop: a signature costs 0.02 ms (ES256) to 0.3 ms (RS256), and
        handing it to a thread cost more CPU than that (bench/README.md)."""
        _algorithm(alg)
        now = self._clock()
        for entry in (await self._current())[alg]:
            if entry.signs(now):
                return entry.signer
        # The newest key never retires, and the one it replaced outlives its signsFrom.
        raise LookupError(f"No {alg} signing key is active")

    async def sign(self, claims: Mapping[str, Any], alg: str = ALGORITHM) -> str:
        return await self.sign_with(await self.signer_for(alg), claims)

    async def sign_with(self, signer: JWTSigner, claims: Mapping[str, Any]) -> str:
        """`signer.sign(claims)`, made with the other signatures of this turn of the event loop."""
        return await self._turn.sign(signer, claims)

    async def verified_claims(self, token: str) -> Document | None:
        """The claims of a JWT signed with a published key of ours, by the `alg` and `kid` its header
        names; None for anything else. Its `exp` is not looked at: the caller decides whether an expired
        token of ours still says something (an id_token_hint does, Core §3.1.2.1)."""
        parts = compact_parts(token)
        if parts is None:
            return None
        header, claims, signing_input, signature = parts
        alg, kid = header.get("alg"), header.get("kid")
        # RFC 7515 §4.1.11: we put no critical extension in our tokens.
        if alg not in _ALGORITHMS or not isinstance(kid, str) or "crit" in header:
            return None
        now = self._clock()
        for entry in (await self._current())[alg]:
            if entry.signer.kid == kid and entry.published(now):
                return claims if entry.signer.verifies(signing_input, signature) else None
        return None

    async def jwks(self) -> Document:
        """Every algorithm's published keys, public parts only, each set newest first."""
        now = self._clock()
        sets = (await self._current()).values()
        return {"keys": [entry.public for keys in sets for entry in keys if entry.published(now)]}

    async def rotate(self, retire_after: int, algorithms: tuple[str, ...] = ALGORITHMS) -> list[Rotation]:
        """Add a new key in front of each algorithm's set; the keys still without a retirement time
        leave `retire_after` seconds after the new one starts signing. Retired keys are dropped from
        the record."""
        if retire_after < 0:
            raise ValueError("retire_after must not be negative")
        chosen = [_algorithm(name) for name in algorithms]
        for _ in range(_WRITE_RETRIES):
            record = await self._record()
            now = self._clock()
            signs_from = now + timedelta(seconds=PUBLISH_AHEAD_SECONDS)
            retires = signs_from + timedelta(seconds=retire_after)
            document = dict(record.document)
            rotations = []
            for algorithm in chosen:
                new = {**_new_entry(algorithm, self._box, now), "signsFrom": isoformat(signs_from)}
                kept: list[Document] = []
                retiring: dict[str, datetime] = {}
                for entry in record.document[algorithm.field]:
                    if _retired(entry, now):
                        continue
                    if "retires" not in entry:
                        entry = {**entry, "retires": isoformat(retires)}
                        retiring[entry["kid"]] = retires
                    kept.append(entry)
                pruned = [entry["kid"] for entry in record.document[algorithm.field] if _retired(entry, now)]
                document[algorithm.field] = [new, *kept]
                rotations.append(Rotation(algorithm.name, new["kid"], signs_from, retiring, pruned))
            if await self._storage.record_put(KIND, KEY, document, expected_rev=record.rev) is not None:
                await self._reload_now()
                return rotations
        raise RuntimeError("The signing key set kept changing while being rotated; try again")

    async def reseal(self) -> tuple[int, int]:
        """Re-seal the private keys sealed under an older master secret; (re-sealed, already current)."""
        for _ in range(_WRITE_RETRIES):
            record = await self._storage.record_get(KIND, KEY)
            if record is None:
                return 0, 0
            document = dict(record.document)
            resealed = current = 0
            for field in self._fields(record.document):
                entries = []
                for entry in record.document[field]:
                    if self._box.needs_rotation(entry["private"]):
                        entry = {
                            **entry,
                            "private": self._box.rotate(entry["private"], aad=_aad(entry["kid"])),
                        }
                        resealed += 1
                    else:
                        current += 1
                    entries.append(entry)
                document[field] = entries
            if not resealed:
                return 0, current
            if await self._storage.record_put(KIND, KEY, document, expected_rev=record.rev) is not None:
                await self._reload_now()
                return resealed, current
        raise RuntimeError("The signing key set kept changing while being re-sealed; try again")

    async def restore(self, document: Document) -> None:
        """Take in a backup's key sets. Into an empty store they come back as they were; where sets
        exist, they keep signing and the backup's other keys are published beside them, so JWTs signed
        before the backup still verify. Raises SecretBoxError before writing if a key does not open."""
        _open_sets(self._box, document)
        for _ in range(_WRITE_RETRIES):
            record = await self._storage.record_get(KIND, KEY)
            if record is None:
                if await self._storage.record_put(KIND, KEY, document, expected_rev=None) is not None:
                    return
                continue
            merged = dict(record.document)
            for field in self._fields(document):
                known = {entry["kid"] for entry in record.document.get(field, [])}
                added = [entry for entry in document[field] if entry["kid"] not in known]
                if added:
                    merged[field] = [*record.document.get(field, []), *added]
            if merged == record.document:
                return
            if await self._storage.record_put(KIND, KEY, merged, expected_rev=record.rev) is not None:
                return
        raise RuntimeError("The signing key set kept changing while being restored; try again")

    @staticmethod
    def _fields(document: Document) -> list[str]:
        return [algorithm.field for algorithm in _ALGORITHMS.values() if algorithm.field in document]

    async def _reload_now(self) -> None:
        await self._load(None)
