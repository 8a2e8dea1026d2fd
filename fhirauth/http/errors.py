"""Exception handlers: every error leaves as an OperationOutcome (OAuth errors as RFC 6749 §5.2 JSON),
never as a traceback."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from fhirauth.auth.oauth_errors import OAuthError
from fhirauth.errors import Issue, OutcomeError, operation_outcome
from fhirauth.http.render import NO_STORE, body_response, json_response, outcome_response, retry_after_header
from fhirauth.storage.base import StorageUnavailable

log = logging.getLogger("fhirauth.http")

_HTTP_CODES = {404: "not-found", 405: "not-supported", 400: "invalid"}


async def outcome_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OutcomeError)
    return outcome_response(request, exc)


async def oauth_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OAuthError)
    return oauth_response(exc)


def oauth_response(error: OAuthError, status: int | None = None) -> Response:
    """RFC 6749 §5.2 JSON for `error`, with the error's status unless told another (a 429 has no code
    of its own and answers `invalid_request`)."""
    return json_response(error.body(), status or error.status, {**error.headers, **NO_STORE})


async def storage_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("storage unavailable: %s", exc)
    body = operation_outcome(
        [Issue("Storage is unavailable; try again shortly", "transient", severity="fatal")]
    )
    return body_response(request, body, 503, retry_after_header(1))


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "processing")
    body = operation_outcome([Issue(str(exc.detail), code)])
    return body_response(request, body, exc.status_code, dict(exc.headers or {}))


async def unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    body = operation_outcome([Issue("Internal server error", "exception", severity="fatal")])
    return body_response(request, body, 500)


handlers = {
    OutcomeError: outcome_error,
    OAuthError: oauth_error,
    StorageUnavailable: storage_unavailable,
    HTTPException: http_exception,
    Exception: unexpected,
}
