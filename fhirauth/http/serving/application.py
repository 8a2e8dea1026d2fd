"""The Starlette application fhirauth serves: its own router and the edge as its only middleware."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from fhirauth.http.serving.edge import Edge
from fhirauth.http.serving.router import FixedPathRouter


class App(Starlette):
    https = False

    def __init__(self, *, routes: Sequence[BaseRoute], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.router = FixedPathRouter(routes, lifespan=kwargs.get("lifespan"))

    def build_middleware_stack(self) -> ASGIApp:
        # The edge replaces Starlette's error and exception middleware: one layer per request.
        app: ASGIApp = self.router
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return Edge(app, self.exception_handlers, https=self.https)
