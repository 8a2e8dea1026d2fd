"""Small builders shared by the OAuth unit tests: clients, users, credentials, token requests."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from fhirauth.auth.client_auth import ClientCredentials
from fhirauth.auth.passwords import PasswordHasher
from fhirauth.auth.tokens import TokenResponse
from fhirauth.services import Services

Document = dict[str, Any]

PASSWORD = "correct horse battery staple"
SECRET = "app-secret"
REDIRECT = "https://app.example/callback"
# RFC 7636 Appendix B.
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


async def put(services: Services, resource_type: str, id: str, **fields: Any) -> Document:
    written = await services.resources.update(resource_type, id, {"resourceType": resource_type, **fields})
    return written.resource


async def confidential_client(services: Services, id: str = "app", **fields: Any) -> Document:
    """A client with a secret, every grant, and a single registered redirect URI."""
    body: Document = {
        "secret": SECRET,
        "grant_types": ["authorization_code", "implicit", "password", "client_credentials", "refresh_token"],
        "auth": {
            "authorization_code": {"redirect_uri": REDIRECT, "refresh_token": True},
            "implicit": {"redirect_uri": REDIRECT},
            "password": {"refresh_token": True},
        },
    }
    body.update(fields)
    return await put(services, "Client", id, **body)


async def public_client(services: Services, id: str = "spa", **fields: Any) -> Document:
    body: Document = {
        "grant_types": ["code", "password"],
        "auth": {"authorization_code": {"redirect_uri": REDIRECT, "refresh_token": True}},
    }
    body.update(fields)
    return await put(services, "Client", id, **body)


async def user(services: Services, id: str = "ann", **fields: Any) -> Document:
    body: Document = {"email": f"{id}@example.org", "password": PASSWORD}
    body.update(fields)
    return await put(services, "User", id, **body)


def credentials(client_id: str = "app", secret: str | None = SECRET) -> ClientCredentials:
    return ClientCredentials(client_id, secret)


async def token(services: Services, creds: ClientCredentials | None = None, **params: str) -> TokenResponse:
    return await services.grants.token(params, creds or credentials())


async def browser_session(services: Services, user_doc: Document) -> Document:
    _, session = await services.sessions.create_browser_session(user_doc, max_age=3600, ip="127.0.0.1")
    return session


async def authorization_code(
    services: Services, user_doc: Document, *, client_id: str = "app", **params: str
) -> str:
    """A code issued through /auth/authorize's domain side for a signed-in user."""
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "state": "xyz",
        **params,
    }
    request = await services.authorization.validate(query)
    completed = await services.authorization.complete(
        request, user_doc, await browser_session(services, user_doc)
    )
    location = completed.location()
    (code,) = parse_qs(urlsplit(location).query)["code"]
    return code


class CountingHasher(PasswordHasher):
    """Argon2id at test-sized cost, counting every verification (real or dummy) it performs."""

    def __init__(self) -> None:
        super().__init__(memory_cost=64, time_cost=1)
        self.verifications = 0

    def verify(self, stored_hash: str, password: str) -> bool:
        self.verifications += 1
        return super().verify(stored_hash, password)
