"""How a location inside a document is written in an OperationOutcome `expression`: `User.name.given[0]`."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Keys come from request bodies: control characters and lone surrogates would make the error
# response itself unprintable (or unencodable), so they are shown as \uXXXX escapes.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def _escape(key: str) -> str:
    return _UNPRINTABLE.sub(lambda match: f"\\u{ord(match.group()):04x}", key)


def render_path(segments: Iterable[str | int], root: str = "") -> str:
    text = root
    for segment in segments:
        if isinstance(segment, int):
            text += f"[{segment}]"
        else:
            text += f".{_escape(segment)}" if text else _escape(segment)
    return text
