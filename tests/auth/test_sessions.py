"""Sessions and tokens: what is stored, what a bearer token resolves to, and when it stops working."""

from __future__ import annotations

import json

from joserfc import jwt
from joserfc.jwk import KeySet

from fhirauth.auth.principal import Principal
from fhirauth.clock import ManualClock
from fhirauth.security import token_hash
from fhirauth.services import Services
from tests.auth.conftest import BASE_URL
from tests.auth.oauth_helpers import (
    PASSWORD,
    browser_session,
    confidential_client,
    credentials,
    put,
    token,
    user,
)


async def stored_session(services: Services, access_token: str) -> dict[str, object]:
    session = await services.sessions.find_by_access_token(access_token)
    assert session is not None
    return session


async def password_tokens(services: Services) -> tuple[str, str]:
    response = await token(services, grant_type="password", username="ann@example.org", password=PASSWORD)
    assert response.refresh_token is not None
    return response.access_token, response.refresh_token


async def test_storage_holds_hashes_never_token_values(services: Services) -> None:
    await confidential_client(services)
    await user(services)
    access, refresh = await password_tokens(services)
    session = await stored_session(services, access)
    assert session["access_token"] == token_hash(access)
    assert session["refresh_token"] == token_hash(refresh)
    stored = json.dumps(await services.storage.all_resources("Session"))
    assert access not in stored and refresh not in stored


async def test_password_session_has_aidbox_fields(services: Services) -> None:
    await confidential_client(services)
    await user(services)
    access, _ = await password_tokens(services)
    session = await stored_session(services, access)
    assert {k: v for k, v in session.items() if k not in ("id", "meta", "access_token", "refresh_token")} == {
        "resourceType": "Session",
        "type": "password",
        "active": True,
        "start": "2026-01-01T00:00:00.000Z",
        "client": {"resourceType": "Client", "id": "app"},
        "user": {"resourceType": "User", "id": "ann"},
        "exp": 1767225600 + 3600,
    }


async def test_opaque_token_resolves_to_the_user_until_it_expires(
    services: Services, clock: ManualClock
) -> None:
    await confidential_client(services, auth={"password": {"access_token_expiration": 300}})
    ann = await user(services)
    response = await token(services, grant_type="password", username="ann", password=PASSWORD)
    assert response.expires_in == 300
    principal = await services.sessions.resolve(response.access_token)
    assert principal is not None
    assert (principal.kind, principal.user_id, principal.client_id) == ("user", "ann", "app")
    assert principal.user == ann
    clock.advance(299)
    assert await services.sessions.resolve(response.access_token) is not None
    clock.advance(1)
    assert await services.sessions.resolve(response.access_token) is None


async def test_unknown_empty_and_overlong_tokens_resolve_to_nobody(services: Services) -> None:
    assert await services.sessions.resolve("no-such-token") is None
    assert await services.sessions.resolve("") is None
    assert await services.sessions.resolve("x" * 5000) is None


async def test_token_of_an_inactive_user_resolves_to_nobody(services: Services) -> None:
    await confidential_client(services)
    await user(services)
    access, _ = await password_tokens(services)
    await user(services, inactive=True)
    assert await services.sessions.resolve(access) is None


async def test_token_of_a_deleted_or_deactivated_client_resolves_to_nobody(services: Services) -> None:
    await confidential_client(services)
    response = await token(services, grant_type="client_credentials")
    assert (await services.sessions.resolve(response.access_token)) is not None
    await confidential_client(services, active=False)
    assert await services.sessions.resolve(response.access_token) is None


async def test_client_credentials_token_speaks_for_the_client(services: Services) -> None:
    client = await confidential_client(services)
    response = await token(services, grant_type="client_credentials")
    principal = await services.sessions.resolve(response.access_token)
    assert principal == Principal(
        "client", client=client, session=await stored_session(services, response.access_token)
    )


async def test_root_client_credentials_token_speaks_for_root(services: Services) -> None:
    response = await token(services, credentials("root", "secret"), grant_type="client_credentials")
    principal = await services.sessions.resolve(response.access_token)
    assert principal is not None and principal.is_root
    assert principal.client == services.clients.root_document()


async def test_browser_cookie_token_resolves_until_max_age(services: Services, clock: ManualClock) -> None:
    ann = await user(services)
    cookie, session = await services.sessions.create_browser_session(ann, max_age=600, ip="10.0.0.1")
    assert session["type"] == "browser"
    assert session["ip"] == "10.0.0.1"
    assert session["exp"] == 1767225600 + 600
    assert "client" not in session
    principal = await services.sessions.resolve(cookie)
    assert principal is not None and (principal.kind, principal.user_id, principal.client) == (
        "user",
        "ann",
        None,
    )
    clock.advance(600)
    assert await services.sessions.resolve(cookie) is None


async def test_each_sign_in_gets_a_new_cookie_token(services: Services) -> None:
    ann = await user(services)
    first, _ = await services.sessions.create_browser_session(ann, max_age=600, ip=None)
    second, _ = await services.sessions.create_browser_session(ann, max_age=600, ip=None)
    assert first != second


