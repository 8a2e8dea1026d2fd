"""Signatures asked for in one turn of the event loop are made back to back in the next (SigningKeys'
signing turn): each request still gets the JWT of its own claims, an error reaches only the request
whose claims caused it, and a request that gave up does not stop the others."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from fhirauth.services import Services

Document = dict[str, Any]


@pytest.fixture
def backend() -> str:
    # Signing touches storage only to read the key set once.
    return "sqlite"


def _claims(n: int) -> Document:
    return {"iss": "http://issuer.test", "sub": f"user-{n}", "aud": "api", "exp": 1767229200, "n": n}


async def _verified(services: Services, token: str) -> Document:
    published = KeySet.import_key_set(await services.keys.jwks())  # type: ignore[arg-type]
    return dict(jwt.decode(token, published, algorithms=["RS256", "ES256"]).claims)


async def test_signatures_asked_for_together_are_made_together_each_with_its_own_claims(
    services: Services,
) -> None:
    keys = services.keys
    await keys.load()
    asked = [asyncio.ensure_future(keys.sign(_claims(n), "RS256" if n % 2 else "ES256")) for n in range(6)]
    # Let every request reach its signature; none is made before the turn after the last one asks.
    await asyncio.sleep(0)
    assert [task.done() for task in asked] == [False] * 6
    tokens = await asyncio.gather(*asked)
    assert [await _verified(services, token) for token in tokens] == [_claims(n) for n in range(6)]


async def test_an_error_reaches_only_the_request_that_caused_it(services: Services) -> None:
    keys = services.keys
    await keys.load()
    good, bad, other = (
        asyncio.ensure_future(keys.sign(_claims(1))),
        # orjson cannot encode a set: the signer raises for this request alone.
        asyncio.ensure_future(keys.sign({"sub": {"not", "json"}})),
        asyncio.ensure_future(keys.sign(_claims(2))),
    )
    results = await asyncio.gather(good, bad, other, return_exceptions=True)
    assert isinstance(results[1], TypeError)
    assert (await _verified(services, str(results[0])))["sub"] == "user-1"
    assert (await _verified(services, str(results[2])))["sub"] == "user-2"


async def test_a_request_that_gave_up_does_not_stop_the_others(services: Services) -> None:
    keys = services.keys
    await keys.load()
    first = asyncio.ensure_future(keys.sign(_claims(1)))
    second = asyncio.ensure_future(keys.sign(_claims(2)))
    await asyncio.sleep(0)
    first.cancel()
    token = await second
    assert first.cancelled()
    assert (await _verified(services, token))["sub"] == "user-2"
