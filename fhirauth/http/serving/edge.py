"""The one ASGI layer between the server and the routes: error answers, per-address limits, CORS and
the security headers.

Starlette's own stack put five layers here (ServerErrorMiddleware, ExceptionMiddleware, and ours
for CORS, security headers and limits), each crossed on every request and most wrapping `send`.
This layer does the same work once: it rewrites a response's start message in one pass, and catches every exception the routes
let through, answering it with the app's handler for its class (an OperationOutcome, an OAuth
error, a 429 or a 503). Anything without a handler is a bug: it is answered by the `Exception`
handler (a 500 that still carries CORS and the security headers) and raised again for the server
to log. A client that left mid-body is neither answered nor logged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhirauth.http import cors
from fhirauth.http.limits import check_address_limit
from fhirauth.http.security_headers import with_security_headers

Handler = Callable[[Request, Exception], Awaitable[Response]]


async def _internal_error(request: Request, exc: Exception) -> Response:
    return PlainTextResponse("Internal Server Error", status_code=500)


class Edge:
    def __init__(self, app: ASGIApp, handlers: Mapping[Any, Handler], *, https: bool) -> None:
        self.app = app
        self.https = https
        # Handlers by exception class (Starlette's by-status-code handlers are not used here).
        self._handlers = {key: value for key, value in handlers.items() if key is not Exception}
        self._unexpected = handlers.get(Exception, _internal_error)
        self._origins = cors.OriginsPerApp()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        secure = self.https or scope.get("scheme") == "https"
        origin = cors.origin_header(scope)
        discovery = cors.is_discovery_read(scope)
        allowed = False
        if discovery:
            if origin is not None and scope["method"] == "OPTIONS":
                await cors.discovery_preflight_response()(scope, receive, _secured(send, secure))
                return
        elif origin is not None:
            allowed = await self._origins.of(scope).allows(origin)
            if cors.is_preflight(scope):
                preflight = cors.preflight_response(origin, allowed)
                await preflight(scope, receive, _secured(send, secure))
                return
        started = False

        async def send_from_edge(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", ()))
                if discovery:
                    cors.add_any_origin(headers)
                elif origin is not None:
                    cors.add_response_headers(headers, origin, allowed)
                message["headers"] = with_security_headers(headers, secure)
            await send(message)

        try:
            await check_address_limit(scope)
            await self.app(scope, receive, send_from_edge)
        except ClientDisconnect:
            # The client left mid-body (or its connection was refused by the protocol): nobody is
            # left to answer, and it is no bug to log.
            return
        except Exception as exc:
            if started:
                raise
            await self._answer(exc, scope, receive, send_from_edge)

    async def _answer(self, exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self._handler_for(exc)
        if handler is not None:
            try:
                response = await handler(Request(scope, receive), exc)
            except Exception as failure:
                exc = failure
            else:
                await response(scope, receive, send)
                # One exception instance raised again and again would grow its traceback forever.
                exc.__traceback__ = None
                return
        response = await self._unexpected(Request(scope), exc)
        await response(scope, receive, send)
        raise exc

    def _handler_for(self, exc: Exception) -> Handler | None:
        for cls in type(exc).__mro__:
            handler = self._handlers.get(cls)
            if handler is not None:
                return handler
        return None


def _secured(send: Send, secure: bool) -> Send:
    async def send_secured(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = with_security_headers(list(message.get("headers", ())), secure)
        await send(message)

    return send_secured
