"""User.fhirUser: the FHIR record a User stands for (scopes-and-launch-context.md §fhirUser).

Stored as Aidbox stores a Reference, `{"resourceType": "Patient", "id": "123"}`, and nothing else
(schemas/User.json): the patient compartment's search names `fhirUser.resourceType` and
`fhirUser.id`, so a second shape would be a User the search misses. The claim is the relative
reference, `Patient/123`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

Document = dict[str, Any]

# SMART: the fhirUser claim names one of these.
TYPES = ("Patient", "Practitioner", "PractitionerRole", "RelatedPerson", "Person")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


@dataclass(frozen=True)
class FhirUser:
    claim: str
    resource_type: str
    id: str


def fhir_user(user: Document) -> FhirUser | None:
    """The User's fhirUser, or None when it has none this server can read."""
    value = user.get("fhirUser")
    if not isinstance(value, dict):
        return None
    resource_type, id = value.get("resourceType"), value.get("id")
    if resource_type in TYPES and isinstance(id, str) and _ID.fullmatch(id):
        return FhirUser(f"{resource_type}/{id}", resource_type, id)
    return None


def patient_of(user: Any) -> str | None:
    """The id of the Patient the User is, if its fhirUser is a Patient."""
    found = fhir_user(user) if isinstance(user, dict) else None
    return found.id if found is not None and found.resource_type == "Patient" else None
