"""The SMART rules of an authorization request (app-launch.md §step-4) and the launch context its
code carries to the token response.

A request is a SMART one when it asks for a SMART scope (a resource scope, `launch`, `launch/...`)
or names a `launch`. It must then name this server as its `aud` (a token meant for another resource
server is never issued here), and use PKCE with S256 if it uses PKCE at all; public clients always
must (fhirauth/auth/pkce.py), and a confidential client's `auth.authorization_code.pkce: true` makes
it required for that client too (fhirclient 4.3 and older send no PKCE, so it is not forced on all).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhirauth.auth.oauth_errors import AccessDenied, InvalidRequest, InvalidScope
from fhirauth.auth.pkce import CodeChallenge
from fhirauth.auth.smart import scopes
from fhirauth.auth.smart.fhir_user import fhir_user, patient_of
from fhirauth.auth.smart.launch import Launches

Document = dict[str, Any]

UNKNOWN_LAUNCH = "Unknown or expired 'launch'"


class SmartAuthorization:
    def __init__(self, launches: Launches, base_url: str) -> None:
        self._launches = launches
        self._base_url = base_url.rstrip("/")

    async def validate(
        self, params: Mapping[str, str], client_id: str, scope: str | None, challenge: CodeChallenge | None
    ) -> str | None:
        """Check a request's SMART rules; the launch id it names, if any."""
        tokens = scope.split() if scope else []
        launch = params.get("launch") or None
        aud = params.get("aud")
        if aud is not None and aud.rstrip("/") != self._base_url:
            raise InvalidRequest(f"'aud' must be this server's FHIR base URL, {self._base_url}")
        if launch is None and not any(scopes.is_smart(token) for token in tokens):
            return None
        if not aud:
            raise InvalidRequest("Missing 'aud': the FHIR base URL the app will call")
        if challenge is not None and challenge.method != "S256":
            raise InvalidRequest("SMART requests use 'code_challenge_method' S256")
        if launch is not None and scopes.LAUNCH not in tokens:
            raise InvalidScope("'launch' needs the 'launch' scope")
        if launch is None and scopes.LAUNCH in tokens:
            raise InvalidRequest("The 'launch' scope needs a 'launch' parameter (EHR launch)")
        if launch is not None and await self._launches.find(launch, client_id) is None:
            raise InvalidRequest(UNKNOWN_LAUNCH)
        return launch

    async def context(
        self, launch: str | None, client_id: str, user: Document, scope: str | None
    ) -> Document | None:
        """The launch context of the tokens this authorization leads to; uses the launch up."""
        granted = scopes.granted(scope)
        context: Document = {}
        if launch is not None:
            found = await self._launches.find(launch, client_id)
            if found is None:
                raise InvalidRequest(UNKNOWN_LAUNCH)
            if found.user_id is not None and found.user_id != user["id"]:
                raise AccessDenied("This launch was registered for another user")
            taken = await self._launches.take(launch, client_id)
            if taken is None:
                raise InvalidRequest(UNKNOWN_LAUNCH)
            context.update(taken.context)
        # Standalone: the patient is the signed-in user's own record (there is no patient picker).
        if "patient" not in context and (granted.needs_patient() or scopes.LAUNCH_PATIENT in granted.names):
            patient = patient_of(user)
            if patient is not None:
                context["patient"] = patient
        if granted.needs_patient() and "patient" not in context:
            raise InvalidScope(
                "patient/ scopes need a patient: an EHR launch with one, or a User whose fhirUser is a Patient"
            )
        if scopes.FHIR_USER in granted.names:
            found_user = fhir_user(user)
            if found_user is not None:
                context[scopes.FHIR_USER] = found_user.claim
        return context or None
