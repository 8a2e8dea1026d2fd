"""The UserInfo answer (Core §5.3, §5.4): for an access token with the `openid` scope, the standard
claims its scopes allow, read from the User (Aidbox's SCIM-like fields); as a signed JWT when the
Client registered userinfo_signed_response_alg. Without `openid` the endpoint keeps Aidbox's answer,
the User without its secrets, which Aidbox clients read.

email_verified is true only for the address a signup link confirmed: the User made by that
Registration, still holding that address. Nothing else here verifies an address or a phone number.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhirauth.auth.keys import ALGORITHMS, SigningKeys
from fhirauth.clock import Clock
from fhirauth.storage.base import Filter, Query, Storage

Document = dict[str, Any]

OPENID = "openid"
PROFILE_CLAIMS = (
    "name",
    "given_name",
    "family_name",
    "middle_name",
    "preferred_username",
    "locale",
    "zoneinfo",
    "updated_at",
)
EMAIL_CLAIMS = ("email", "email_verified")
PHONE_CLAIMS = ("phone_number", "phone_number_verified")
CLAIMS_SUPPORTED = ("sub", *PROFILE_CLAIMS, *EMAIL_CLAIMS, *PHONE_CLAIMS)
SCOPES = (OPENID, "profile", "email", "phone")
JWT_MEDIA_TYPE = "application/jwt"


def has_openid(scope: object) -> bool:
    return isinstance(scope, str) and OPENID in scope.split(" ")


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _profile(user: Document) -> Document:
    stored = user.get("name")
    name: Document = stored if isinstance(stored, dict) else {}
    given, middle, family = (_text(name.get(part)) for part in ("givenName", "middleName", "familyName"))
    parts = [part for part in (given, middle, family) if part]
    claims: Document = {
        "name": _text(name.get("formatted")) or " ".join(parts) or _text(user.get("displayName")),
        "given_name": given,
        "family_name": family,
        "middle_name": middle,
        "preferred_username": _text(user.get("userName")),
        "locale": _text(user.get("locale")),
        "zoneinfo": _text(user.get("timezone")),
    }
    updated = (user.get("meta") or {}).get("lastUpdated")
    if isinstance(updated, str):
        claims["updated_at"] = int(datetime.fromisoformat(updated).timestamp())
    return claims


def _phone(user: Document) -> str | None:
    number = _text(user.get("phoneNumber"))
    if number is not None:
        return number
    listed = [item for item in user.get("phoneNumbers") or [] if isinstance(item, dict)]
    # SCIM: the primary one, else the first.
    listed.sort(key=lambda item: item.get("primary") is not True)
    return next((value for value in (_text(item.get("value")) for item in listed) if value), None)


class UserInfo:
    def __init__(self, storage: Storage, keys: SigningKeys, clock: Clock, issuer: str) -> None:
        self._storage = storage
        self._keys = keys
        self._clock = clock
        self._issuer = issuer

    async def claims(self, user: Document, scope: str) -> Document:
        """`sub` and the claims `scope` allows that the User has (Core §5.3.2: none left empty)."""
        granted = set(scope.split(" "))
        claims: Document = {"sub": user["id"]}
        if "profile" in granted:
            claims.update(_profile(user))
        email = _text(user.get("email"))
        if "email" in granted and email is not None:
            claims["email"] = email
            claims["email_verified"] = await self._confirmed_by_signup(user["id"], email)
        phone = _phone(user)
        if "phone" in granted and phone is not None:
            claims["phone_number"] = phone
            claims["phone_number_verified"] = False
        return {name: value for name, value in claims.items() if value is not None}

    async def signed(self, claims: Document, client: Document) -> str | None:
        """The claims as the JWT the client registered for (Core §5.3.2: with iss and aud); None when
        it asked for plain JSON."""
        alg = client.get("userinfo_signed_response_alg")
        if alg not in ALGORITHMS:
            return None
        stamped = {"iss": self._issuer, "aud": client["id"], "iat": int(self._clock().timestamp()), **claims}
        return await self._keys.sign(stamped, alg)

    async def _confirmed_by_signup(self, user_id: str, email: str) -> bool:
        query = Query(
            filters=(Filter("resource.id", (user_id,)), Filter("status", ("activated",))),
            limit=1,
            count_total=False,
        )
        page = await self._storage.search("Registration", query)
        confirmed = [item.get("email") for item in page.items]
        return any(isinstance(address, str) and address.lower() == email.lower() for address in confirmed)
