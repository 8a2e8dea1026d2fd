"""A token's SMART resource scopes, enforced on top of the AccessPolicies: a request must be allowed
by a policy and by one of the token's scopes.

Which tokens are bound: those granted a resource scope, and every token of a Client whose `scope`
list declares one (a SMART app's token that asked for `openid` alone reaches no resource: no
resource scope granted, no resource access). Other tokens, and HTTP Basic callers, get what the
policies give them, as in Aidbox. A root client's token bound by scopes is no administrator
(fhirauth/auth/policies.py): it bypasses the policies, never its scopes, and writes no
administrator-only field.

The request is read from the request object the policies see (fhirauth/http/rest.py builds it, for
a request and for each Bundle entry alike), so every route and every entry goes through `allows`.

* `user/` scopes: the types and interactions the scope names, of whatever the user's policies allow.
* `system/` scopes: the same for a token of a client alone (client_credentials).
* `patient/` scopes: the patient's compartment. fhirauth holds no clinical data, so a patient's
  compartment here is the User records whose fhirUser is that Patient (the patient's own account):
  read, vread and history of those; update and patch that keep it the patient's; create of a User for
  that patient; delete; a search whose query names the patient (`fhirUser.resourceType=Patient&
  fhirUser.id=<patient>`, which finds the Users whose fhirUser is stored as a Reference). Every other
  type is outside any patient's compartment: patient/ scopes reach none of it.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from fhirauth.auth.principal import Principal
from fhirauth.auth.smart import scopes
from fhirauth.auth.smart.fhir_user import patient_of
from fhirauth.errors import Forbidden
from fhirauth.resources.service import ResourceService

Document = dict[str, Any]

# /{type}, /{type}/{id}, /{type}/{id}/_history, /{type}/{id}/_history/{vid}: the resource routes.
_ROUTE = re.compile(r"/([A-Z][A-Za-z0-9]*)(?:/([^/]+)(/_history(?:/[^/]+)?)?)?/?")
_COMPARTMENT_TYPE = "User"


def _permission(method: str, id: str | None) -> str | None:
    if method in ("get", "head"):
        return scopes.READ if id is not None else scopes.SEARCH
    if method == "post" and id is None:
        return scopes.CREATE
    if method in ("put", "patch") and id is not None:
        return scopes.UPDATE
    if method == "delete" and id is not None:
        return scopes.DELETE
    return None


def _touches_fhir_user(patch: Any) -> bool:
    """Whether a merge patch (object) or JSON Patch (operations) may change `fhirUser`."""
    if isinstance(patch, dict):
        return "fhirUser" in patch
    if not isinstance(patch, list):
        return True
    for operation in patch:
        if not isinstance(operation, dict):
            return True
        for key in ("path", "from"):
            path = operation.get(key)
            if isinstance(path, str) and (path in ("", "/fhirUser") or path.startswith("/fhirUser/")):
                return True
    return False


def _confined(query: str, patient: str) -> bool:
    """Whether a User search keeps to the patient's compartment: its parameters are all ANDed, so
    naming the patient's reference exactly (one value each, no comma's OR) bounds every result."""
    pairs = parse_qsl(query, keep_blank_values=True)
    return ("fhirUser.resourceType", "Patient") in pairs and ("fhirUser.id", patient) in pairs


def _bound(principal: Principal) -> scopes.Granted | None:
    """The scopes the caller's token is bound by; None when only the AccessPolicies bind it."""
    if principal.session is None:
        return None
    granted = scopes.granted(principal.session.get("scope"))
    if granted.restricts:
        return granted
    declared = principal.client.get("scope") if principal.client is not None else None
    return granted if declared is not None and scopes.declares_resource_scopes(declared) else None


class ScopeEnforcement:
    def __init__(self, resources: ResourceService) -> None:
        self._resources = resources

    @staticmethod
    def restricts(principal: Principal | None) -> bool:
        """Whether the caller is a token bound by SMART scopes."""
        return principal is not None and _bound(principal) is not None

    async def authorize(self, principal: Principal | None, request: Document) -> None:
        if not await self.allows(principal, request):
            raise Forbidden("The token's scopes do not allow this request")

    async def allows(self, principal: Principal | None, request: Document) -> bool:
        """Whether the token's scopes allow the request (policies are checked apart, and first)."""
        if principal is None or principal.session is None:
            return True
        granted = _bound(principal)
        if granted is None:
            return True
        route = _ROUTE.fullmatch(str(request.get("uri", "")))
        if route is None:
            # `POST /` (a Bundle): its entries are authorized one by one.
            return request.get("request-method") == "post" and request.get("uri") == "/"
        resource_type, id, history = route.groups()
        method = str(request.get("request-method"))
        permission = _permission(method, id)
        if permission is None or (history is not None and permission != scopes.READ):
            return False
        context = principal.session.get("context")
        patient = context.get("patient") if isinstance(context, dict) else None
        compartment: bool | None = None
        for scope in granted.resources:
            if not scope.allows(resource_type, permission):
                continue
            if scope.context == scopes.USER and principal.user is not None:
                return True
            if scope.context == scopes.SYSTEM and principal.user is None:
                return True
            if scope.context == scopes.PATIENT and isinstance(patient, str):
                if compartment is None:
                    compartment = await self._in_compartment(patient, method, resource_type, id, request)
                if compartment:
                    return True
        return False

    async def _in_compartment(
        self, patient: str, method: str, resource_type: str, id: str | None, request: Document
    ) -> bool:
        if resource_type != _COMPARTMENT_TYPE:
            return False
        body = request.get("body")
        if id is None:
            if method == "post":
                return patient_of(body) == patient
            return _confined(str(request.get("query-string", "")), patient)
        stored = await self._resources.find(_COMPARTMENT_TYPE, id)
        if stored is None or patient_of(stored.document) != patient:
            return False
        if method == "put":
            return patient_of(body) == patient
        if method == "patch":
            return not _touches_fhir_user(body)
        return True
