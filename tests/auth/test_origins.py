"""The origins a client's pages may call from, and the one rule of whether a client is active."""

from __future__ import annotations

from fhirauth.auth.clients import is_active
from fhirauth.auth.origins import AllowedOrigins, client_origins, origin_of
from fhirauth.clock import ManualClock
from fhirauth.services import Services
from tests.auth.oauth_helpers import put


def test_origin_of_writes_origins_as_browsers_do() -> None:
    assert origin_of("http://localhost:3000/auth?x=1#y") == "http://localhost:3000"
    assert origin_of("HTTPS://App.Example.org:443/cb") == "https://app.example.org"
    assert origin_of("http://example.org:80") == "http://example.org"
    assert origin_of("https://example.org:8443/") == "https://example.org:8443"
    assert origin_of("http://[::1]:8080/cb") == "http://[::1]:8080"
    assert origin_of("com.example.app:/callback") is None
    assert origin_of("http://example.org:99999/") is None
    assert origin_of("/relative") is None


def test_client_origins_reads_every_flow_and_allowed_origins() -> None:
    client = {
        "auth": {
            "authorization_code": {"redirect_uri": ["https://a.example/cb", "https://b.example:8443/cb"]},
            "implicit": {"redirect_uri": "http://localhost:3000/auth"},
            "client_credentials": {"access_token_expiration": 60},
        },
        "allowed_origins": ["https://c.example", "not a url"],
    }
    assert client_origins(client) == {
        "https://a.example",
        "https://b.example:8443",
        "http://localhost:3000",
        "https://c.example",
    }
    assert client_origins({**client, "active": False}) == set()


def test_a_client_is_active_unless_it_says_active_false() -> None:
    assert [is_active(client) for client in ({}, {"active": True}, {"active": False})] == [True, True, False]


async def test_an_inactive_client_is_neither_found_nor_allowed_until_it_is_active_again(
    services: Services, clock: ManualClock
) -> None:
    origins = AllowedOrigins(services.resources, clock)
    auth = {"implicit": {"redirect_uri": "https://spa.example/cb"}}
    await put(services, "Client", "spa", active=False, grant_types=["implicit"], auth=auth)
    assert await services.clients.get("spa") is None
    assert await origins.allows("https://spa.example") is False
    await put(services, "Client", "spa", active=True, grant_types=["implicit"], auth=auth)
    client = await services.clients.get("spa")
    assert client is not None and client["id"] == "spa"
    assert await origins.allows("https://spa.example") is True
