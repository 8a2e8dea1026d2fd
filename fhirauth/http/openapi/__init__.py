"""The OpenAPI 3.1 description of the JSON API and the docs page rendered from it.

Routes without a description (the HTML sign-in pages, the demo) are left out. The document is built on
the first request and kept for the life of the application.
"""

from fhirauth.http.openapi.endpoints import routes

__all__ = ["routes"]
