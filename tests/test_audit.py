"""AuditLog: one AuditEvent per event, exact fields, no secrets, and a storage outage never escapes."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator

import pytest

from fhirauth.app import INDEXES, build_services
from fhirauth.audit import AUDIT_SYSTEM
from fhirauth.clock import ManualClock
from fhirauth.services import Services
from fhirauth.storage.backends import open_storage
from fhirauth.storage.base import Query
from tests.api.conftest import settings_for


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def services(clock: ManualClock) -> AsyncIterator[Services]:
    storage = open_storage("sqlite://:memory:", clock)
    await storage.start(INDEXES)
    yield build_services(settings_for("sqlite://:memory:"), storage, clock)
    await storage.close()


async def _events(services: Services) -> list[dict[str, object]]:
    page = await services.storage.search("AuditEvent", Query())
    return page.items


async def test_record_writes_exactly_one_audit_event(services: Services) -> None:
    await services.audit.record(
        "login",
        "success",
        user={"resourceType": "User", "id": "ann", "password": "never-stored"},
        client="web",
        ip="203.0.113.7",
        detail={"method": "password", "attempt": 2},
    )
    events = await _events(services)
    assert len(events) == 1
    event = {k: v for k, v in events[0].items() if k not in ("id", "meta")}
    assert event == {
        "resourceType": "AuditEvent",
        "type": {"system": AUDIT_SYSTEM, "code": "login"},
        "action": "login",
        "recorded": "2026-01-01T00:00:00.000Z",
        "outcome": "success",
        "source": {"site": "fhirauth"},
        "agent": [
            {
                "who": {"resourceType": "User", "id": "ann"},
                "requestor": True,
                "network": {"address": "203.0.113.7", "type": "2"},
            },
            {"who": {"resourceType": "Client", "id": "web"}, "requestor": False},
        ],
        "entity": [
            {
                "detail": [
                    {"type": "method", "valueString": "password"},
                    {"type": "attempt", "valueString": "2"},
                ]
            }
        ],
    }
    assert events[0]["meta"]["versionId"] == "1"  # type: ignore[index]


async def test_every_shape_of_event_is_valid_against_the_audit_event_schema(services: Services) -> None:
    # The events are stored without validation; this is what makes that safe.
    await services.audit.record("login", "failure")
    await services.audit.record("token", "failure", client="api", detail={"": "empty key", "n": 3})
    await services.audit.record(
        "two-factor", "success", user="ann", client="web", ip="2001:db8::1", detail={"step": "verify"}
    )
    events = await _events(services)
    assert len(events) == 3
    for event in events:
        services.resources.schemas.validate(event)


async def test_a_client_alone_is_the_requestor_and_the_clock_gives_the_time(
    services: Services, clock: ManualClock
) -> None:
    clock.advance(90.25)
    await services.audit.record("token", "failure", client="api", detail={"error": "invalid_grant"})
    (event,) = await _events(services)
    assert event["recorded"] == "2026-01-01T00:01:30.250Z"
    assert event["agent"] == [{"who": {"resourceType": "Client", "id": "api"}, "requestor": True}]
    assert event["outcome"] == "failure"


async def test_an_anonymous_failure_keeps_the_address(services: Services) -> None:
    await services.audit.record("login", "failure", ip="198.51.100.1")
    (event,) = await _events(services)
    assert event["agent"] == [{"requestor": True, "network": {"address": "198.51.100.1", "type": "2"}}]
    assert "entity" not in event


async def test_secrets_never_reach_the_event_nor_the_log(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fhirauth.audit")
    detail = {
        "password": "hunter2",
        "client_secret": "s3cret",
        "access_token": "tok",
        "code": "123456",
        "totp": "654321",
        "recovery_code": "abcd-efgh",
        "username": "ann@example.org",
        "reason": None,
    }
    await services.audit.record("login", "failure", detail=detail)
    (event,) = await _events(services)
    assert event["entity"] == [{"detail": [{"type": "username", "valueString": "ann@example.org"}]}]
    logged = [record for record in caplog.records if record.name == "fhirauth.audit"]
    assert len(logged) == 1
    assert logged[0].getMessage() == "audit login failure"
    assert logged[0].audit_detail == {"username": "ann@example.org"}  # type: ignore[attr-defined]
    for secret in ("hunter2", "s3cret", "tok", "123456", "654321", "abcd-efgh"):
        assert secret not in repr(vars(logged[0]))


async def test_structured_log_line_carries_the_same_facts(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fhirauth.audit")
    await services.audit.record("2fa-enabled", "success", user="ann", client="web", ip="192.0.2.9")
    (record,) = [r for r in caplog.records if r.name == "fhirauth.audit"]
    facts = {key: value for key, value in vars(record).items() if key.startswith("audit_")}
    assert facts == {
        "audit_action": "2fa-enabled",
        "audit_outcome": "success",
        "audit_user": "ann",
        "audit_client": "web",
        "audit_ip": "192.0.2.9",
        "audit_detail": {},
        "audit_recorded": "2026-01-01T00:00:00.000Z",
    }


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_storage_outage_is_logged_and_swallowed(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"mongodb://127.0.0.1:{_closed_port()}/fhirauth"
    storage = open_storage(url, clock)
    services = build_services(settings_for(url), storage, clock)
    caplog.set_level(logging.INFO, logger="fhirauth.audit")
    try:
        await services.audit.record("login", "success", user="ann", ip="203.0.113.7")
    finally:
        await storage.close()
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "fhirauth.audit"]
    assert messages[0] == ("INFO", "audit login success")
    assert len(messages) == 2
    level, text = messages[1]
    assert level == "ERROR"
    assert text.startswith("audit event login success not stored: ")
