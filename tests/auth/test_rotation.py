"""Refresh-token rotation under a race: the Session's compare-and-set lets exactly one refresh win."""

from __future__ import annotations

import asyncio

import pytest

from fhirauth.auth.grants.base import TokenRequest
from fhirauth.auth.grants.refresh_token import RefreshTokenGrant
from fhirauth.auth.oauth_errors import InvalidGrant
from fhirauth.services import Services
from tests.auth.oauth_helpers import PASSWORD, confidential_client, token, user


async def first_tokens(services: Services) -> object:
    await confidential_client(services)
    await user(services)
    return await token(services, grant_type="password", username="ann", password=PASSWORD)


async def test_two_refreshes_with_one_token_have_one_winner(services: Services) -> None:
    first = await first_tokens(services)
    grant = services.grants["refresh_token"]
    assert isinstance(grant, RefreshTokenGrant)
    client = await services.clients.get("app")
    assert client is not None
    request = TokenRequest({"grant_type": "refresh_token", "refresh_token": first.refresh_token}, client)
    # Both validate before either responds: only the Session's compare-and-set tells them apart.
    one, two = await grant.validate(request), await grant.validate(request)
    winner = await grant.respond(one)
    with pytest.raises(InvalidGrant, match="Refresh token was already used"):
        await grant.respond(two)
    assert (await services.sessions.resolve(winner.access_token)).user_id == "ann"


async def test_concurrent_refreshes_with_one_token_have_one_winner(services: Services) -> None:
    first = await first_tokens(services)
    params = {"grant_type": "refresh_token", "refresh_token": first.refresh_token}
    results = await asyncio.gather(*(token(services, **params) for _ in range(10)), return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, InvalidGrant) for r in results if isinstance(r, BaseException))
    assert (await services.sessions.resolve(winners[0].access_token)).user_id == "ann"
