"""Browser-facing defences on every response, and the Content-Security-Policy of the HTML pages.

A response that sets its own policy (the pages, with a nonce) keeps it; everything else (JSON,
YAML, errors) gets the strictest one, since no API answer is ever meant to run in a browser.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
HSTS = "max-age=31536000; includeSubDomains"
_DEFAULTS = tuple(
    (name.encode(), value.encode())
    for name, value in (
        ("content-security-policy", API_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    )
)
_HSTS = (b"strict-transport-security", HSTS.encode())


def new_nonce() -> str:
    return secrets.token_urlsafe(16)


def page_policy(nonce: str | None, style_url: str | None = None) -> str:
    """The pages' policy: own scripts and styles only, inline script only with this response's nonce."""
    scripts = f"'self' 'nonce-{nonce}'" if nonce else "'self'"
    styles = "'self'"
    if style_url:
        origin = urlsplit(style_url)
        if origin.scheme in ("http", "https") and origin.netloc:
            styles += f" {origin.scheme}://{origin.netloc}"
    return (
        f"default-src 'self'; script-src {scripts}; style-src {styles}; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        secure = self.https or scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # On every response of the hot path: raw header pairs, one pass, no header object.
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(pair for pair in _DEFAULTS if pair[0] not in present)
                if secure:
                    headers.append(_HSTS)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
