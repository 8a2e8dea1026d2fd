"""Consent: a user's Grant to a client, asked once per client (and again for scopes not yet granted)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhirauth.auth.smart.scopes import describe
from fhirauth.clock import Clock, isoformat
from fhirauth.resources.service import ResourceService
from fhirauth.storage.base import Filter, Query

Document = dict[str, Any]

_MAX_GRANTS_PER_PAIR = 10


def scope_set(scope: str | list[str] | None) -> frozenset[str]:
    if scope is None:
        return frozenset()
    parts = scope if isinstance(scope, list) else scope.split()
    return frozenset(part for part in parts if isinstance(part, str) and part)


@dataclass(frozen=True)
class ScopeLine:
    """One line of the consent page: the scope, and what it allows in plain words (when known)."""

    scope: str
    text: str | None


def scope_lines(scope: str | None) -> list[ScopeLine]:
    return [ScopeLine(token, describe(token)) for token in sorted(scope_set(scope))]


class Consents:
    def __init__(self, resources: ResourceService, clock: Clock) -> None:
        self._resources = resources
        self._clock = clock

    async def needed(self, client: Document, user: Document, scope: str | None) -> bool:
        """Whether the user must be asked: never for first-party clients, else until a Grant covers it."""
        if client.get("first_party") is True:
            return False
        wanted = scope_set(scope)
        return not any(wanted <= scope_set(grant.get("scope")) for grant in await self._grants(client, user))

    async def grant(self, client: Document, user: Document, scope: str | None) -> Document:
        """Store the approval as a Grant {client, user, scope, start}, one per client and user.

        A later approval of more scopes widens the existing Grant.
        """
        existing = await self._grants(client, user)
        granted = scope_set(scope).union(*(scope_set(grant.get("scope")) for grant in existing))
        body: Document = {
            "resourceType": "Grant",
            "client": {"resourceType": "Client", "id": client["id"]},
            "user": {"resourceType": "User", "id": user["id"]},
            "start": isoformat(self._clock()),
        }
        if granted:
            body["scope"] = " ".join(sorted(granted))
        if existing:
            current = existing[0]
            return await self._resources.save(
                {**body, "id": current["id"]}, int(current["meta"]["versionId"])
            )
        return (await self._resources.create("Grant", body)).resource

    async def _grants(self, client: Document, user: Document) -> list[Document]:
        query = Query(
            filters=(Filter("user.id", (user["id"],)), Filter("client.id", (client["id"],))),
            limit=_MAX_GRANTS_PER_PAIR,
            count_total=False,
        )
        page = await self._resources.storage.search("Grant", query)
        return page.items
