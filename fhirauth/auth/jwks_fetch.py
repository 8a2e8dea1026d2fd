"""A client's public keys from its `jwks_uri` (SMART Backend Services; RFC 7591 §2): fetched over
https, bounded in time and size, cached, and never from an address inside the network.

The address check resolves the host and refuses every address that is not global (loopback,
private, link-local, shared, reserved, multicast): a jwks_uri is written by whoever registers a
client, and a server that fetched any address would let them probe the network it runs in (SSRF).
The request then goes to the address checked, not to a second resolution of the name (which a
DNS server answering differently the second time would turn to an inner address), with the name
kept for TLS (SNI and certificate) and the Host header. Redirects and proxies are not followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import httpx2
import orjson
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, KeySetSerialization

from fhirauth.clock import Clock

# The whole fetch (resolution, connection, response) must finish in this time.
DEFAULT_TIMEOUT_SECONDS = 3.0
MAX_BYTES = 65_536
# Cache-Control max-age is honoured within these bounds; without one a set is kept DEFAULT_TTL.
MIN_TTL_SECONDS = 60
DEFAULT_TTL_SECONDS = 300
MAX_TTL_SECONDS = 3600
# A kid the cached set lacks (the client rotated its keys) fetches the set again at most this often
# per URI; a failed fetch is not retried sooner either.
REFETCH_SECONDS = 10
_REFETCH = timedelta(seconds=REFETCH_SECONDS)
_CACHE_SIZE = 1024
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\s*(?:,|$)", re.IGNORECASE)


class JwksUnavailable(Exception):
    """The client's key set could not be had; the message says why, and names no secret."""


@dataclass
class _Entry:
    keys: KeySet | None
    expires: datetime
    fetched: datetime
    error: str | None = None


def cache_seconds(cache_control: str | None) -> int:
    """How long a fetched set is kept, from the response's Cache-Control."""
    if not cache_control:
        return DEFAULT_TTL_SECONDS
    if _NO_CACHE.search(cache_control):
        return MIN_TTL_SECONDS
    match = _MAX_AGE.search(cache_control)
    if match is None:
        return DEFAULT_TTL_SECONDS
    return max(MIN_TTL_SECONDS, min(MAX_TTL_SECONDS, int(match.group(1))))


def _global(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class JwksFetcher:
    """Key sets by URI, each fetched by one request at a time and kept for its cache lifetime.

    `allow_private` (FHIRAUTH_JWKS_URI_ALLOW_PRIVATE) lets a jwks_uri name an inner address and use
    plain http: for tests and closed networks only.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        allow_private: bool = False,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        client: httpx2.AsyncClient | None = None,
    ) -> None:
        self._clock = clock
        self._allow_private = allow_private
        self._timeout = timeout
        self._client = client or httpx2.AsyncClient(follow_redirects=False, trust_env=False)
        self._cache: dict[str, _Entry] = {}
        self._fetching: dict[str, asyncio.Future[_Entry]] = {}

    async def keys(self, uri: str) -> KeySet:
        """The set at `uri`, from the cache while it is fresh."""
        entry = self._cache.get(uri)
        if entry is None or entry.expires <= self._clock():
            entry = await self._fetch_shared(uri)
        return self._usable(entry)

    async def refreshed(self, uri: str) -> KeySet | None:
        """The set fetched anew, for a kid the cached one lacks; None when the last fetch was less
        than REFETCH_SECONDS ago (the cached set is all there is)."""
        entry = self._cache.get(uri)
        if entry is not None and self._clock() - entry.fetched < _REFETCH:
            return None
        return self._usable(await self._fetch_shared(uri))

    async def close(self) -> None:
        await self._client.aclose()

    @staticmethod
    def _usable(entry: _Entry) -> KeySet:
        if entry.keys is None:
            raise JwksUnavailable(entry.error or "the key set could not be fetched")
        return entry.keys

    async def _fetch_shared(self, uri: str) -> _Entry:
        # Requests arriving together for one URI share one fetch; shielded, so that one caller giving
        # up does not cancel the fetch the others wait for.
        fetching = self._fetching.get(uri)
        if fetching is None:
            fetching = asyncio.ensure_future(self._fetch(uri))
            self._fetching[uri] = fetching
            fetching.add_done_callback(lambda _: self._fetching.pop(uri, None))
        return await asyncio.shield(fetching)

    async def _fetch(self, uri: str) -> _Entry:
        now = self._clock()
        try:
            async with asyncio.timeout(self._timeout):
                keys, ttl = await self._get(uri)
            entry = _Entry(keys, now + timedelta(seconds=ttl), now)
        except TimeoutError:
            entry = _Entry(None, now + _REFETCH, now, f"no answer within {self._timeout:g} s")
        except JwksUnavailable as error:
            entry = _Entry(None, now + _REFETCH, now, str(error))
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[uri] = entry
        return entry

    async def _get(self, uri: str) -> tuple[KeySet, int]:
        parts = urlsplit(uri)
        if parts.scheme != "https" and not (self._allow_private and parts.scheme == "http"):
            raise JwksUnavailable("the jwks_uri must be an https URL")
        if parts.hostname is None or parts.username is not None or parts.password is not None:
            raise JwksUnavailable("the jwks_uri must name a host, and no credentials")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise JwksUnavailable("the jwks_uri has an invalid port") from None
        address = await self._address(parts.hostname, port)
        host = f"[{address}]" if ":" in address else address
        pinned = urlunsplit((parts.scheme, f"{host}:{port}", parts.path or "/", parts.query, ""))
        headers = {"Accept": "application/json", "Host": parts.netloc.rpartition("@")[2]}
        try:
            async with self._client.stream(
                "GET", pinned, headers=headers, extensions={"sni_hostname": parts.hostname}
            ) as response:
                if response.status_code != 200:
                    raise JwksUnavailable(f"the jwks_uri answered {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BYTES:
                        raise JwksUnavailable(f"the jwks_uri's answer is larger than {MAX_BYTES} bytes")
                cache_control = response.headers.get("cache-control")
        except httpx2.HTTPError as error:
            raise JwksUnavailable(f"the jwks_uri could not be fetched ({type(error).__name__})") from None
        return _key_set(bytes(body)), cache_seconds(cache_control)

    async def _address(self, hostname: str, port: int) -> str:
        """The address to connect to: every address the name resolves to must be global."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
        except OSError:
            raise JwksUnavailable("the jwks_uri's host does not resolve") from None
        addresses = [str(info[4][0]) for info in infos]
        if not addresses:
            raise JwksUnavailable("the jwks_uri's host does not resolve")
        if not self._allow_private and not all(_global(address) for address in addresses):
            raise JwksUnavailable("the jwks_uri's host is not a public address")
        return addresses[0]


def _key_set(body: bytes) -> KeySet:
    try:
        document: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise JwksUnavailable("the jwks_uri's answer is not JSON") from None
    return import_key_set(document)


def import_key_set(document: Any) -> KeySet:
    """A JWK Set of public keys (a registered `jwks` or a fetched one); JwksUnavailable when it is not
    one. Private members are refused: a client that published its private key has lost it."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksUnavailable('the key set is not a JWK Set ({"keys": [...]})')
    for key in document["keys"]:
        if not isinstance(key, dict):
            raise JwksUnavailable("a key of the set is not a JSON object")
        if "d" in key:
            raise JwksUnavailable("the key set holds a private key")
    try:
        return KeySet.import_key_set(cast(KeySetSerialization, document))
    except (JoseError, ValueError, TypeError, KeyError):
        raise JwksUnavailable("the key set holds a key that does not import") from None
