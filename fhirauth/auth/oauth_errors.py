"""OAuth 2.0 errors (RFC 6749 §4.1.2.1, §5.2): one class per wire code.

They are plain data; fhirauth/http/errors.py renders them as `error_body`.
"""

from __future__ import annotations

from typing import ClassVar


def error_body(error: str, description: str) -> dict[str, str]:
    """RFC 6749 §5.2's error body, also the query of an error redirect (§4.1.2.1) and the shape of
    the two-factor operations' refusals (Aidbox's demo app)."""
    return {"error": error, "error_description": description}


class OAuthError(Exception):
    error: ClassVar[str] = "invalid_request"
    status: ClassVar[int] = 400

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, str]:
        return error_body(self.error, self.description)


class InvalidRequest(OAuthError):
    """A required parameter is missing or malformed, repeated, or the request is otherwise malformed."""

    error = "invalid_request"


class InvalidClient(OAuthError):
    """Client authentication failed: unknown client, no client authentication, or a wrong secret."""

    error = "invalid_client"
    status = 401

    def __init__(self, description: str, *, scheme: str | None = None) -> None:
        super().__init__(description)
        # RFC 6749 §5.2: a client that tried HTTP authentication is told which scheme to use.
        if scheme is not None:
            self.headers["WWW-Authenticate"] = f'{scheme} realm="fhirauth"'


class InvalidGrant(OAuthError):
    """The code, refresh token or resource owner credentials are invalid, expired, revoked or not
    issued to this client, or the redirect URI does not match."""

    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    """The authenticated client may not use this grant type or response type."""

    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    """The grant type is not supported by this server."""

    error = "unsupported_grant_type"


class InvalidScope(OAuthError):
    """The requested scope is malformed, unknown, or exceeds what the client or grant allows."""

    error = "invalid_scope"


class UnsupportedResponseType(OAuthError):
    """The server does not issue what `response_type` asks for."""

    error = "unsupported_response_type"


class AccessDenied(OAuthError):
    """The resource owner or the server denied the request."""

    error = "access_denied"
    status = 403


class ServerError(OAuthError):
    """The server met an unexpected condition."""

    error = "server_error"
    status = 500


class TemporarilyUnavailable(OAuthError):
    """The server is too busy to handle the request now (RFC 6749 §4.1.2.1's code, answered with
    HTTP 503 and Retry-After at the token endpoint too)."""

    error = "temporarily_unavailable"
    status = 503
