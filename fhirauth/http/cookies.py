"""The cookies the HTML pages set: the browser session, the CSRF secret, the pending 2FA login, the
trusted device."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "asid"
CSRF_COOKIE = "fhirauth_csrf"
PENDING_COOKIE = "fhirauth_pending"
PENDING_COOKIE_PATH = "/auth"
PENDING_COOKIE_MAX_AGE = 300
TRUSTED_COOKIE = "fhirauth_trusted"
# Sent only where it is read: the sign-in and the two-factor pages.
TRUSTED_COOKIE_PATH = "/auth"
# Cookie values we set are URL-safe tokens; anything longer or stranger is ignored as junk.
_MAX_COOKIE_CHARS = 128


def is_secure(request: Request, base_url: str) -> bool:
    """Whether cookies must be Secure: the public base URL or this request is https."""
    return base_url.lower().startswith("https://") or request.url.scheme == "https"


def read_cookie(request: Request, name: str) -> str | None:
    value = request.cookies.get(name)
    if not value or len(value) > _MAX_COOKIE_CHARS:
        return None
    return value


def set_cookie(
    response: Response, name: str, value: str, *, max_age: int | None, secure: bool, path: str = "/"
) -> None:
    """HttpOnly and SameSite=Lax always: no script reads them, and no cross-site POST carries them."""
    response.set_cookie(name, value, max_age=max_age, path=path, secure=secure, httponly=True, samesite="Lax")  # type: ignore[arg-type]  # Starlette's Literal is lower case; the attribute is sent as browsers write it


def clear_cookie(response: Response, name: str, *, secure: bool, path: str = "/") -> None:
    response.set_cookie(
        name,
        "",
        max_age=0,
        expires=0,
        path=path,
        secure=secure,
        httponly=True,
        samesite="Lax",  # type: ignore[arg-type]  # Starlette's Literal is lower case; the attribute is sent as browsers write it
    )
