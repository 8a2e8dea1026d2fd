"""SMART's `fhirUser` ID token claim (scopes-and-launch-context.md §fhirUser): the FHIR record the
User stands for, when the grant has the `fhirUser` scope and the User has a fhirUser."""

from __future__ import annotations

from fhirauth.auth.oidc.claims import ClaimSource, Document, IdTokenRequest
from fhirauth.auth.smart.fhir_user import fhir_user
from fhirauth.auth.smart.scopes import FHIR_USER


def _fhir_user(request: IdTokenRequest) -> Document:
    if request.scope is None or FHIR_USER not in request.scope.split():
        return {}
    found = fhir_user(request.user)
    return {FHIR_USER: found.claim} if found is not None else {}


FHIR_USER_CLAIM = ClaimSource((FHIR_USER,), _fhir_user)
