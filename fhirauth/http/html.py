"""Rendering the HTML pages: Jinja2 (autoescaped), the AuthConfig theme, the CSRF field, safe headers."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from fhirauth.http.context import services_of
from fhirauth.http.cookies import CSRF_COOKIE, is_secure, read_cookie, set_cookie
from fhirauth.http.csrf import CSRF_FIELD, Csrf
from fhirauth.http.forms import Form, read_form
from fhirauth.http.security_headers import new_nonce, page_policy

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
DEFAULT_TITLE = "fhirauth"

templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True, trim_blocks=True, lstrip_blocks=True
    )
)

static = Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static")

# Pages hold CSRF fields and personal data: never cached, never framed (clickjacking on the consent
# page), and never leaking their URL (a signup link carries its token) to a themed stylesheet's host.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _local_or_http_url(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    lowered = value.strip().lower()
    if lowered.startswith(("https://", "http://")) or (
        lowered.startswith("/") and not lowered.startswith("//")
    ):
        return value.strip()
    return None


def page_theme(theme: Mapping[str, Any]) -> dict[str, str | None]:
    """AuthConfig.theme for the templates; URLs other than http(s) or local paths are dropped."""
    title = (
        theme.get("title") if isinstance(theme.get("title"), str) and theme.get("title") else DEFAULT_TITLE
    )
    brand = theme.get("brand") if isinstance(theme.get("brand"), str) and theme.get("brand") else title
    return {
        "title": title,
        "brand": brand,
        "style_url": _local_or_http_url(theme.get("styleUrl")),
        "forgot_password_url": _local_or_http_url(theme.get("forgotPasswordUrl")),
    }


def csrf_of(request: Request) -> Csrf:
    return Csrf.from_box(services_of(request).box)


def secure_cookies(request: Request) -> bool:
    return is_secure(request, services_of(request).settings.base_url)


async def render(
    request: Request, template: str, context: Mapping[str, Any], *, status: int = 200
) -> Response:
    services = services_of(request)
    cookie = read_cookie(request, CSRF_COOKIE)
    fresh = cookie is None
    if cookie is None:
        cookie = Csrf.new_cookie()
    theme = page_theme(await services.auth_config.theme())
    nonce = new_nonce()
    page_context = {
        **context,
        "theme": theme,
        "csrf": csrf_of(request).field_for(cookie),
        "csp_nonce": nonce,
    }
    headers = {**PAGE_HEADERS, "Content-Security-Policy": page_policy(nonce, theme["style_url"])}
    response = templates.TemplateResponse(
        request, template, page_context, status_code=status, headers=headers
    )
    if fresh:
        set_cookie(response, CSRF_COOKIE, cookie, max_age=None, secure=secure_cookies(request))
    return response


async def error_page(
    request: Request,
    message: str,
    *,
    status: int = 400,
    heading: str = "Something went wrong",
    hint: str | None = None,
) -> Response:
    return await render(
        request, "error.html", {"heading": heading, "message": message, "hint": hint}, status=status
    )


async def checked_form(request: Request) -> Form:
    """The POSTed form, after its CSRF field was checked (BadForm or CsrfRefused otherwise)."""
    form = await read_form(request)
    csrf_of(request).check(read_cookie(request, CSRF_COOKIE), form.get(CSRF_FIELD))
    return form
