"""The code webhook against a real HTTP receiver on 127.0.0.1: the sender alone, then the code step's page.

The receiver is a threaded `http.server` that records every request and answers as told: 200, 500, or
only when released (a gateway that hangs past the timeout). Timings are measured, not assumed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from starlette.testclient import TestClient

from fhirauth.app import create_app
from fhirauth.clock import ManualClock
from fhirauth.twofactor import totp
from fhirauth.twofactor.config import Webhook
from fhirauth.twofactor.webhook import WebhookSender
from tests.api.conftest import ROOT, settings_for
from tests.api.pages_support import alert, audit_detail, audit_events, csrf_from, login

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
TIMEOUT_MS = 300
# The receiver holds a "slow" request at most this long, so a broken test cannot hang the run.
_HOLD_SECONDS = 5.0
VERIFY = "/auth/two-factor/verify"
SENT = "We sent you a code."
NOT_SENT = "We could not send you a code; use your authenticator app."


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return self.headers.get(name.lower(), [])

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver(ThreadingHTTPServer):
    """Records each request; `status` is the answer, and `hold` makes it wait for `release`."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[Received] = []
        self.status = 200
        self.hold = False
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        self.server.received.append(Received("POST", self.path, headers, body))
        if self.server.hold:
            self.server.release.wait(_HOLD_SECONDS)
        try:
            self.send_response(self.server.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
        except OSError:
            # The sender gave up and closed the connection: that is the point of the slow case.
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def no_code_anywhere(code: str, caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert code not in record.getMessage()
        assert code not in repr(vars(record))


USER = {
    "resourceType": "User",
    "id": "ann",
    "email": "ann@example.org",
    "name": {"givenName": "Ann"},
    "password": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
    "twoFactor": {
        "enabled": True,
        "secretKey": "sealed-secret",
        "recoveryCodes": ["digest"],
        "transport": "sms",
    },
}
USER_SEEN = {
    "resourceType": "User",
    "id": "ann",
    "email": "ann@example.org",
    "name": {"givenName": "Ann"},
    "twoFactor": {"enabled": True, "transport": "sms"},
}


# The sender alone


async def test_posts_the_user_without_secrets_and_the_code(receiver: Receiver) -> None:
    hook = Webhook(
        f"{receiver.url}/sms?tenant=acme",
        timeout_ms=2000,
        headers={"Authorization": "Basic dXNlcjpwYXNz", "X-Gateway": "sms-1"},
    )
    sender = WebhookSender()
    try:
        assert await sender.send(hook, USER, "123456") is None
    finally:
        await sender.close()
    [request] = receiver.received
    assert (request.method, request.path) == ("POST", "/sms?tenant=acme")
    assert request.header("Content-Type") == ["application/json"]
    assert request.header("Authorization") == ["Basic dXNlcjpwYXNz"]
    assert request.header("X-Gateway") == ["sms-1"]
    assert request.json() == {"user": USER_SEEN, "token": "123456"}


async def test_a_configured_content_type_cannot_replace_json(receiver: Receiver) -> None:
    hook = Webhook(receiver.url, timeout_ms=2000, headers={"content-type": "text/plain"})
    sender = WebhookSender()
    try:
        assert await sender.send(hook, USER, "123456") is None
    finally:
        await sender.close()
    assert receiver.received[0].header("Content-Type") == ["application/json"]


async def test_an_error_answer_is_a_failure_logged_without_the_code(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.status = 500
    caplog.set_level(logging.DEBUG)
    sender = WebhookSender()
    try:
        assert await sender.send(Webhook(receiver.url, timeout_ms=2000), USER, "987654") == "answered 500"
    finally:
        await sender.close()
    assert len(receiver.received) == 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "fhirauth.twofactor.webhook"]
    assert warnings == [f"two-factor webhook {receiver.url} failed for user ann: answered 500"]
    no_code_anywhere("987654", caplog)


async def test_a_receiver_that_hangs_is_given_up_after_the_timeout(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.hold = True
    caplog.set_level(logging.DEBUG)
    sender = WebhookSender()
    try:
        started = time.monotonic()
        reason = await sender.send(Webhook(receiver.url, timeout_ms=TIMEOUT_MS), USER, "246810")
        elapsed = time.monotonic() - started
    finally:
        await sender.close()
    assert reason == f"no answer within {TIMEOUT_MS} ms"
    assert TIMEOUT_MS / 1000 <= elapsed < TIMEOUT_MS / 1000 + 1
    assert len(receiver.received) == 1
    no_code_anywhere("246810", caplog)


async def test_nobody_listening_is_a_failure() -> None:
    receiver = Receiver()
    url = receiver.url
    receiver.server_close()
    sender = WebhookSender()
    try:
        assert await sender.send(Webhook(url, timeout_ms=2000), USER, "123456") == "ConnectError"
    finally:
        await sender.close()


# The code step's page


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def site(receiver: Receiver, clock: ManualClock) -> Iterator[TestClient]:
    app = create_app(settings_for("sqlite://:memory:"), clock=clock)
    with TestClient(app, raise_server_exceptions=False, headers={"Authorization": ROOT}) as client:
        webhook = {
            "endpoint": f"{receiver.url}/webhook/two-factor-confirmation",
            "timeout": TIMEOUT_MS,
            "headers": {"Authorization": "Basic d2ViaG9vazpzZWNyZXQ=", "X-Tenant": "acme"},
        }
        config = {"resourceType": "AuthConfig", "twoFactor": {"validPastTokensCount": 1, "webhook": webhook}}
        assert client.put("/AuthConfig/app", json=config).status_code == 201
        user = {
            "resourceType": "User",
            "email": "ann@example.org",
            "password": "correct horse battery staple",
            "name": {"givenName": "Ann"},
            "roles": [{"value": "nurse"}],
            "twoFactor": {"enabled": True, "secretKey": SECRET},
        }
        assert client.put("/User/ann", json=user).status_code == 201
        yield client


def code_now(clock: ManualClock) -> str:
    return totp.code_at(SECRET, totp.step_at(clock().timestamp()))


def show_code_step(site: TestClient) -> tuple[Any, float]:
    """Password accepted, then the first display of the code step: (page, seconds it took)."""
    assert login(site, "ann@example.org").headers["location"] == VERIFY
    started = time.monotonic()
    page = site.get(VERIFY)
    return page, time.monotonic() - started


def notice(page: Any) -> str | None:
    marker = '<p class="message message-info" role="status">'
    if marker not in page.text:
        return None
    return str(page.text.split(marker, 1)[1].split("</p>", 1)[0])


def test_the_code_step_sends_the_code_once_and_again_on_request(
    site: TestClient, receiver: Receiver, clock: ManualClock
) -> None:
    page, _ = show_code_step(site)
    assert page.status_code == 200
    assert notice(page) == SENT
    assert 'name="action" value="resend"' in page.text
    [request] = receiver.received
    assert request.path == "/webhook/two-factor-confirmation"
    assert request.header("Content-Type") == ["application/json"]
    assert request.header("Authorization") == ["Basic d2ViaG9vazpzZWNyZXQ="]
    assert request.header("X-Tenant") == ["acme"]
    # exactly the user as the REST API shows it: no password, secretKey or recovery codes
    shown = site.get("/User/ann").json()
    assert request.json() == {"user": shown, "token": code_now(clock)}
    assert set(shown["twoFactor"]) == {"enabled"} and "password" not in shown

    # a reload does not send it again
    reloaded = site.get(VERIFY)
    assert (reloaded.status_code, notice(reloaded)) == (200, None)
    assert len(receiver.received) == 1

    # "send the code again" does, with the code of the step it is asked in
    clock.advance(30)
    again = site.post(VERIFY, data={"csrf": csrf_from(reloaded), "action": "resend"})
    assert (again.status_code, notice(again)) == (200, "We sent you a new code.")
    assert len(receiver.received) == 2
    token = receiver.received[1].json()["token"]
    assert token == code_now(clock) != receiver.received[0].json()["token"]

    # the code that came through the webhook signs in
    done = site.post(VERIFY, data={"csrf": csrf_from(again), "code": token}, follow_redirects=False)
    assert (done.status_code, done.headers["location"]) == (302, "/auth/two-factor")
    assert audit_events(site, "2fa-webhook-failed") == []


@pytest.mark.parametrize("failure", ["answers 500", "hangs"])
def test_a_failing_webhook_still_shows_the_page_in_time(
    site: TestClient, receiver: Receiver, clock: ManualClock, caplog: pytest.LogCaptureFixture, failure: str
) -> None:
    caplog.set_level(logging.DEBUG)
    if failure == "answers 500":
        receiver.status = 500
    else:
        receiver.hold = True
    page, elapsed = show_code_step(site)
    assert page.status_code == 200
    assert elapsed < TIMEOUT_MS / 1000 + 1
    if failure == "hangs":
        assert elapsed >= TIMEOUT_MS / 1000
    assert notice(page) == NOT_SENT
    assert len(receiver.received) == 1
    code = receiver.received[0].json()["token"]
    assert code == code_now(clock)

    [event] = audit_events(site, "2fa-webhook-failed")
    assert event["outcome"] == "failure"
    assert event["agent"][0]["who"] == {"resourceType": "User", "id": "ann"}
    reason = "answered 500" if failure == "answers 500" else f"no answer within {TIMEOUT_MS} ms"
    assert audit_detail(event) == {
        "endpoint": f"{receiver.url}/webhook/two-factor-confirmation",
        "reason": reason,
    }
    assert code not in json.dumps(event)
    no_code_anywhere(code, caplog)
    assert any(r.name == "fhirauth.twofactor.webhook" and reason in r.getMessage() for r in caplog.records)

    # the authenticator app still signs in
    done = site.post(VERIFY, data={"csrf": csrf_from(page), "code": code_now(clock)}, follow_redirects=False)
    assert done.status_code == 302
    assert alert(done) is None


def test_the_json_request_with_a_transport_sends_the_pending_code(
    site: TestClient, receiver: Receiver, clock: ManualClock
) -> None:
    site.put(
        "/User/bob", json={"resourceType": "User", "email": "bob@example.org", "password": "pw-of-bob-123"}
    )
    site.put(
        "/Client/app",
        json={"resourceType": "Client", "first_party": True, "secret": "s", "grant_types": ["password"]},
    )
    token = site.post(
        "/auth/token",
        data={
            "grant_type": "password",
            "username": "bob",
            "password": "pw-of-bob-123",
            "client_id": "app",
            "client_secret": "s",
        },
        headers={"Authorization": ""},
    ).json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    answer = site.post("/app/auth/two-factor/request", json={"transport": "sms"}, headers=bearer)
    assert (answer.status_code, answer.json()) == (200, {})
    [request] = receiver.received
    body = request.json()
    assert body["user"] == site.get("/User/bob").json()
    assert body["user"]["twoFactor"] == {"enabled": False, "transport": "sms"}
    confirmed = site.post("/app/auth/two-factor/confirm", json={"token": body["token"]}, headers=bearer)
    assert confirmed.status_code == 200
