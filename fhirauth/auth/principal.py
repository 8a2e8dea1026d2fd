from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Document = dict[str, Any]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the root client, another client, or a user (through a client's token)."""

    kind: Literal["root", "client", "user"]
    client: Document | None = None
    user: Document | None = None
    session: Document | None = None

    @property
    def is_root(self) -> bool:
        return self.kind == "root"

    @property
    def client_id(self) -> str | None:
        return self.client["id"] if self.client else None

    @property
    def user_id(self) -> str | None:
        return self.user["id"] if self.user else None
