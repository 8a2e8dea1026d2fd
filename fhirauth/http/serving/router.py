"""Routing that finds a fixed path's routes without trying every route before it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match, Mount, Route, Router
from starlette.types import Receive, Scope, Send


class FixedPathRouter(Router):
    """A Router that sends a request for one of its fixed paths (`/auth/token`, `/health`, …) straight
    to the routes whose pattern matches that path.

    Starlette tries the routes in order, one regular expression each; `/app/auth/two-factor/verify`
    came after forty of them. The candidates of a fixed path are every route whose pattern matches it,
    in table order, so the first full match is the one the whole table would give. Anything else (a
    path with parameters, a method no candidate takes, a miss) goes through Starlette's own loop, which
    also answers 405, 404 and slash redirects.
    """

    def __init__(self, routes: Sequence[BaseRoute], **kwargs: Any) -> None:
        super().__init__(list(routes), **kwargs)
        fixed = {route.path for route in self.routes if isinstance(route, Route) and "{" not in route.path}
        # Each candidate with whether its own path is the fixed one (then only the method decides).
        self._candidates = {
            path: [(r, isinstance(r, Route) and r.path == path) for r in self.routes if _may_match(r, path)]
            for path in fixed
        }

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        candidates = self._candidates.get(get_route_path(scope)) if scope["type"] == "http" else None
        if candidates:
            for route, exact in candidates:
                match, child_scope = _exact(route, scope) if exact else route.matches(scope)  # type: ignore[arg-type]  # exact only for a Route (see _candidates)
                if match is Match.FULL:
                    scope.setdefault("router", self)
                    scope["route"] = route
                    scope.update(child_scope)
                    await route.handle(scope, receive, send)
                    return
        await super().app(scope, receive, send)


def _exact(route: Route, scope: Scope) -> tuple[Match, Scope]:
    """`route.matches` for a route whose path is the request's, a fixed one: no pattern to run and
    no parameters to convert, so only the method decides (as in Starlette's Route.matches)."""
    child_scope = {"endpoint": route.endpoint, "path_params": dict(scope.get("path_params", {}))}
    if route.methods and scope["method"] not in route.methods:
        return Match.PARTIAL, child_scope
    return Match.FULL, child_scope


def _may_match(route: BaseRoute, path: str) -> bool:
    """Whether `route` takes `path` by some method; asked once per route and fixed path, at start-up."""
    if not isinstance(route, Route | Mount):
        return True  # a Host or a route of another kind may match anything
    match, _ = route.matches({"type": "http", "path": path, "root_path": "", "method": ""})
    return match is not Match.NONE
