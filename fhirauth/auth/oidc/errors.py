"""The authorization endpoint's OpenID Connect error codes (Core §3.1.2.6): one class per wire code."""

from __future__ import annotations

from fhirauth.auth.oauth_errors import OAuthError


class LoginRequired(OAuthError):
    """prompt=none, and the user would have to sign in."""

    error = "login_required"


class ConsentRequired(OAuthError):
    """prompt=none, and the user would have to consent."""

    error = "consent_required"


class InteractionRequired(OAuthError):
    """prompt=none, and the sign-in needs the user for another step (the second factor)."""

    error = "interaction_required"


class RequestNotSupported(OAuthError):
    """The request used the `request` parameter (a request object), which this server does not take."""

    error = "request_not_supported"


class RequestUriNotSupported(OAuthError):
    """The request used the `request_uri` parameter, which this server does not take."""

    error = "request_uri_not_supported"
