"""Client.auth.<flow>: where a client configures each grant flow (Aidbox's shape), read in one place."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Document = dict[str, Any]

AUTHORIZATION_CODE = "authorization_code"
IMPLICIT = "implicit"
PASSWORD = "password"
CLIENT_CREDENTIALS = "client_credentials"
TOKEN_FLOWS = (AUTHORIZATION_CODE, IMPLICIT, PASSWORD, CLIENT_CREDENTIALS)


def flow_settings(client: Document, flow: str) -> Document:
    auth = client.get("auth")
    settings = auth.get(flow) if isinstance(auth, dict) else None
    return settings if isinstance(settings, dict) else {}


def redirect_uris(client: Document, flow: str) -> list[str]:
    """The registered redirect URIs of a flow (a string or a list in Aidbox's Client)."""
    value = flow_settings(client, flow).get("redirect_uri")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [uri for uri in value if isinstance(uri, str)]
    return []


def every_redirect_uri(client: Document) -> list[str]:
    """The registered redirect URIs of every flow the client configures."""
    auth = client.get("auth")
    return [uri for flow in auth for uri in redirect_uris(client, flow)] if isinstance(auth, dict) else []


def sole_redirect_uri(client: Document, flows: Iterable[str]) -> str | None:
    """The URI a request may leave out (RFC 6749 §3.1.2.3): the only one these flows register, if so."""
    registered = {uri for flow in flows for uri in redirect_uris(client, flow)}
    return registered.pop() if len(registered) == 1 else None
