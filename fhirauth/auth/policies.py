"""Access control: the root client may do everything; AccessPolicy resources decide for the rest."""

from __future__ import annotations

from typing import Any

from fhirauth.auth.principal import Principal
from fhirauth.errors import Forbidden, NotAuthenticated

Document = dict[str, Any]


class AccessControl:
    def __init__(self) -> None:
        pass

    async def authorize(self, principal: Principal | None, request: Document) -> None:
        if principal is None:
            raise NotAuthenticated(
                "Authentication required",
                headers={"WWW-Authenticate": 'Basic realm="fhirauth", Bearer realm="fhirauth"'},
            )
        if principal.is_root:
            return
        raise Forbidden("Access denied")
