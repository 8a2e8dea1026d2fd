"""Launch contexts (app-launch.md §launch-app-ehr-launch): what an EHR registers before it opens an
app with `launch=<id>`, and what a token response carries (§step-5 launch context).

An EHR (the root client, or a client with `smart.launch_registration`) registers a context for one
app and gets an opaque id back. The id lives ten minutes, long enough for a sign-in with a second
factor and a consent, and is used up by the authorization it completes: a launch id seen in a
browser's history or a log cannot be replayed. Only its hash is stored (a short-lived record), as
for authorization codes. A context may name the User it is for; then no other user can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # jsonschema ships no type information
from jsonschema.exceptions import best_match  # type: ignore[import-untyped]  # jsonschema ships no type information

from fhirauth.auth.clients import ClientRegistry
from fhirauth.auth.principal import Principal
from fhirauth.clock import Clock
from fhirauth.errors import Invalid
from fhirauth.resources.paths import render_path
from fhirauth.security import issued_token, token_hash
from fhirauth.storage.base import Storage

Document = dict[str, Any]

LAUNCH_KIND = "smart-launch"
LAUNCH_SECONDS = 600
MAX_LAUNCH_CHARS = 256
# What a launch context may hold, by its token-response names.
CONTEXT_FIELDS = ("patient", "encounter", "fhirContext", "need_patient_banner", "smart_style_url", "intent")

_ID = {"type": "string", "pattern": "^[A-Za-z0-9\\-.]{1,64}$"}
_REGISTRATION = Draft202012Validator(
    {
        "type": "object",
        "required": ["client"],
        "additionalProperties": False,
        "properties": {
            "client": _ID,
            "user": _ID,
            "patient": _ID,
            "encounter": _ID,
            "fhirContext": {
                "type": "array",
                "maxItems": 20,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "anyOf": [
                        {"required": ["reference"]},
                        {"required": ["canonical"]},
                        {"required": ["identifier"]},
                    ],
                    "properties": {
                        "reference": {
                            "type": "string",
                            "pattern": "^[A-Z][A-Za-z0-9]*/[A-Za-z0-9\\-.]{1,64}$",
                        },
                        "canonical": {"type": "string", "minLength": 1, "maxLength": 2048},
                        "identifier": {"type": "object"},
                        "type": {"type": "string", "pattern": "^[A-Z][A-Za-z0-9]*$"},
                        "role": {"type": "string", "minLength": 1, "maxLength": 2048},
                    },
                },
            },
            "need_patient_banner": {"type": "boolean"},
            "smart_style_url": {"type": "string", "pattern": "^https?://[^\\s]+$", "maxLength": 2048},
            "intent": {"type": "string", "minLength": 1, "maxLength": 256},
        },
    }
)


@dataclass(frozen=True)
class Launch:
    client_id: str
    user_id: str | None
    context: Document


def may_register(principal: Principal) -> bool:
    """The root client, and a client (itself, not a user through it) that `smart.launch_registration` names an EHR."""
    if principal.is_root:
        return True
    smart = principal.client.get("smart") if principal.client is not None else None
    return principal.kind == "client" and isinstance(smart, dict) and smart.get("launch_registration") is True


def _checked(body: object) -> Document:
    error = best_match(_REGISTRATION.iter_errors(body))
    if error is not None:
        path = render_path(error.absolute_path) if error.absolute_path else None
        raise Invalid(f"{path}: {error.message}" if path else error.message, path)
    assert isinstance(body, dict)
    return body


class Launches:
    def __init__(self, storage: Storage, clients: ClientRegistry, clock: Clock) -> None:
        self._storage = storage
        self._clients = clients
        self._clock = clock

    async def register(self, body: object) -> str:
        """Store a launch context (validated: Invalid names the field) and return its new id."""
        doc = _checked(body)
        if await self._clients.get(doc["client"]) is None:
            raise Invalid("client: no active Client has this id", "client")
        launch = issued_token()
        await self._storage.record_put(
            LAUNCH_KIND,
            token_hash(launch),
            doc,
            expected_rev=None,
            expires_at=self._clock() + timedelta(seconds=LAUNCH_SECONDS),
        )
        return launch

    async def find(self, launch: str, client_id: str) -> Launch | None:
        """The live launch `launch` names for this client; None for any other id."""
        if len(launch) > MAX_LAUNCH_CHARS:
            return None
        record = await self._storage.record_get(LAUNCH_KIND, token_hash(launch))
        return _launch(record.document, client_id) if record is not None else None

    async def take(self, launch: str, client_id: str) -> Launch | None:
        """Use the launch up: exactly one authorization gets it."""
        record = await self._storage.record_take(LAUNCH_KIND, token_hash(launch))
        return _launch(record.document, client_id) if record is not None else None


def _launch(doc: Document, client_id: str) -> Launch | None:
    if doc.get("client") != client_id:
        return None
    context = {name: doc[name] for name in CONTEXT_FIELDS if name in doc}
    return Launch(client_id, doc.get("user"), context)
