"""private_key_jwt: a client proves itself with a JWT it signed (RFC 7523 §2.2, RFC 7521 §4.2; SMART
Backend Services), verified with the public keys it registered (`jwks`, or `jwks_uri`).

The assertion's `aud` is this server's token endpoint URL (what SMART clients send) or its issuer
identifier (what RFC 7523 allows and its revision recommends), as one value: an assertion that names
several audiences could be replayed here by any of them. It lives at most MAX_LIFETIME_SECONDS, and
its `jti` is spent once: a storage record created only if absent, so of two requests racing with one
assertion on two workers exactly one gets through.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeGuard

from joserfc.jwk import ECKey, KeySet, RSAKey
from joserfc.jws import JWSRegistry

from fhirauth.auth.jwks_fetch import JwksFetcher, JwksUnavailable, import_key_set
from fhirauth.auth.keys import compact_parts
from fhirauth.auth.oauth_errors import InvalidClient
from fhirauth.clock import Clock
from fhirauth.storage.base import Storage

if TYPE_CHECKING:
    from fhirauth.auth.client_auth import ClientAuthLimits
    from fhirauth.auth.clients import ClientRegistry

Document = dict[str, Any]

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PRIVATE_KEY_JWT = "private_key_jwt"
# SMART: clients SHALL support RS384 and ES384; RS256 and ES256 for other private_key_jwt clients.
# Never `none` or an HMAC (whose "key" would be public), nor anything else.
ALGORITHMS = ("RS384", "ES384", "RS256", "ES256")
_KEY_TYPES: dict[str, type[RSAKey | ECKey]] = {
    "RS384": RSAKey,
    "RS256": RSAKey,
    "ES384": ECKey,
    "ES256": ECKey,
}
_CURVES = {"ES384": "P-384", "ES256": "P-256"}
MAX_LIFETIME_SECONDS = 300
LEEWAY_SECONDS = 60
_MAX_JTI = 256
JTI_KIND = "client-assertion-jti"


@dataclass(frozen=True)
class _Assertion:
    header: Document
    claims: Document
    signing_input: bytes
    signature: bytes


class ClientAssertions:
    def __init__(
        self,
        clients: ClientRegistry,
        storage: Storage,
        fetcher: JwksFetcher,
        limits: ClientAuthLimits,
        clock: Clock,
        *,
        issuer: str,
    ) -> None:
        self._clients = clients
        self._storage = storage
        self._fetcher = fetcher
        self._limits = limits
        self._clock = clock
        self._audiences = frozenset({issuer, f"{issuer}/auth/token"})
        # Registered sets, imported once per client version.
        self._registered: dict[tuple[str, str], KeySet] = {}

    async def close(self) -> None:
        await self._fetcher.close()

    async def authenticate(self, assertion: str, client_id: str | None) -> Document:
        """The client that signed `assertion`; InvalidClient (counted against the request's address)
        when anything about it is wrong."""
        self._limits.check_address()
        try:
            return await self._authenticate(assertion, client_id)
        except InvalidClient:
            # Against the address alone: garbage naming a client must not lock that client out.
            await self._limits.failed(None)
            raise

    async def _authenticate(self, assertion: str, client_id: str | None) -> Document:
        parsed = _parse(assertion)
        claims = parsed.claims
        issuer = claims.get("iss")
        if not isinstance(issuer, str) or not issuer:
            raise InvalidClient("The client assertion needs 'iss': the client id")
        if claims.get("sub") != issuer:
            raise InvalidClient("The client assertion's 'sub' must be its 'iss', the client id")
        if client_id is not None and client_id != issuer:
            raise InvalidClient("'client_id' does not match the client assertion's 'iss'")
        client = await self._clients.get(issuer)
        if client is None or client["id"] == self._clients.root_id:
            raise InvalidClient("Unknown client")
        key = await self._key(client, parsed.header)
        # _pick chose a key of the algorithm's type and curve, the check joserfc's validate_compact adds.
        model = JWSRegistry.algorithms[parsed.header["alg"]]
        try:
            verified = model.verify(parsed.signing_input, parsed.signature, key)
        except ValueError:
            verified = False
        if not verified:
            raise InvalidClient("The client assertion's signature does not verify")
        expires = self._check_claims(claims)
        await self._spend(client["id"], claims["jti"], expires)
        return client

    async def _key(self, client: Document, header: Document) -> RSAKey | ECKey:
        alg, kid = header["alg"], header["kid"]
        uri = client.get("jwks_uri")
        # SMART's asymmetric client authentication: a `jku` other than the registered JWKS URL fails.
        # No key is ever fetched from it; refusing says so to a client that believes otherwise.
        if "jku" in header and header["jku"] != uri:
            raise InvalidClient("The client assertion's 'jku' is not this client's registered 'jwks_uri'")
        try:
            keys = self._registered_keys(client)
            if keys is None and isinstance(uri, str):
                keys = await self._fetcher.keys(uri)
                key = _pick(keys, alg, kid)
                if key is None:
                    # The client may have rotated its keys since the set was cached.
                    refreshed = await self._fetcher.refreshed(uri)
                    key = _pick(refreshed, alg, kid) if refreshed is not None else None
            elif keys is not None:
                key = _pick(keys, alg, kid)
            else:
                raise InvalidClient("This client has registered no keys ('jwks' or 'jwks_uri')")
        except JwksUnavailable as error:
            raise InvalidClient(f"This client's keys could not be had: {error}") from None
        if key is None:
            raise InvalidClient(f"No key of this client fits the assertion's 'kid' and '{alg}'")
        return key

    def _registered_keys(self, client: Document) -> KeySet | None:
        document = client.get("jwks")
        if document is None:
            return None
        version = (client["id"], client.get("meta", {}).get("versionId", ""))
        keys = self._registered.get(version)
        if keys is None:
            keys = import_key_set(document)
            if len(self._registered) >= 1024:
                self._registered.clear()
            self._registered[version] = keys
        return keys

    def _check_claims(self, claims: Document) -> float:
        """The assertion's `exp`, once every claim passed."""
        audience = claims.get("aud")
        if isinstance(audience, list) and len(audience) == 1:
            audience = audience[0]
        if not isinstance(audience, str) or audience not in self._audiences:
            raise InvalidClient("The client assertion's 'aud' must be this server's token endpoint URL")
        now = self._clock().timestamp()
        expires = claims.get("exp")
        if not _is_time(expires):
            raise InvalidClient("The client assertion needs 'exp'")
        if expires + LEEWAY_SECONDS <= now:
            raise InvalidClient("The client assertion has expired")
        if expires > now + MAX_LIFETIME_SECONDS + LEEWAY_SECONDS:
            raise InvalidClient(f"The client assertion's 'exp' is more than {MAX_LIFETIME_SECONDS} s ahead")
        if "nbf" in claims and not (_is_time(claims["nbf"]) and claims["nbf"] <= now + LEEWAY_SECONDS):
            raise InvalidClient("The client assertion is not valid yet ('nbf')")
        if "iat" in claims and not (_is_time(claims["iat"]) and claims["iat"] <= now + LEEWAY_SECONDS):
            raise InvalidClient("The client assertion's 'iat' is in the future")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > _MAX_JTI:
            raise InvalidClient(f"The client assertion needs a 'jti' of at most {_MAX_JTI} characters")
        return expires

    async def _spend(self, client_id: str, jti: str, expires: float) -> None:
        """Record the jti until the assertion could no longer be accepted; a second use is refused."""
        key = hashlib.sha256(f"{client_id}\x00{jti}".encode()).hexdigest()
        expires_at = datetime.fromtimestamp(expires + LEEWAY_SECONDS, UTC)
        created = await self._storage.record_put(JTI_KIND, key, {}, expected_rev=None, expires_at=expires_at)
        if created is None:
            raise InvalidClient("This client assertion was used before ('jti')")


def _parse(assertion: str) -> _Assertion:
    """The compact JWS's parts (RFC 7515 §7.1), decoded strictly; joserfc's extract_compact cost as much
    as the RS384 verification, most of it for what a client assertion cannot use (RFC 7797 payloads)."""
    parts = compact_parts(assertion)
    if parts is None:
        raise InvalidClient("The client assertion is not a signed JWT")
    header, claims, signing_input, signature = parts
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise InvalidClient(f"The client assertion's 'alg' must be one of {', '.join(ALGORITHMS)}")
    # SMART Backend Services: `kid` is required, and the one key it names verifies; without it, a
    # client's key set could hold several candidates and a rotation would pick one by accident.
    kid = header.get("kid")
    if header.get("typ", "JWT") != "JWT" or not isinstance(kid, str) or not kid:
        raise InvalidClient("The client assertion's header must have 'typ' JWT and a string 'kid'")
    # RFC 7515 §4.1.11: no extension is understood here, so none may be critical.
    if "crit" in header:
        raise InvalidClient(
            "The client assertion's header names extensions ('crit') this server does not know"
        )
    return _Assertion(header, claims, signing_input, signature)


def _pick(keys: KeySet, alg: str, kid: str) -> RSAKey | ECKey | None:
    """The one key of the set that the assertion names and its algorithm fits; None unless exactly one."""
    key_type, curve = _KEY_TYPES[alg], _CURVES.get(alg)
    fitting: list[RSAKey | ECKey] = [
        key
        for key in keys.keys
        if isinstance(key, key_type)
        and key.kid == kid
        and (curve is None or (isinstance(key, ECKey) and key.curve_name == curve))
        and key.get("use", "sig") == "sig"
    ]
    return fitting[0] if len(fitting) == 1 else None


def _is_time(value: object) -> TypeGuard[float]:
    """A NumericDate (RFC 7519 §2) within the years datetime can hold."""
    return not isinstance(value, bool) and isinstance(value, int | float) and 0 <= value < 253_402_300_000
