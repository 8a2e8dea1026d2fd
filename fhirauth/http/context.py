"""The app's Services, as an endpoint or the request edge reaches them from a request."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Scope

from fhirauth.services import Services


def services_of(request: Request) -> Services:
    return services_in(request.scope)


def services_in(scope: Scope) -> Services:
    """The app's Services (KeyError before its lifespan has built them)."""
    # By key: State's attribute access first fails the normal lookup and builds an AttributeError,
    # ten times the cost of the dict lookup behind it, and most requests ask more than once.
    services: Services = scope["app"].state["services"]
    return services
