"""Clients: the root client from settings, and Client resources with hashed secrets."""

from __future__ import annotations

import asyncio
import hashlib
import time
import weakref
from collections import OrderedDict
from typing import Any

from fhirauth.auth.client_auth import ClientAuthLimits
from fhirauth.auth.passwords import PasswordHasher
from fhirauth.resources.service import ResourceService
from fhirauth.security import secrets_equal

Document = dict[str, Any]

GRANT_ALIASES = {"code": "authorization_code"}
_VERIFIED_CACHE_SIZE = 4096
_VERIFIED_TTL_SECONDS = 300
_CLIENT_CACHE_SECONDS = 2.0
_CLIENT_CACHE_SIZE = 1024
# (client id, its version, SHA-256 of the presented secret)
_VerifiedKey = tuple[str, str, str]


def is_active(client: Document) -> bool:
    """Whether a Client is in service; an inactive one is found by no lookup (`ClientRegistry.get`)
    and its origins are not allowed. Aidbox's Client is active unless it says `active: false`."""
    return client.get("active") is not False


class ClientRegistry:
    def __init__(
        self,
        resources: ResourceService,
        passwords: PasswordHasher,
        root_id: str,
        root_secret: str,
        limits: ClientAuthLimits,
    ) -> None:
        self._resources = resources
        self._passwords = passwords
        self._limits = limits
        self._root_id = root_id
        self._root_secret = root_secret
        # Argon2 costs ~20 ms by design; a Basic-authenticated API client would pay it on every call.
        # Remember successful verifications of (client, version, secret digest) for a few minutes.
        self._verified: OrderedDict[_VerifiedKey, float] = OrderedDict()
        self._verifying: dict[_VerifiedKey, asyncio.Future[bool]] = {}
        # Gone with their last holder or waiter.
        self._turns: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._cached: dict[str, tuple[float, Document | None]] = {}
        resources.on_change("Client", self._forget)

    @property
    def root_id(self) -> str:
        return self._root_id

    @property
    def failures_idle(self) -> bool:
        """Whether no failed client authentication is known: then none can be refused."""
        return self._limits.idle

    def _is_root(self, client_id: str, secret: str) -> bool:
        # Both comparisons always run, so timing does not tell which part was wrong.
        id_ok = secrets_equal(client_id, self._root_id)
        secret_ok = secrets_equal(secret, self._root_secret)
        return id_ok and secret_ok

    def root_document(self) -> Document:
        return {"resourceType": "Client", "id": self._root_id, "grant_types": ["basic", "client_credentials"]}

    async def get(self, client_id: str) -> Document | None:
        """The active Client, as read at most two seconds ago: every token request and every bearer
        request names its client, and clients rarely change.

        Writes through this process's ResourceService clear the cache at once; other workers' writes
        show up within two seconds (monotonic time: this bounds staleness, it is not a rule of the
        domain).
        """
        if client_id == self._root_id:
            return self.root_document()
        now = time.monotonic()
        hit = self._cached.get(client_id)
        if hit is not None and now - hit[0] < _CLIENT_CACHE_SECONDS:
            return hit[1]
        stored = await self._resources.find("Client", client_id)
        client = stored.document if stored is not None and is_active(stored.document) else None
        if len(self._cached) >= _CLIENT_CACHE_SIZE:
            self._cached.clear()
        self._cached[client_id] = (now, client)
        return client

    async def _forget(self, before: Document | None, after: Document | None) -> None:
        self._cached.clear()

    async def authenticate(self, client_id: str, secret: str) -> Document | None:
        """The Client whose secret this is, or None; RateLimited, with nothing hashed, once failures
        from the request's address or naming this client have reached their limit (ClientAuthLimits).

        An id naming no client with a secret costs no verification: client ids are not secrets
        (RFC 6749 §2.2), and a request without a secret is told "Unknown client" anyway.
        """
        # Before any comparison, the root's included: an address past its limit is refused whether
        # its guess is right or wrong, so the answer tells it nothing.
        self._limits.check_address()
        if client_id == self._root_id:
            return await self._authenticate_root(client_id, secret)
        client = await self.get(client_id)
        stored_hash = client.get("secret") if client else None
        if not isinstance(stored_hash, str):
            await self._limits.failed(None)
            return None
        assert client is not None
        key = (client_id, client["meta"]["versionId"], hashlib.sha256(secret.encode()).hexdigest())
        seen = self._verified.get(key)
        if seen is not None and time.monotonic() - seen < _VERIFIED_TTL_SECONDS:
            return client
        # Requests arriving together with the same secret share one verification: a client's first
        # burst (a pool of connections opening at once) would otherwise queue an Argon2 run per request.
        verifying = self._verifying.get(key)
        if verifying is None:
            verifying = asyncio.ensure_future(self._verify(key, stored_hash, secret))
            self._verifying[key] = verifying
            verifying.add_done_callback(lambda _: self._verifying.pop(key, None))
        # Shielded: one caller giving up must not cancel the verification the others wait for.
        return client if await asyncio.shield(verifying) else None

    async def _authenticate_root(self, client_id: str, secret: str) -> Document | None:
        if self._is_root(client_id, secret):
            return self.root_document()
        # Against the address alone: counted against the root's id, anyone's guesses would lock the
        # administrator out.
        await self._limits.failed(None)
        return None

    async def _verify(self, key: _VerifiedKey, stored_hash: str, secret: str) -> bool:
        client_id = key[0]
        # One client's secrets are verified one at a time: wrong secrets naming one client then hold
        # one hashing thread at most, and leave the others to sign-ins.
        turn = self._turns.setdefault(client_id, asyncio.Lock())
        async with turn:
            with self._limits.attempt(client_id):
                verified = await self._passwords.verify_async(stored_hash, secret)
            if not verified:
                # Counted before the turn passes on, so the next in line sees it.
                await self._limits.failed(client_id)
                return False
        self._verified[key] = time.monotonic()
        if len(self._verified) > _VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return True

    @staticmethod
    def allows_grant(client: Document, grant: str) -> bool:
        wanted = GRANT_ALIASES.get(grant, grant)
        return any(GRANT_ALIASES.get(g, g) == wanted for g in client.get("grant_types", []))
