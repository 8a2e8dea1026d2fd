"""Signing ID tokens: RS256 with the keys /.well-known/jwks.json publishes (SigningKeys, joserfc)."""

from __future__ import annotations

from fhirauth.auth.keys import SigningKeys
from fhirauth.auth.oidc.claims import HASHES, IDENTITY_CLAIMS, SIGN_IN, ClaimSource, Document, IdTokenRequest
from fhirauth.clock import Clock


class IdTokens:
    def __init__(self, keys: SigningKeys, clock: Clock, issuer: str) -> None:
        self._keys = keys
        self._clock = clock
        self._issuer = issuer
        self._sources = [SIGN_IN, HASHES]

    def add_source(self, source: ClaimSource) -> None:
        """Attach a claim source; its claims go into every ID token signed from now on."""
        self._sources.append(source)

    @property
    def claims_supported(self) -> list[str]:
        return [*IDENTITY_CLAIMS, *(name for source in self._sources for name in source.names)]

    async def sign(self, request: IdTokenRequest) -> str:
        iat = int(self._clock().timestamp())
        claims: Document = {
            "iss": self._issuer,
            # Core §2: the subject is the User's id, never reassigned; one client, so `aud` is a string.
            "sub": request.user["id"],
            "aud": request.client["id"],
            "exp": iat + request.lifetime,
            "iat": iat,
        }
        for source in self._sources:
            claims.update(source.claims(request))
        return await self._keys.sign(claims)
