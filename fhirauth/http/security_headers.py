"""Browser-facing defences on every response, and the Content-Security-Policy of the HTML pages.

A response that sets its own policy (the pages, with a nonce) keeps it; everything else (JSON,
YAML, errors) gets the strictest one, since no API answer is ever meant to run in a browser.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

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


def with_security_headers(headers: list[tuple[bytes, bytes]], secure: bool) -> list[tuple[bytes, bytes]]:
    """`headers` (raw pairs, changed in place) plus every default the response does not set itself."""
    present = {name.lower() for name, _ in headers}
    headers.extend(pair for pair in _DEFAULTS if pair[0] not in present)
    if secure:
        headers.append(_HSTS)
    return headers