async def test_ending_a_session_stops_its_token(services: Services, clock: ManualClock) -> None:
    await confidential_client(services)
    await user(services)
    access, _ = await password_tokens(services)
    clock.advance(5)
    await services.sessions.end(await stored_session(services, access))
    assert await services.sessions.resolve(access) is None
    ended = await stored_session(services, access)
    assert (ended["active"], ended["end"]) == (False, "2026-01-01T00:00:05.000Z")


async def test_ending_a_browser_session_ends_the_sessions_it_produced(services: Services) -> None:
    await confidential_client(services)
    ann = await user(services)
    browser = await browser_session(services, ann)
    query = {"response_type": "token", "client_id": "app", "redirect_uri": "https://app.example/callback"}
    request = await services.authorization.validate(query)
    location = (await services.authorization.complete(request, ann, browser)).location()
    implicit_token = location.split("access_token=", 1)[1].split("&", 1)[0]
    principal = await services.sessions.resolve(implicit_token)
    assert principal is not None and principal.session is not None
    assert principal.session["parent"] == {"resourceType": "Session", "id": browser["id"]}
    await services.sessions.end(browser)
    assert await services.sessions.resolve(implicit_token) is None


async def test_ending_twice_is_harmless(services: Services) -> None:
    ann = await user(services)
    session = await browser_session(services, ann)
    await services.sessions.end(session)
    await services.sessions.end(session)
    stored = await services.resources.find("Session", session["id"])
    assert stored is not None and stored.document["active"] is False and stored.version == 2


async def test_jwt_access_token_claims_and_session(services: Services) -> None:
    await confidential_client(
        services, auth={"password": {"token_format": "jwt", "access_token_expiration": 120}}
    )
    await user(services)
    response = await token(services, grant_type="password", username="ann", password=PASSWORD)
    published = KeySet.import_key_set(await services.keys.jwks())
    decoded = jwt.decode(response.access_token, published, algorithms=["RS256"])
    registry = jwt.JWTClaimsRegistry(
        now=1767225600, iss={"essential": True, "value": BASE_URL}, aud={"essential": True, "value": "app"}
    )
    registry.validate(decoded.claims)
    session = await stored_session(services, response.access_token)
    assert decoded.claims == {
        "iss": BASE_URL,
        "sub": "ann",
        "aud": "app",
        "iat": 1767225600,
        "exp": 1767225600 + 120,
        "jti": session["jti"],
    }
    principal = await services.sessions.resolve(response.access_token)
    assert principal is not None and principal.user_id == "ann"


async def test_a_forged_jwt_resolves_to_nobody(services: Services) -> None:
    await confidential_client(services, auth={"password": {"token_format": "jwt"}})
    await user(services)
    response = await token(services, grant_type="password", username="ann", password=PASSWORD)
    header, claims, signature = response.access_token.split(".")
    forged = ".".join([header, claims, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")])
    assert await services.sessions.resolve(forged) is None


async def test_deleted_user_session_resolves_to_nobody(services: Services) -> None:
    await put(services, "User", "bob", email="bob@example.org")
    bob_session = await browser_session(services, {"id": "bob"})
    assert bob_session["user"] == {"resourceType": "User", "id": "bob"}
    await services.resources.delete("User", "bob")
    cookie_session = await services.resources.find("Session", bob_session["id"])
    assert cookie_session is not None
    assert await services.sessions.principal(cookie_session.document) is None


async def implicit_token_and_browser(services: Services) -> tuple[str, str]:
    ann = await user(services)
    browser_cookie, browser = await services.sessions.create_browser_session(ann, max_age=600, ip=None)
    query = {"response_type": "token", "client_id": "app", "redirect_uri": "https://app.example/callback"}
    request = await services.authorization.validate(query)
    location = (await services.authorization.complete(request, ann, browser)).location()
    return location.split("access_token=", 1)[1].split("&", 1)[0], browser_cookie


async def test_signing_out_of_a_first_party_client_ends_the_browser_sign_in(services: Services) -> None:
    await confidential_client(services, first_party=True)
    access, browser_cookie = await implicit_token_and_browser(services)
    principal = await services.sessions.resolve(access)
    assert principal is not None
    await services.sessions.sign_out(principal)
    assert await services.sessions.resolve(access) is None
    assert await services.sessions.resolve(browser_cookie) is None


async def test_signing_out_of_a_third_party_client_keeps_the_browser_sign_in(services: Services) -> None:
    await confidential_client(services)
    access, browser_cookie = await implicit_token_and_browser(services)
    principal = await services.sessions.resolve(access)
    assert principal is not None
    await services.sessions.sign_out(principal)
    assert await services.sessions.resolve(access) is None
    assert await services.sessions.resolve(browser_cookie) is not None


def test_a_browser_session_without_a_readable_start_counts_as_signed_in_long_ago() -> None:
    """An administrator's write or a restore may leave `start` out or unreadable: never a 500, and no
    `max_age` is met by it."""
    from fhirauth.auth.sessions import signed_in_at

    assert signed_in_at({"resourceType": "Session"}) == 0
    assert signed_in_at({"resourceType": "Session", "start": "yesterday"}) == 0
    assert signed_in_at({"resourceType": "Session", "start": "2026-01-01T00:00:00Z"}) == 1_767_225_600
