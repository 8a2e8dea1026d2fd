"""Signing ID tokens with the keys /.well-known/jwks.json publishes (SigningKeys, joserfc): RS256, or
the client's `id_token_signed_response_alg` (OpenID Connect Dynamic Client Registration §2); and
reading one back when a client hands it in as a hint."""

from __future__ import annotations

from fhirauth.auth.keys import ALGORITHM, ALGORITHMS, SigningKeys
from fhirauth.auth.oauth_errors import InvalidRequest
from fhirauth.auth.oidc.claims import (
    HASH_CLAIMS,
    IDENTITY_CLAIMS,
    SIGN_IN,
    ClaimSource,
    Document,
    IdTokenRequest,
)
from fhirauth.clock import Clock

# Ours are about 1 kB; a hint many times longer is not one, and is not worth decoding.
MAX_HINT_CHARS = 8192


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
        return await self._keys.sign_with(signer, claims)

    async def hinted_subject(self, hint: str) -> str:
        """The user an `id_token_hint` names (Core §3.1.2.1): it must be an ID token we signed, with a
        key still published; expired is fine. InvalidRequest for anything else, a JWT access token of
        ours included (signed with the same keys, it names no sign-in)."""
        claims = await self._keys.verified_claims(hint) if len(hint) <= MAX_HINT_CHARS else None
        if (
            claims is None
            or claims.get("iss") != self._issuer
            or not all(isinstance(claims.get(name), str) for name in ("sub", "sid", "aud"))
        ):
            raise InvalidRequest("The id_token_hint is not an ID token this server issued")
        subject: str = claims["sub"]
        return subject
