"""The token endpoint's domain side: client authentication, the registry, and each grant's guard clauses."""

from __future__ import annotations

import pytest

from fhirauth.auth.client_auth import ClientCredentials
from fhirauth.auth.grants.base import TokenRequest
from fhirauth.auth.grants.password import PasswordGrant
from fhirauth.auth.grants.refresh_token import RefreshTokenReused
from fhirauth.auth.oauth_errors import (
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    OAuthError,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from fhirauth.clock import ManualClock
from fhirauth.services import Services
from tests.auth.oauth_helpers import (
    PASSWORD,
    REDIRECT,
    VERIFIER,
    authorization_code,
    confidential_client,
    credentials,
    public_client,
    token,
    user,
)

Document = dict[str, object]


@pytest.fixture
def backend() -> str:
    """These rules do not depend on storage semantics; tests/api runs them over HTTP on both backends."""
    return "sqlite"


# Registry and client authentication


async def test_missing_grant_type_is_invalid_request(services: Services) -> None:
    with pytest.raises(InvalidRequest, match="Missing 'grant_type'"):
        await token(services)


async def test_unknown_grant_type_is_unsupported(services: Services) -> None:
    with pytest.raises(UnsupportedGrantType) as caught:
        await token(services, grant_type="urn:ietf:params:oauth:grant-type:device_code")
    assert caught.value.description == (
        "Unsupported 'grant_type'; use one of authorization_code, password, client_credentials, refresh_token"
    )


async def test_no_client_is_invalid_client(services: Services) -> None:
    with pytest.raises(InvalidClient, match="Client authentication required") as caught:
        await token(services, ClientCredentials(None, None), grant_type="client_credentials")
    assert caught.value.status == 401
    assert caught.value.headers == {}


async def test_unknown_client_is_invalid_client(services: Services) -> None:
    with pytest.raises(InvalidClient, match="Invalid client credentials"):
        await token(services, credentials("nobody", "x"), grant_type="client_credentials")
    with pytest.raises(InvalidClient, match="Unknown client"):
        await token(services, credentials("nobody", None), grant_type="client_credentials")


async def test_wrong_secret_is_invalid_client_with_a_challenge_when_basic_was_used(
    services: Services,
) -> None:
    await confidential_client(services)
    with pytest.raises(InvalidClient) as in_body:
        await token(services, credentials("app", "wrong"), grant_type="client_credentials")
    assert in_body.value.headers == {}
    with pytest.raises(InvalidClient) as with_basic:
        await token(services, ClientCredentials("app", "wrong", "Basic"), grant_type="client_credentials")
    assert with_basic.value.headers == {"WWW-Authenticate": 'Basic realm="fhirauth"'}


async def test_inactive_client_is_invalid_client(services: Services) -> None:
    await confidential_client(services, active=False)
    with pytest.raises(InvalidClient):
        await token(services, grant_type="client_credentials")


async def test_confidential_client_must_send_its_secret(services: Services) -> None:
    await confidential_client(services)
    with pytest.raises(InvalidClient, match="must authenticate with its secret"):
        await token(services, credentials("app", None), grant_type="password", username="a", password="b")


async def test_root_client_must_send_its_secret(services: Services) -> None:
    with pytest.raises(InvalidClient, match="must authenticate with its secret"):
        await token(services, credentials("root", None), grant_type="client_credentials")


async def test_public_client_cannot_use_client_credentials(services: Services) -> None:
    await public_client(services, grant_types=["client_credentials"])
    with pytest.raises(InvalidClient, match="The client_credentials grant needs client authentication"):
        await token(services, credentials("spa", None), grant_type="client_credentials")


async def test_grant_missing_from_grant_types_is_unauthorized_client(services: Services) -> None:
    await confidential_client(services, grant_types=["password"])
    with pytest.raises(UnauthorizedClient, match="may not use the client_credentials grant"):
        await token(services, grant_type="client_credentials")


async def test_root_may_not_use_the_password_grant(services: Services) -> None:
    await user(services)
    with pytest.raises(UnauthorizedClient):
        await token(
            services, credentials("root", "secret"), grant_type="password", username="ann", password=PASSWORD
        )


# Password grant


async def password(services: Services, creds: ClientCredentials | None = None, **params: str) -> object:
    return await token(services, creds, **{"grant_type": "password", **params})


async def test_password_grant_issues_tokens_with_userinfo(services: Services) -> None:
    await confidential_client(services)
    ann = await user(services)
    response = await password(services, username="ann@example.org", password=PASSWORD)
    assert response.userinfo == {k: v for k, v in ann.items() if k != "password"}
    assert (response.token_type, response.expires_in, response.scope) == ("Bearer", 3600, None)
    assert response.refresh_token is not None


@pytest.mark.parametrize("username", ["ann@example.org", "annie", "ann"])
async def test_username_is_email_user_name_or_id(services: Services, username: str) -> None:
    await confidential_client(services)
    await user(services, userName="annie")
    assert (await password(services, username=username, password=PASSWORD)).userinfo["id"] == "ann"


@pytest.mark.parametrize(
    ("missing", "params"), [("username", {"password": PASSWORD}), ("password", {"username": "ann"})]
)
async def test_password_grant_needs_username_and_password(
    services: Services, missing: str, params: dict[str, str]
) -> None:
    await confidential_client(services)
    with pytest.raises(InvalidRequest, match=f"Missing '{missing}'"):
        await password(services, **params)


async def test_wrong_password_and_unknown_user_read_the_same(services: Services) -> None:
    await confidential_client(services)
    await user(services)
    with pytest.raises(InvalidGrant) as wrong:
        await password(services, username="ann", password="wrong")
    with pytest.raises(InvalidGrant) as unknown:
        await password(services, username="nobody", password=PASSWORD)
    assert wrong.value.description == unknown.value.description == "Invalid username or password"


async def test_inactive_user_is_told_so_only_with_the_right_password(services: Services) -> None:
    await confidential_client(services)
    await user(services, inactive=True)
    with pytest.raises(InvalidGrant, match="^User is inactive$"):
        await password(services, username="ann", password=PASSWORD)
    with pytest.raises(InvalidGrant, match="^Invalid username or password$"):
        await password(services, username="ann", password="wrong")


async def test_public_client_may_use_the_password_grant_unless_the_secret_is_required(
    services: Services,
) -> None:
    await user(services)
    await public_client(services)
    response = await password(services, credentials("spa", None), username="ann", password=PASSWORD)
    assert response.userinfo["id"] == "ann"
    await public_client(services, auth={"password": {"secret_required": True}})
    with pytest.raises(InvalidClient, match="The password grant needs client authentication"):
        await password(services, credentials("spa", None), username="ann", password=PASSWORD)


async def test_password_checks_run_after_the_password_and_can_refuse(services: Services) -> None:
    await confidential_client(services)
    await user(services)
    grant = services.grants["password"]
    assert isinstance(grant, PasswordGrant)
    seen: list[tuple[str, str | None]] = []

    async def require_totp(request: TokenRequest, user_doc: dict[str, object]) -> None:
        seen.append((str(user_doc["id"]), request.params.get("totp")))
        if request.params.get("totp") != "123456":
            raise InvalidGrant("Two-factor authentication code required")

    grant.add_check(require_totp)
    with pytest.raises(InvalidGrant, match="^Invalid username or password$"):
        await password(services, username="ann", password="wrong")
    assert seen == []
    with pytest.raises(InvalidGrant, match="Two-factor authentication code required"):
        await password(services, username="ann", password=PASSWORD)
    assert (await password(services, username="ann", password=PASSWORD, totp="123456")).userinfo[
        "id"
    ] == "ann"
    assert seen == [("ann", None), ("ann", "123456")]


# Scopes


async def test_scope_is_recorded_and_returned(services: Services) -> None:
    await confidential_client(services)
    await user(services)
    response = await password(services, username="ann", password=PASSWORD, scope="openid profile openid")
    assert response.scope == "openid profile"
    session = await services.sessions.find_by_access_token(response.access_token)
    assert session is not None and session["scope"] == "openid profile"


async def test_malformed_scope_is_invalid_scope(services: Services) -> None:
    await confidential_client(services)
    for malformed in ('a "quoted" scope', "two  spaces", " leading", "back\\slash", "caf\u00e9"):
        with pytest.raises(InvalidScope, match="Malformed 'scope'"):
            await token(services, grant_type="client_credentials", scope=malformed)


async def test_scope_outside_the_clients_list_is_invalid_scope(services: Services) -> None:
    await confidential_client(services, scope=["read", "write"])
    assert (await token(services, grant_type="client_credentials", scope="write read")).scope == "write read"
    with pytest.raises(InvalidScope, match="Scope 'admin' is not allowed for this client"):
        await token(services, grant_type="client_credentials", scope="read admin")


# Client credentials


async def test_client_credentials_token_has_no_refresh_token_unless_configured(services: Services) -> None:
    await confidential_client(services)
    response = await token(services, grant_type="client_credentials")
    assert (response.refresh_token, response.userinfo, response.expires_in) == (None, None, 3600)
    await confidential_client(services, auth={"client_credentials": {"refresh_token": True}})
    assert (await token(services, grant_type="client_credentials")).refresh_token is not None


async def test_audience_must_be_one_the_client_lists(services: Services) -> None:
    await confidential_client(services, auth={"client_credentials": {"audience": ["https://api.example"]}})
    await token(services, grant_type="client_credentials", audience="https://api.example")
    with pytest.raises(InvalidRequest, match="'audience' is not one this client may ask for"):
        await token(services, grant_type="client_credentials", audience="https://other.example")


# Authorization code


async def code_grant(services: Services, creds: ClientCredentials | None = None, **params: str) -> object:
    return await token(services, creds, **{"grant_type": "authorization_code", **params})


async def test_code_grant_issues_tokens_for_the_user(services: Services) -> None:
    await confidential_client(services)
    ann = await user(services)
    code = await authorization_code(services, ann, scope="openid")
    response = await code_grant(services, code=code, redirect_uri=REDIRECT)
    assert (response.userinfo["id"], response.scope) == ("ann", "openid")
    assert response.refresh_token is not None


async def test_code_grant_needs_a_code(services: Services) -> None:
    await confidential_client(services)
    with pytest.raises(InvalidRequest, match="Missing 'code'"):
        await code_grant(services, redirect_uri=REDIRECT)


async def test_code_of_another_client_is_invalid_grant(services: Services) -> None:
    await confidential_client(services)
    await confidential_client(services, "other")
    code = await authorization_code(services, await user(services))
    with pytest.raises(InvalidGrant, match="issued to another client"):
        await code_grant(services, credentials("other"), code=code, redirect_uri=REDIRECT)


async def test_redirect_uri_must_repeat_the_authorization_request(services: Services) -> None:
    await confidential_client(services)
    code = await authorization_code(services, await user(services))
    with pytest.raises(InvalidGrant, match="'redirect_uri' does not match"):
        await code_grant(services, code=code, redirect_uri=REDIRECT + "/")


async def test_redirect_uri_may_be_left_out_when_only_one_is_registered(services: Services) -> None:
    await confidential_client(services)
    code = await authorization_code(services, await user(services))
    assert (await code_grant(services, code=code)).userinfo["id"] == "ann"


async def test_redirect_uri_is_required_when_several_are_registered(services: Services) -> None:
    await confidential_client(
        services, auth={"authorization_code": {"redirect_uri": [REDIRECT, "https://app.example/other"]}}
    )
    code = await authorization_code(services, await user(services))
    with pytest.raises(InvalidRequest, match="Missing 'redirect_uri'"):
        await code_grant(services, code=code)


async def test_public_client_exchanges_with_the_pkce_verifier(services: Services) -> None:
    await public_client(services)
    ann = await user(services)
    challenge = {
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }
    code = await authorization_code(services, ann, client_id="spa", **challenge)
    with pytest.raises(InvalidRequest, match="Missing 'code_verifier'"):
        await code_grant(services, credentials("spa", None), code=code, redirect_uri=REDIRECT)
    code = await authorization_code(services, ann, client_id="spa", **challenge)
    with pytest.raises(InvalidGrant, match="'code_verifier' does not match"):
        await code_grant(
            services, credentials("spa", None), code=code, redirect_uri=REDIRECT, code_verifier="v" * 43
        )
    code = await authorization_code(services, ann, client_id="spa", **challenge)
    response = await code_grant(
        services, credentials("spa", None), code=code, redirect_uri=REDIRECT, code_verifier=VERIFIER
    )
    assert response.userinfo["id"] == "ann"


async def test_code_of_a_user_made_inactive_is_invalid_grant(services: Services) -> None:
    await confidential_client(services)
    code = await authorization_code(services, await user(services))
    await user(services, inactive=True)
    with pytest.raises(InvalidGrant, match="^User is inactive$"):
        await code_grant(services, code=code, redirect_uri=REDIRECT)


async def test_code_alias_in_grant_types_allows_the_grant(services: Services) -> None:
    await confidential_client(services, grant_types=["code"])
    code = await authorization_code(services, await user(services))
    assert (await code_grant(services, code=code, redirect_uri=REDIRECT)).userinfo["id"] == "ann"


# Refresh token


async def refresh(
    services: Services, refresh_token: str, creds: ClientCredentials | None = None, **params: str
) -> object:
    return await token(services, creds, grant_type="refresh_token", refresh_token=refresh_token, **params)


async def first_tokens(services: Services, **client_fields: object) -> object:
    await confidential_client(services, **client_fields)
    await user(services)
    return await password(services, username="ann", password=PASSWORD, scope="read write")


async def test_refresh_rotates_both_tokens(services: Services) -> None:
    first = await first_tokens(services)
    second = await refresh(services, first.refresh_token)
    assert second.access_token != first.access_token and second.refresh_token != first.refresh_token
    assert (second.scope, second.userinfo["id"]) == ("read write", "ann")
    assert await services.sessions.resolve(first.access_token) is None
    assert (await services.sessions.resolve(second.access_token)).user_id == "ann"
    third = await refresh(services, second.refresh_token)
    assert third.refresh_token not in (first.refresh_token, second.refresh_token)
    assert await services.sessions.resolve(second.access_token) is None


async def test_a_rotated_refresh_token_presented_again_revokes_the_family(services: Services) -> None:
    first = await first_tokens(services)
    second = await refresh(services, first.refresh_token)
    session = await services.sessions.find_by_access_token(second.access_token)
    with pytest.raises(
        RefreshTokenReused, match="^Refresh token was already used; the tokens issued"
    ) as caught:
        await refresh(services, first.refresh_token)
    reused = caught.value
    assert (reused.session_id, reused.user_id, reused.client_id) == (session["id"], "ann", "app")
    assert await services.sessions.resolve(second.access_token) is None
    with pytest.raises(InvalidGrant, match="^Refresh token was revoked$"):
        await refresh(services, second.refresh_token)


async def test_refresh_needs_the_token(services: Services) -> None:
    await confidential_client(services)
    with pytest.raises(InvalidRequest, match="Missing 'refresh_token'"):
        await token(services, grant_type="refresh_token")


async def test_refresh_token_of_another_client_is_invalid_grant(services: Services) -> None:
    first = await first_tokens(services)
    await confidential_client(services, "other", secret="other-secret")
    with pytest.raises(InvalidGrant, match="issued to another client"):
        await refresh(services, first.refresh_token, credentials("other", "other-secret"))


async def test_refresh_token_of_an_ended_session_is_invalid_grant(services: Services) -> None:
    first = await first_tokens(services)
    await services.sessions.end(await services.sessions.find_by_access_token(first.access_token))
    with pytest.raises(InvalidGrant, match="Refresh token was revoked"):
        await refresh(services, first.refresh_token)


async def test_refresh_token_expires_from_issue_or_last_use(services: Services, clock: ManualClock) -> None:
    first = await first_tokens(
        services, auth={"password": {"refresh_token": True, "refresh_token_expiration": 100}}
    )
    clock.advance(99)
    second = await refresh(services, first.refresh_token)
    clock.advance(99)
    third = await refresh(services, second.refresh_token)
    clock.advance(100)
    with pytest.raises(InvalidGrant, match="Refresh token expired"):
        await refresh(services, third.refresh_token)


async def test_refresh_without_expiration_never_expires(services: Services, clock: ManualClock) -> None:
    first = await first_tokens(services)
    clock.advance(10 * 365 * 86400)
    assert (await refresh(services, first.refresh_token)).userinfo["id"] == "ann"


async def test_refresh_after_the_client_turned_refresh_tokens_off(services: Services) -> None:
    first = await first_tokens(services)
    await confidential_client(services, grant_types=["password", "refresh_token"], auth={"password": {}})
    with pytest.raises(InvalidGrant, match="Refresh tokens are turned off for this client"):
        await refresh(services, first.refresh_token)


async def test_refresh_for_a_user_made_inactive_is_invalid_grant(services: Services) -> None:
    first = await first_tokens(services)
    await user(services, inactive=True)
    with pytest.raises(InvalidGrant, match="^User is inactive$"):
        await refresh(services, first.refresh_token)


async def test_refresh_may_narrow_the_scope_but_not_widen_it(services: Services) -> None:
    first = await first_tokens(services)
    narrowed = await refresh(services, first.refresh_token, scope="read")
    assert narrowed.scope == "read"
    with pytest.raises(InvalidScope, match="Scope 'write' was not granted"):
        await refresh(services, narrowed.refresh_token, scope="read write")


async def test_refresh_is_permitted_by_flow_config_without_grant_types_entry(services: Services) -> None:
    first = await first_tokens(services, grant_types=["password"])
    assert (await refresh(services, first.refresh_token)).userinfo["id"] == "ann"


def test_every_oauth_error_names_its_wire_code() -> None:
    import fhirauth.auth.oauth_errors as errors

    codes = {
        cls.error: cls.status
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, OAuthError) and cls is not OAuthError
    }
    assert codes == {
        "invalid_request": 400,
        "invalid_client": 401,
        "invalid_grant": 400,
        "unauthorized_client": 400,
        "unsupported_grant_type": 400,
        "invalid_scope": 400,
        "unsupported_response_type": 400,
        "access_denied": 403,
        "server_error": 500,
        "temporarily_unavailable": 503,
    }
