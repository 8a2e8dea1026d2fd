"""Errors that become OperationOutcome responses: each class carries its status and issue code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Issue:
    diagnostics: str
    code: str = "invalid"
    expression: tuple[str, ...] = ()
    severity: str = "error"

    def as_dict(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


class OutcomeError(Exception):
    status: ClassVar[int] = 400
    code: ClassVar[str] = "invalid"
    outcome_id: ClassVar[str | None] = None

    def __init__(
        self,
        diagnostics: str,
        expression: str | None = None,
        *,
        issues: list[Issue] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.issues = issues or [Issue(diagnostics, self.code, (expression,) if expression else ())]
        self.headers = headers or {}

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues, self.outcome_id)


def operation_outcome(issues: list[Issue], outcome_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "OperationOutcome"}
    if outcome_id:
        body["id"] = outcome_id
    body["issue"] = [issue.as_dict() for issue in issues]
    return body


class BadRequest(OutcomeError):
    status = 400
    code = "invalid"


class NotAuthenticated(OutcomeError):
    status = 401
    code = "login"


class Forbidden(OutcomeError):
    status = 403
    code = "forbidden"


class NotFound(OutcomeError):
    status = 404
    code = "not-found"
    outcome_id = "not-found"


class MethodNotAllowed(OutcomeError):
    status = 405
    code = "not-supported"


class Conflict(OutcomeError):
    status = 409
    code = "conflict"
    outcome_id = "conflict"


class Gone(OutcomeError):
    status = 410
    code = "deleted"
    outcome_id = "deleted"


class PreconditionFailed(OutcomeError):
    status = 412
    code = "conflict"
    outcome_id = "conflict"


class PayloadTooLarge(OutcomeError):
    status = 413
    code = "too-costly"


class UnsupportedMediaType(OutcomeError):
    status = 415
    code = "not-supported"


class Invalid(OutcomeError):
    status = 422
    code = "invalid"


class TooManyRequests(OutcomeError):
    status = 429
    code = "throttled"


class Unavailable(OutcomeError):
    status = 503
    code = "transient"
