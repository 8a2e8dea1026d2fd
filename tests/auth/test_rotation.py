"""Refresh-token rotation under a race: exactly one refresh wins, and since the losers presented a
token already taken, they count as a reuse and revoke the family, the winner's tokens included."""

from __future__ import annotations

import asyncio

import pytest

from fhirauth.auth.grants.base import TokenRequest
from fhirauth.auth.grants.refresh_token import RefreshTokenGrant, RefreshTokenReused
from fhirauth.auth.oauth_errors import InvalidGrant
from fhirauth.services import Services
from tests.auth.oauth_helpers import PASSWORD, confidential_client, token, user


async def first_tokens(services: Services) -> object:
    await confidential_client(services)
    await user(services)
    return await token(services, grant_type="password", username="ann", password=PASSWORD)


def refresh_grant(services: Services) -> RefreshTokenGrant:
    grant = services.grants["refresh_token"]
    assert isinstance(grant, RefreshTokenGrant)
    return grant


async def refresh_request(services: Services, refresh_token: str) -> TokenRequest:
    client = await services.clients.get("app")
    assert client is not None
    return TokenRequest({"grant_type": "refresh_token", "refresh_token": refresh_token}, client)


async def test_the_loser_of_two_refreshes_with_one_token_revokes_the_winners_tokens(
    services: Services,
) -> None:
    first = await first_tokens(services)
    grant = refresh_grant(services)
    request = await refresh_request(services, first.refresh_token)
    # Both validate before either responds: only the record of the rotated token tells them apart.
    one, two = await grant.validate(request), await grant.validate(request)
    winner = await grant.respond(one)
    assert (await services.sessions.resolve(winner.access_token)).user_id == "ann"

    with pytest.raises(RefreshTokenReused, match="^Refresh token was already used; the tokens issued"):
        await grant.respond(two)

    assert await services.sessions.resolve(winner.access_token) is None
    with pytest.raises(InvalidGrant, match="^Refresh token was revoked$"):
        await token(services, grant_type="refresh_token", refresh_token=winner.refresh_token)


async def test_concurrent_refreshes_with_one_token_have_one_winner_and_revoke_it(services: Services) -> None:
    first = await first_tokens(services)
    params = {"grant_type": "refresh_token", "refresh_token": first.refresh_token}
    results = await asyncio.gather(*(token(services, **params) for _ in range(10)), return_exceptions=True)
    # One refresh takes the token, nine are reuses. The taker gets tokens, or, when a reuse revoked the
    # family before its swap landed (MongoDB's window is wider), that revocation: no live token either way.
    reuses = [r for r in results if isinstance(r, RefreshTokenReused)]
    takers = [r for r in results if not isinstance(r, RefreshTokenReused)]
    assert len(reuses) == 9 and len(takers) == 1
    (taker,) = takers
    if isinstance(taker, BaseException):
        assert isinstance(taker, InvalidGrant) and taker.description == "Refresh token was revoked", taker
    else:
        assert await services.sessions.resolve(taker.access_token) is None


async def test_a_session_ended_during_a_refresh_makes_no_reuse_of_its_token(services: Services) -> None:
    first = await first_tokens(services)
    grant = refresh_grant(services)
    validated = await grant.validate(await refresh_request(services, first.refresh_token))
    # As when the loser of a race revokes the family before the winner's swap lands.
    await services.sessions.end(validated.session)

    # Not "try again": the family is gone, and a retry could only fail.
    with pytest.raises(InvalidGrant, match="^Refresh token was revoked$"):
        await grant.respond(validated)

    # Nothing was rotated: the token is refused as revoked, not taken for a reuse.
    with pytest.raises(InvalidGrant, match="^Refresh token was revoked$"):
        await token(services, grant_type="refresh_token", refresh_token=first.refresh_token)
    assert await services.sessions.rotated_from(first.refresh_token) is None
