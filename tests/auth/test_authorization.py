"""/auth/authorize's domain side: which requests may redirect at all, which errors go back to the client,
and the redirect that carries the code or token."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from fhirauth.auth.authorization import AuthorizationError, UnsafeAuthorizationRequest
from fhirauth.auth.pkce import CodeChallenge
from fhirauth.services import Services
from tests.auth.oauth_helpers import (
    CHALLENGE,
    REDIRECT,
    browser_session,
    confidential_client,
    public_client,
    user,
)


@pytest.fixture
def backend() -> str:
    """These rules do not depend on storage semantics; tests/api runs them over HTTP on both backends."""
    return "sqlite"


def query(**params: str) -> dict[str, str]:
    return {"response_type": "code", "client_id": "app", "redirect_uri": REDIRECT, "state": "s-1", **params}


async def refused_unsafely(services: Services, params: dict[str, str]) -> str:
    with pytest.raises(UnsafeAuthorizationRequest) as caught:
        await services.authorization.validate(params)
    return caught.value.description


async def redirected_error(
    services: Services, params: dict[str, str]
) -> tuple[str, dict[str, list[str]], str]:
    """The error redirect: (URL without query/fragment, its parameters, where they were)."""
    with pytest.raises(AuthorizationError) as caught:
        await services.authorization.validate(params)
    parts = urlsplit(caught.value.response().location())
    where = "fragment" if parts.fragment else "query"
    values = parse_qs(parts.fragment or parts.query)
    return f"{parts.scheme}://{parts.netloc}{parts.path}", values, where


async def test_missing_or_unknown_client_never_redirects(services: Services) -> None:
    await confidential_client(services)
    assert await refused_unsafely(services, query(client_id="")) == "Missing 'client_id'"
    assert await refused_unsafely(services, query(client_id="nobody")) == "Unknown or inactive client"
    await confidential_client(services, active=False)
    assert await refused_unsafely(services, query()) == "Unknown or inactive client"


async def test_missing_redirect_uri_with_one_registered_uses_it(services: Services) -> None:
    # RFC 6749 §3.1.2.3; §3.1: an empty parameter counts as left out.
    await confidential_client(services, auth={"authorization_code": {"redirect_uri": [REDIRECT, REDIRECT]}})
    for params in (query(redirect_uri=""), {k: v for k, v in query().items() if k != "redirect_uri"}):
        request = await services.authorization.validate(params)
        assert (request.redirect_uri, request.flows) == (REDIRECT, ("authorization_code",))


async def test_missing_redirect_uri_with_several_or_none_registered_never_redirects(
    services: Services,
) -> None:
    await confidential_client(
        services, auth={"authorization_code": {"redirect_uri": ["https://a.example/cb", REDIRECT]}}
    )
    assert await refused_unsafely(services, query(redirect_uri="")) == (
        "Missing 'redirect_uri': this client has several registered, so the request must name one"
    )
    assert await refused_unsafely(services, query(redirect_uri="", response_type="token")) == (
        "Missing 'redirect_uri': this client has none registered for this flow"
    )


async def test_missing_redirect_uri_and_an_unknown_response_type_count_every_flow(services: Services) -> None:
    await confidential_client(services)
    target, values, _ = await redirected_error(services, query(redirect_uri="", response_type="bogus"))
    assert (target, values["error"]) == (REDIRECT, ["unsupported_response_type"])
    await confidential_client(
        services,
        auth={
            "authorization_code": {"redirect_uri": REDIRECT},
            "implicit": {"redirect_uri": "https://app.example/implicit"},
        },
    )
    assert await refused_unsafely(services, query(redirect_uri="", response_type="bogus")) == (
        "Missing 'redirect_uri': this client has several registered, so the request must name one"
    )


async def test_missing_response_type_is_invalid_request(services: Services) -> None:
    await confidential_client(services)
    params = query()
    del params["response_type"]
    target, values, where = await redirected_error(services, params)
    assert (target, where) == (REDIRECT, "query")
    assert values == {
        "error": ["invalid_request"],
        "error_description": ["Missing 'response_type'"],
        "state": ["s-1"],
    }


async def test_repeated_parameters(services: Services) -> None:
    await confidential_client(services)
    for name in ("client_id", "redirect_uri"):
        with pytest.raises(UnsafeAuthorizationRequest) as unsafe:
            await services.authorization.validate(query(), repeated={name})
        assert unsafe.value.description == f"The parameter '{name}' is given more than once."
    for name in ("response_type", "scope", "state", "code_challenge", "code_challenge_method"):
        with pytest.raises(AuthorizationError) as caught:
            await services.authorization.validate(query(), repeated={name})
        assert (caught.value.error, caught.value.description) == (
            "invalid_request",
            f"The parameter '{name}' is given more than once.",
        )
    request = await services.authorization.validate(query(), repeated={"foo", "prompt"})
    assert request.redirect_uri == REDIRECT


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://app.example/callback/",
        "https://app.example/callbac",
        "https://app.example/callback/../callback",
        "https://app.example/callback?x=1",
        "https://app.example/callback#x",
        "https://app.example:443/callback",
        "https://app.example:8443/callback",
        "http://app.example/callback",
        "https://APP.example/callback",
        "https://app.example/Callback",
        "https://app.example.evil.test/callback",
        "https://evil.test/https://app.example/callback",
        "https://app.example%2Fcallback",
        "https://app.example/%63allback",
        "https%3A%2F%2Fapp.example%2Fcallback",
        " https://app.example/callback",
    ],
)
async def test_redirect_uri_must_match_exactly(services: Services, redirect_uri: str) -> None:
    await confidential_client(services)
    description = await refused_unsafely(services, query(redirect_uri=redirect_uri))
    assert description == "'redirect_uri' is not registered for this client"


async def test_redirect_uri_of_the_other_flow_is_not_registered_for_this_one(services: Services) -> None:
    await confidential_client(
        services,
        auth={
            "authorization_code": {"redirect_uri": REDIRECT},
            "implicit": {"redirect_uri": "https://app.example/implicit"},
        },
    )
    assert await refused_unsafely(services, query(redirect_uri="https://app.example/implicit")) == (
        "'redirect_uri' is not registered for this client"
    )
    request = await services.authorization.validate(
        query(response_type="token", redirect_uri="https://app.example/implicit")
    )
    assert request.flows == ("implicit",)


async def test_any_of_several_registered_uris_is_accepted(services: Services) -> None:
    await confidential_client(
        services, auth={"authorization_code": {"redirect_uri": ["https://a.example/cb", REDIRECT]}}
    )
    assert (await services.authorization.validate(query())).redirect_uri == REDIRECT


async def test_unsupported_response_type_goes_back_in_the_query(services: Services) -> None:
    await confidential_client(services)
    target, values, where = await redirected_error(services, query(response_type="code id_token bogus"))
    assert (target, where) == (REDIRECT, "query")
    assert values == {
        "error": ["unsupported_response_type"],
        "error_description": [
            "Unsupported 'response_type'; use one of: code, token, id_token, id_token token, code id_token, "
            "code token, code id_token token"
        ],
        "state": ["s-1"],
    }


async def test_unsupported_response_type_with_an_unregistered_uri_never_redirects(services: Services) -> None:
    await confidential_client(services)
    await refused_unsafely(services, query(response_type="id_token", redirect_uri="https://evil.test/"))


async def test_flow_missing_from_grant_types_is_unauthorized_client(services: Services) -> None:
    await confidential_client(services, grant_types=["password"])
    _, values, where = await redirected_error(services, query())
    assert where == "query"
    assert values["error"] == ["unauthorized_client"]
    _, values, where = await redirected_error(services, query(response_type="token"))
    assert (where, values["error"], values["state"]) == ("fragment", ["unauthorized_client"], ["s-1"])


async def test_public_client_without_pkce_is_invalid_request(services: Services) -> None:
    await public_client(services)
    _, values, _ = await redirected_error(services, query(client_id="spa"))
    assert values == {
        "error": ["invalid_request"],
        "error_description": ["Missing 'code_challenge': this client must use PKCE"],
        "state": ["s-1"],
    }


async def test_bad_pkce_method_is_invalid_request(services: Services) -> None:
    await public_client(services)
    _, values, _ = await redirected_error(
        services, query(client_id="spa", code_challenge=CHALLENGE, code_challenge_method="S1")
    )
    assert values["error"] == ["invalid_request"]


async def test_scope_outside_the_clients_list_is_invalid_scope(services: Services) -> None:
    await confidential_client(services, scope=["openid"])
    _, values, _ = await redirected_error(services, query(scope="openid admin"))
    assert values["error"] == ["invalid_scope"]


async def test_error_without_state_carries_no_state(services: Services) -> None:
    await confidential_client(services)
    params = query(response_type="bogus")
    del params["state"]
    _, values, _ = await redirected_error(services, params)
    assert "state" not in values


async def test_valid_request_keeps_what_it_asked_for(services: Services) -> None:
    await public_client(services)
    params = query(client_id="spa", scope="openid", code_challenge=CHALLENGE, code_challenge_method="S256")
    request = await services.authorization.validate(params)
    assert (request.response_type, request.redirect_uri, request.state, request.scope) == (
        "code",
        REDIRECT,
        "s-1",
        "openid",
    )
    assert request.challenge == CodeChallenge(CHALLENGE, "S256")
    assert parse_qs(request.continuation_query) == {k: [v] for k, v in params.items()}
    assert request.first_party is False


async def test_complete_redirects_with_a_code_and_the_state(services: Services) -> None:
    await confidential_client(
        services, auth={"authorization_code": {"redirect_uri": "https://app.example/cb?tenant=7"}}
    )
    ann = await user(services)
    request = await services.authorization.validate(query(redirect_uri="https://app.example/cb?tenant=7"))
    completed = await services.authorization.complete(request, ann, await browser_session(services, ann))
    location = completed.location()
    parts = urlsplit(location)
    assert (parts.scheme, parts.netloc, parts.path, parts.fragment) == ("https", "app.example", "/cb", "")
    values = parse_qs(parts.query)
    assert set(values) == {"tenant", "code", "state"}
    assert (values["tenant"], values["state"]) == (["7"], ["s-1"])
    redeemed = await services.codes.redeem(values["code"][0])
    assert (redeemed.user_id, redeemed.redirect_uri) == ("ann", "https://app.example/cb?tenant=7")


async def test_complete_for_the_implicit_flow_puts_the_token_in_the_fragment(services: Services) -> None:
    await confidential_client(
        services,
        auth={"implicit": {"redirect_uri": REDIRECT, "access_token_expiration": 900, "refresh_token": True}},
    )
    ann = await user(services)
    browser = await browser_session(services, ann)
    request = await services.authorization.validate(query(response_type="token", scope="openid"))
    location = (await services.authorization.complete(request, ann, browser)).location()
    parts = urlsplit(location)
    assert (f"{parts.scheme}://{parts.netloc}{parts.path}", parts.query) == (REDIRECT, "")
    values = parse_qs(parts.fragment)
    assert set(values) == {"access_token", "token_type", "expires_in", "state"}
    assert (values["token_type"], values["expires_in"], values["state"]) == (["bearer"], ["900"], ["s-1"])
    principal = await services.sessions.resolve(values["access_token"][0])
    assert principal is not None and principal.session is not None
    assert (principal.user_id, principal.client_id, principal.session["type"]) == ("ann", "app", "implicit")
    assert "refresh_token" not in principal.session
