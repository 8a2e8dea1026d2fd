"""Signing ID tokens with the keys /.well-known/jwks.json publishes (SigningKeys, joserfc): RS256, or
the client's `id_token_signed_response_alg` (OpenID Connect Dynamic Client Registration §2)."""

from __future__ import annotations

from fhirauth.auth.keys import ALGORITHM, ALGORITHMS, SigningKeys
from fhirauth.auth.oidc.claims import (
    HASH_CLAIMS,
    IDENTITY_CLAIMS,
    SIGN_IN,
    ClaimSource,
    Document,
    IdTokenRequest,
)
from fhirauth.clock import Clock


def signing_alg(client: Document) -> str:
    alg = client.get("id_token_signed_response_alg")
    return alg if isinstance(alg, str) and alg in ALGORITHMS else ALGORITHM


class IdTokens:
    def __init__(self, keys: SigningKeys, clock: Clock, issuer: str) -> None:
        self._keys = keys
        self._clock = clock
        self._issuer = issuer
        self._sources = [SIGN_IN]

    def add_source(self, source: ClaimSource) -> None:
        """Attach a claim source; its claims go into every ID token signed from now on."""
        self._sources.append(source)

    @property
    def claims_supported(self) -> list[str]:
        return [*IDENTITY_CLAIMS, *HASH_CLAIMS, *(name for source in self._sources for name in source.names)]

    async def sign(self, request: IdTokenRequest) -> str:
        signer = await self._keys.signer_for(signing_alg(request.client))
        iat = int(self._clock().timestamp())
        claims: Document = {
            "iss": self._issuer,
            # Core §2: the subject is the User's id, never reassigned; one client, so `aud` is a string.
            "sub": request.user["id"],
            "aud": request.client["id"],
            "exp": iat + request.lifetime,
            "iat": iat,
        }
        if request.access_token is not None:
            claims["at_hash"] = signer.half_hash(request.access_token)
        if request.code is not None:
            claims["c_hash"] = signer.half_hash(request.code)
        for source in self._sources:
            claims.update(source.claims(request))
        return signer.sign(claims)
