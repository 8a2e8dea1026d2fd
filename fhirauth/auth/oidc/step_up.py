"""The authentication context class an authorization request needs (Core §3.1.2.1 `acr_values`,
§5.5.1.1 an essential `acr` in `claims`) or its Client demands (`require_mfa`), and whether a sign-in
meets it. A sign-in that does not is stepped up: the user adds the second factor.

Decisions: acr_values are voluntary, so values this server does not know are ignored (§15.1: they
must not cause an error); any one of the known values listed will do, so the weakest is what the
sign-in must reach. An essential acr whose values are all unknown can never be met: access_denied
(§5.5.1.1: a failed authentication). A Client's require_mfa cannot be lowered by a request. Of the
`claims` parameter only `id_token.acr` is read; other claims asked for there are voluntary and
this server returns what the scopes give (§5.5: not returning them is no error).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from fhirauth.auth.oauth_errors import AccessDenied, InvalidRequest
from fhirauth.auth.oidc.amr import ACR_MFA, ACR_VALUES, acr_of, level

Document = dict[str, Any]

MAX_CLAIMS_CHARS = 4096
_MALFORMED = "Malformed 'claims': a JSON object as in OpenID Connect Core §5.5"


@dataclass(frozen=True)
class AcrRequest:
    """The classes a request accepts (any one will do), weakest first."""

    values: tuple[str, ...]

    @property
    def minimum(self) -> str:
        return self.values[0]

    def met_by(self, amr: tuple[str, ...]) -> bool:
        return level(acr_of(amr)) >= level(self.minimum)

    def claim(self, amr: tuple[str, ...]) -> str:
        """The `acr` to answer: the strongest class asked for that the sign-in meets (§5.5.1.1 asks
        an essential acr to be answered with one of its values), else the sign-in's own."""
        met = [value for value in self.values if level(value) <= level(acr_of(amr))]
        return met[-1] if met else acr_of(amr)


def acr_request(client: Document, params: Mapping[str, str], openid: bool) -> AcrRequest | None:
    """What the request (its OpenID parameters, when it has the openid scope) and the client ask for;
    None when any sign-in will do. InvalidRequest for a malformed `claims`, AccessDenied for an
    essential acr this server cannot meet."""
    essential, values = _from_claims(params.get("claims")) if openid else (False, ())
    if not values and openid:
        values = tuple((params.get("acr_values") or "").split())
    known = tuple(sorted({value for value in values if value in ACR_VALUES}, key=level))
    if essential and values and not known:
        raise AccessDenied(
            "None of the essential acr values can be met; this server has " + " and ".join(ACR_VALUES)
        )
    if client.get("require_mfa") is True:
        known = tuple(value for value in known if level(value) >= level(ACR_MFA)) or (ACR_MFA,)
    return AcrRequest(known) if known else None


def _from_claims(value: str | None) -> tuple[bool, tuple[str, ...]]:
    """(essential, values) of `claims`'s id_token.acr; (False, ()) when it asks for none."""
    if not value:
        return False, ()
    if len(value) > MAX_CLAIMS_CHARS:
        raise InvalidRequest(f"{_MALFORMED}, of at most {MAX_CLAIMS_CHARS} characters")
    try:
        claims = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise InvalidRequest(_MALFORMED) from None
    if not isinstance(claims, dict):
        raise InvalidRequest(_MALFORMED)
    for member in ("id_token", "userinfo"):
        if not isinstance(claims.get(member, {}), dict):
            raise InvalidRequest(f"{_MALFORMED}; '{member}' must be an object")
    acr = claims.get("id_token", {}).get("acr")
    if acr is None:
        return False, ()
    if not isinstance(acr, dict):
        raise InvalidRequest(f"{_MALFORMED}; 'acr' must be null or an object")
    values = acr.get("values", [acr["value"]] if "value" in acr else [])
    if not isinstance(values, list) or not all(isinstance(item, str) for item in values):
        raise InvalidRequest(f"{_MALFORMED}; 'acr' values must be strings")
    return acr.get("essential") is True, tuple(values)
