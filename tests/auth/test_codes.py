"""Authorization codes: single use, short-lived, and a reuse revokes what the first exchange got."""

from __future__ import annotations

import asyncio

import pytest

from fhirauth.auth.codes import CODE_KIND, CODE_SECONDS, USED_CODE_KIND
from fhirauth.auth.oauth_errors import InvalidGrant
from fhirauth.auth.pkce import CodeChallenge
from fhirauth.auth.tokens import Issuance, TokenResponse
from fhirauth.clock import ManualClock
from fhirauth.security import token_hash
from fhirauth.services import Services
from tests.auth.oauth_helpers import REDIRECT, confidential_client, user

CHALLENGE = CodeChallenge("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "S256")


async def issue(services: Services) -> str:
    return await services.codes.issue(
        client_id="app",
        user_id="ann",
        redirect_uri=REDIRECT,
        scope="openid profile",
        challenge=CHALLENGE,
        parent_id="browser-1",
    )


async def test_a_code_is_stored_as_its_hash_and_redeemed_with_what_it_was_issued_for(
    services: Services,
) -> None:
    code = await issue(services)
    assert await services.storage.record_get(CODE_KIND, code) is None
    stored = await services.storage.record_get(CODE_KIND, token_hash(code))
    assert stored is not None and code not in str(stored.document)
    redeemed = await services.codes.redeem(code)
    assert (redeemed.key, redeemed.client_id, redeemed.user_id, redeemed.redirect_uri) == (
        token_hash(code),
        "app",
        "ann",
        REDIRECT,
    )
    assert (redeemed.scope, redeemed.challenge, redeemed.parent_id) == (
        "openid profile",
        CHALLENGE,
        "browser-1",
    )


async def test_a_code_is_redeemed_once(services: Services) -> None:
    code = await issue(services)
    await services.codes.redeem(code)
    with pytest.raises(InvalidGrant, match="already used"):
        await services.codes.redeem(code)


async def test_a_code_expires_after_its_lifetime(services: Services, clock: ManualClock) -> None:
    code = await issue(services)
    clock.advance(CODE_SECONDS)
    with pytest.raises(InvalidGrant, match="Invalid or expired authorization code"):
        await services.codes.redeem(code)


async def test_a_code_just_inside_its_lifetime_is_redeemed(services: Services, clock: ManualClock) -> None:
    code = await issue(services)
    clock.advance(CODE_SECONDS - 1)
    assert (await services.codes.redeem(code)).user_id == "ann"


async def test_unknown_and_overlong_codes_are_invalid_grant(services: Services) -> None:
    with pytest.raises(InvalidGrant, match="Invalid or expired authorization code"):
        await services.codes.redeem("never-issued")
    with pytest.raises(InvalidGrant, match="Invalid or expired authorization code"):
        await services.codes.redeem("x" * 300)


async def test_twenty_concurrent_redemptions_have_one_winner(services: Services) -> None:
    code = await issue(services)
    results = await asyncio.gather(*(services.codes.redeem(code) for _ in range(20)), return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert len(losers) == 19 and all(isinstance(r, InvalidGrant) for r in losers)


async def _exchange(services: Services, code: str) -> TokenResponse:
    client = await confidential_client(services)
    ann = await user(services)
    redeemed = await services.codes.redeem(code)

    async def tokens(session_id: str) -> TokenResponse:
        issuance = Issuance(client=client, flow="authorization_code", user=ann, session_id=session_id)
        return await services.tokens.issue(issuance)

    return await services.codes.exchange(redeemed, tokens)


async def test_reuse_after_the_exchange_revokes_the_tokens(services: Services) -> None:
    code = await issue(services)
    first = await _exchange(services, code)
    assert await services.sessions.resolve(first.access_token) is not None
    with pytest.raises(InvalidGrant, match="the tokens issued from it are revoked"):
        await services.codes.redeem(code)
    assert await services.sessions.resolve(first.access_token) is None
    used = await services.storage.record_get(USED_CODE_KIND, token_hash(code))
    assert used is not None and used.document["reused"] is True


async def test_reuse_while_the_first_exchange_issues_still_revokes(services: Services) -> None:
    client = await confidential_client(services)
    ann = await user(services)
    code = await issue(services)
    redeemed = await services.codes.redeem(code)
    issued: list[str] = []

    async def tokens_raced_by_a_reuse(session_id: str) -> str:
        issuance = Issuance(client=client, flow="authorization_code", user=ann, session_id=session_id)
        access = (await services.tokens.issue(issuance)).access_token
        issued.append(access)
        with pytest.raises(InvalidGrant, match="revoked"):
            await services.codes.redeem(code)
        return access

    with pytest.raises(InvalidGrant, match="revoked"):
        await services.codes.exchange(redeemed, tokens_raced_by_a_reuse)
    assert await services.sessions.resolve(issued[0]) is None


async def test_reuse_before_the_first_exchange_issues_stops_it(services: Services) -> None:
    code = await issue(services)
    redeemed = await services.codes.redeem(code)
    with pytest.raises(InvalidGrant, match="already used"):
        await services.codes.redeem(code)
    calls: list[str] = []

    async def never(session_id: str) -> str:
        calls.append(session_id)
        return session_id

    with pytest.raises(InvalidGrant, match="already used"):
        await services.codes.exchange(redeemed, never)
    assert calls == []


async def test_the_used_record_lives_until_the_code_would_have_expired(
    services: Services, clock: ManualClock
) -> None:
    code = await issue(services)
    await _exchange(services, code)
    clock.advance(CODE_SECONDS)
    assert await services.storage.record_get(USED_CODE_KIND, token_hash(code)) is None
    with pytest.raises(InvalidGrant, match="Invalid or expired authorization code"):
        await services.codes.redeem(code)
