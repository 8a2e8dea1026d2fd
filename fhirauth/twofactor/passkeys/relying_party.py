"""The relying party a ceremony runs for: its rpId and the origins its pages are served from."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class RelyingParty:
    id: str
    origins: tuple[str, ...]

    @classmethod
    def of(cls, base_url: str, rp_id: str | None = None, origins: list[str] | None = None) -> RelyingParty:
        """rpId from the base URL's host unless set; the expected origins are the base URL's own
        unless listed (a single-page app served from another origin under the same domain)."""
        parts = urlsplit(base_url)
        own = f"{parts.scheme}://{parts.netloc}"
        return cls(rp_id or (parts.hostname or ""), tuple(origins or (own,)))
