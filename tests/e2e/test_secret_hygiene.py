"""No secret in any log line or AuditEvent, over one run of every main flow.

The same story runs twice: in process (every log record at DEBUG through caplog, extras and
tracebacks included, and everything printed) and against a live `fhirauth serve` at log level debug
with JSON log lines (so structured extras are printed too) and the access log on (stdout and stderr).
Every secret the story uses or receives is collected as it goes, and afterwards none of them may
appear, in any of the forms it travels in (URL-encoded, Base64 in a Basic header, Base32 lower case
or grouped, a recovery code without its dash), in the captured text or in the stored AuditEvents.

Two things are left out, each because it is the channel a secret is meant to travel by: the e-mails
the console provider prints (the development stand-in for SMTP; the sign-up e-mail carries its
link's token), cut out between their `----- e-mail` markers; and, in process, the test client's own
request lines (httpx2's "HTTP Request: GET http://testserver/...", the client's log, not the
server's). The webhook goes to the test's own receiver, not the demo SMS gateway, whose printed line
would otherwise be the third.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, urlencode, urlsplit

import httpx2
import pytest
from starlette.testclient import TestClient
from support.server import ROOT_CLIENT_SECRET, SECRET_KEY, LiveServer, StorageFor

from fhirauth.app import create_app
from fhirauth.clock import system_clock
from fhirauth.settings import Settings
from fhirauth.storage.backends import open_storage
from fhirauth.storage.base import Storage
from fhirauth.twofactor import totp

ANN_FIRST_PASSWORD = "ann-first-password-3e9a"
ANN_PASSWORD = "ann password with spaces & more 7c1f"
CAT_PASSWORD = "cat-password-b82d"
DAN_PASSWORD = "dan signup password 44aa"
WRONG_PASSWORD = "not-anns-password-91fe"
APP_SECRET = "app-client-secret-0d7b"
SVC_FIRST_SECRET = "svc-first-secret-5a3c"
SVC_SECRET = "svc-client-secret-e6f2"
WRONG_CLIENT_SECRET = "wrong-client-secret-2b8d"
CAT_TOTP_SECRET = "KRUGS4ZANFZSAYJAONSWG4TFOQQGW3DZ"
GATEWAY_AUTHORIZATION = "Basic " + base64.b64encode(b"sms-gateway:gateway-password-71ce").decode()
REDIRECT = "http://127.0.0.1:9/callback"
_CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


# The webhook receiver: a threaded HTTP server on loopback that keeps every body.


class _Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/sms"


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.server.bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        # The test's own receiver prints nothing: only the server's output is under test.
        pass


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# The secrets, and the forms they may take in text.


@dataclass
class Secrets:
    by_kind: dict[str, set[str]] = field(default_factory=dict)

    def add(self, kind: str, value: str | None) -> str:
        assert value, f"an empty {kind}"
        self.by_kind.setdefault(kind, set()).add(value)
        return value

    def count(self) -> dict[str, int]:
        return {kind: len(values) for kind, values in sorted(self.by_kind.items())}

    def patterns(self) -> list[tuple[str, str, re.Pattern[str]]]:
        found = []
        for kind, values in self.by_kind.items():
            for value in values:
                for form in _forms(kind, value):
                    if kind == "TOTP code":
                        # Six digits standing alone: inside a longer run of letters or digits (an id,
                        # a hash) they are not the code.
                        pattern = re.compile(rf"(?<![0-9A-Za-z]){form}(?![0-9A-Za-z])")
                    else:
                        pattern = re.compile(re.escape(form))
                    found.append((kind, value, pattern))
        return found


_ISSUED_TOKENS = (
    "access token",
    "refresh token",
    "authorization code",
    "session cookie",
    "sign-up link token",
)


def _forms(kind: str, value: str) -> set[str]:
    forms = {value}
    if kind == "TOTP secret":
        forms |= {value.lower(), " ".join(value[i : i + 4] for i in range(0, len(value), 4))}
    if kind == "recovery code":
        forms |= {value.replace("-", ""), value.upper()}
    if kind == "Authorization header":
        forms.add(value.split(" ", 1)[1])
    if kind in _ISSUED_TOKENS and "." in value:
        # An issued token's random part after the time (a JWT's claims and signature): the secret.
        forms.add(value.partition(".")[2])
    return forms | {quote(form, safe="") for form in forms} | {quote_plus(form) for form in forms}


def leaks(secrets_: Secrets, sources: dict[str, str]) -> list[tuple[str, str, str]]:
    """(source, kind, value) for every secret found in the captured text."""
    found = set()
    for kind, value, pattern in secrets_.patterns():
        for source, text in sources.items():
            if pattern.search(text):
                found.add((source, kind, value))
    return sorted(found)


def test_the_scanner_finds_every_form_it_looks_for() -> None:
    planted = Secrets()
    planted.add("password", "pass word")
    planted.add("TOTP secret", "JBSWY3DPEHPK3PXP")
    planted.add("recovery code", "k7mqx-4trwp")
    planted.add("Authorization header", "Basic YXBwOnNlY3JldA==")
    planted.add("TOTP code", "123456")
    for text, kind in (
        ("password=pass+word", "password"),
        ("secret=jbswy3dpehpk3pxp", "TOTP secret"),
        ("key JBSW Y3DP EHPK 3PXP", "TOTP secret"),
        ("typed k7mqx4trwp", "recovery code"),
        ("auth YXBwOnNlY3JldA%3D%3D", "Authorization header"),
        ('{"code": "123456"}', "TOTP code"),
    ):
        assert [found for _, found, _ in leaks(planted, {"log": text})] == [kind], text
    assert leaks(planted, {"log": "id 9a123456b, hash 0123456789, port 51234"}) == []


# The story: every main flow, collecting each secret as it appears.


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Story:
    def __init__(
        self, http: httpx2.Client, receiver: _Receiver, now: Callable[[], float], console: Callable[[], str]
    ) -> None:
        self.http = http
        self.receiver = receiver
        self.now = now
        self.console = console
        self.secrets = Secrets()
        self.last_step: dict[str, int] = {}
        self.root = self._basic("root", ROOT_CLIENT_SECRET)

    # Helpers that record what they send and receive.

    def _basic(self, user: str, password: str) -> dict[str, str]:
        return {
            "Authorization": self.secrets.add("Authorization header", f"Basic {_b64(f'{user}:{password}')}")
        }

    def _bearer(self, token: str) -> dict[str, str]:
        return {"Authorization": self.secrets.add("Authorization header", f"Bearer {token}")}

    def _tokens(self, response: httpx2.Response) -> dict[str, Any]:
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        self.secrets.add("access token", body["access_token"])
        if "refresh_token" in body:
            self.secrets.add("refresh token", body["refresh_token"])
        return body

    def _cookie(self, response: httpx2.Response) -> None:
        self.secrets.add("session cookie", response.cookies["asid"])

    def _next_code(self, user: str, secret: str) -> str:
        """A code for the step after the last one used (replays are refused), within the window."""
        step = max(self.last_step.get(user, -1) + 1, totp.step_at(self.now()) - 2)
        assert step <= totp.step_at(self.now()) + 2, "the story used up the TOTP window"
        self.last_step[user] = step
        return self.secrets.add("TOTP code", totp.code_at(secret, step))

    def _wrong_code(self, secret: str) -> str:
        step = totp.step_at(self.now())
        near = {totp.code_at(secret, s) for s in range(step - 4, step + 5)}
        return self.secrets.add(
            "TOTP code", next(f"{n:06d}" for n in range(314159, 10**6) if f"{n:06d}" not in near)
        )

    def _form(self, path: str, post_to: str | None = None, **fields: str) -> httpx2.Response:
        page = self.http.get(path)
        match = _CSRF.search(page.text)
        assert match, page.text
        return self.http.post(
            post_to or path, data={"csrf": match.group(1), **fields}, follow_redirects=False
        )

    def _put(self, resource: dict[str, Any]) -> None:
        path = f"/{resource['resourceType']}/{resource['id']}"
        response = self.http.put(path, json=resource, headers=self.root)
        assert response.status_code in (200, 201), response.text

    def _password_grant(
        self, username: str, password: str, client: dict[str, str], **extra: str
    ) -> httpx2.Response:
        form = {"grant_type": "password", "username": username, "password": password, **extra}
        return self.http.post("/auth/token", data=form, headers=client)

    # The story.

    def run(self) -> None:
        s, http = self.secrets, self.http
        for kind, value in (
            ("password", ANN_FIRST_PASSWORD),
            ("password", ANN_PASSWORD),
            ("password", CAT_PASSWORD),
            ("password", DAN_PASSWORD),
            ("password", WRONG_PASSWORD),
            ("client secret", APP_SECRET),
            ("client secret", SVC_FIRST_SECRET),
            ("client secret", SVC_SECRET),
            ("client secret", WRONG_CLIENT_SECRET),
            ("TOTP secret", CAT_TOTP_SECRET),
            ("Authorization header", GATEWAY_AUTHORIZATION),
            ("master secret", SECRET_KEY),
        ):
            s.add(kind, value)
        app = self._basic("app", APP_SECRET)

        # API writes: configuration, clients with secrets, users with passwords and a TOTP secret.
        self._put(
            {
                "resourceType": "AuthConfig",
                "id": "app",
                "twoFactor": {
                    "validPastTokensCount": 2,
                    "validFutureTokensCount": 2,
                    "webhook": {
                        "endpoint": self.receiver.url,
                        "timeout": 3000,
                        "headers": {"Authorization": GATEWAY_AUTHORIZATION},
                    },
                },
            }
        )
        self._put(
            {
                "resourceType": "AidboxConfig",
                "id": "provider",
                "provider": {"default": "console", "console": {"type": "console"}},
            }
        )
        self._put(
            {
                "resourceType": "Client",
                "id": "app",
                "secret": APP_SECRET,
                "first_party": True,
                "grant_types": ["password", "refresh_token", "code", "basic"],
                "auth": {
                    "password": {"refresh_token": True},
                    "authorization_code": {
                        "redirect_uri": REDIRECT,
                        "refresh_token": True,
                        "token_format": "jwt",
                    },
                },
            }
        )
        self._put(
            {
                "resourceType": "Client",
                "id": "svc",
                "secret": SVC_FIRST_SECRET,
                "grant_types": ["client_credentials", "basic"],
            }
        )
        assert http.patch("/Client/svc", json={"secret": SVC_SECRET}, headers=self.root).status_code == 200
        self._put(
            {"resourceType": "User", "id": "ann", "email": "ann@example.org", "password": ANN_FIRST_PASSWORD}
        )
        assert http.patch("/User/ann", json={"password": ANN_PASSWORD}, headers=self.root).status_code == 200
        self._put(
            {
                "resourceType": "User",
                "id": "cat",
                "email": "cat@example.org",
                "password": CAT_PASSWORD,
                "twoFactor": {"enabled": True, "secretKey": CAT_TOTP_SECRET},
            }
        )
        svc = self._basic("svc", SVC_SECRET)
        assert http.get("/User/ann", headers=svc).status_code == 403

        # Sign-up through the pages, with the link from the console e-mail.
        assert self._form("/auth/signup", email="dan@example.org").status_code == 200
        link = re.findall(
            r"(https?://[^\s]+/auth/signup/confirm/([A-Za-z0-9.-]+)\?token=([A-Za-z0-9._-]+))", self.console()
        )[-1]
        s.add("sign-up link token", link[2])
        confirm = self._form(
            link[0],
            f"/auth/signup/confirm/{link[1]}",
            token=link[2],
            password=DAN_PASSWORD,
            password_confirm=DAN_PASSWORD,
        )
        assert confirm.status_code == 302, confirm.text
        self._cookie(confirm)

        # Sign-in on the login page: a wrong password, then the right one.
        http.cookies.clear()
        refused = self._form("/auth/login", username="ann@example.org", password=WRONG_PASSWORD)
        assert refused.status_code == 400
        signed_in = self._form("/auth/login", username="ann@example.org", password=ANN_PASSWORD)
        assert signed_in.status_code == 302
        self._cookie(signed_in)

        # The code flow with PKCE, from the browser session, and a reused code.
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        s.add("PKCE verifier", verifier)
        query = urlencode(
            {
                "response_type": "code",
                "client_id": "app",
                "redirect_uri": REDIRECT,
                "state": "st-1",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        redirect = http.get(f"/auth/authorize?{query}", follow_redirects=False)
        assert redirect.status_code == 302, redirect.text
        code = s.add("authorization code", parse_qs(urlsplit(redirect.headers["location"]).query)["code"][0])
        exchange = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
            "client_id": "app",
            "client_secret": APP_SECRET,
        }
        code_tokens = self._tokens(http.post("/auth/token", data=exchange))
        assert (
            http.get("/auth/userinfo", headers=self._bearer(code_tokens["access_token"])).status_code == 200
        )
        assert http.post("/auth/token", data=exchange).status_code == 400

        # The password grant, refresh, introspection, userinfo, a bad client secret, a bad bearer.
        ann = self._tokens(self._password_grant("ann@example.org", ANN_PASSWORD, app))
        refreshed = self._tokens(
            http.post(
                "/auth/token",
                data={"grant_type": "refresh_token", "refresh_token": ann["refresh_token"]},
                headers=app,
            )
        )
        introspected = http.post("/auth/introspect", data={"token": refreshed["access_token"]}, headers=app)
        assert introspected.json()["active"] is True
        assert http.post("/auth/introspect", data={"token": ann["access_token"]}, headers=app).json() == {
            "active": False
        }
        assert http.get("/auth/userinfo", headers=self._bearer(refreshed["access_token"])).status_code == 200
        assert self._password_grant("ann@example.org", WRONG_PASSWORD, app).status_code == 400
        wrong_client = self._basic("app", WRONG_CLIENT_SECRET)
        assert self._password_grant("ann@example.org", ANN_PASSWORD, wrong_client).status_code == 401
        made_up = s.add("access token", secrets.token_urlsafe(32))
        assert http.get("/auth/userinfo", headers=self._bearer(made_up)).status_code == 401

        # client_credentials with Basic, its token introspected and used.
        service = self._tokens(
            http.post("/auth/token", data={"grant_type": "client_credentials"}, headers=svc)
        )
        assert http.post("/auth/introspect", data={"token": service["access_token"]}, headers=svc).json()[
            "active"
        ]

        # Two-factor: enable with recovery codes through the JSON operations.
        bearer = self._bearer(refreshed["access_token"])
        uri = http.post("/app/auth/two-factor/request", json={}, headers=bearer).json()["uri"]
        secret = s.add("TOTP secret", parse_qs(urlsplit(uri).query)["secret"][0])
        wrong = http.post(
            "/app/auth/two-factor/confirm", json={"token": self._wrong_code(secret)}, headers=bearer
        )
        assert wrong.status_code == 422
        enabled = http.post(
            "/app/auth/two-factor/confirm", json={"token": self._next_code("ann", secret)}, headers=bearer
        )
        assert enabled.status_code == 200, enabled.text
        recovery = [s.add("recovery code", c) for c in enabled.json()["recoveryCodes"]]

        # The password grant with TOTP: missing, wrong, right, replayed, a recovery code.
        assert self._password_grant("ann@example.org", ANN_PASSWORD, app).status_code == 400
        assert (
            self._password_grant(
                "ann@example.org", ANN_PASSWORD, app, totp=self._wrong_code(secret)
            ).status_code
            == 400
        )
        code_now = self._next_code("ann", secret)
        with_totp = self._tokens(self._password_grant("ann@example.org", ANN_PASSWORD, app, totp=code_now))
        assert self._password_grant("ann@example.org", ANN_PASSWORD, app, totp=code_now).status_code == 400
        self._tokens(self._password_grant("ann@example.org", ANN_PASSWORD, app, otp=recovery[0]))
        cat = self._tokens(
            self._password_grant(
                "cat@example.org", CAT_PASSWORD, app, totp=self._next_code("cat", CAT_TOTP_SECRET)
            )
        )

        # The login page with the code step; the code arrives through the webhook.
        http.cookies.clear()
        password_step = self._form("/auth/login", username="ann@example.org", password=ANN_PASSWORD)
        assert password_step.headers["location"] == "/auth/two-factor/verify"
        sent = len(self.receiver.bodies)
        page = http.get("/auth/two-factor/verify")
        assert len(self.receiver.bodies) == sent + 1
        delivered = s.add("TOTP code", self.receiver.bodies[-1]["token"])
        now = totp.step_at(self.now())
        (step,) = [step for step in range(now - 1, now + 2) if totp.code_at(secret, step) == delivered]
        self.last_step["ann"] = step
        match = _CSRF.search(page.text)
        assert match
        verified = http.post(
            "/auth/two-factor/verify",
            data={"csrf": match.group(1), "code": delivered},
            follow_redirects=False,
        )
        assert verified.status_code == 302
        self._cookie(verified)

        # New recovery codes, then 2FA off with one of them; DELETE /Session and revocation.
        bearer = self._bearer(with_totp["access_token"])
        regenerated = http.post(
            "/app/auth/two-factor/recovery-codes",
            json={"token": self._next_code("ann", secret)},
            headers=bearer,
        )
        assert regenerated.status_code == 200, regenerated.text
        fresh = [s.add("recovery code", c) for c in regenerated.json()["recoveryCodes"]]
        assert (
            http.post("/app/auth/two-factor/disable", json={"token": fresh[4]}, headers=bearer).status_code
            == 200
        )
        assert (
            http.post("/auth/revoke", data={"token": with_totp["refresh_token"]}, headers=app).status_code
            == 200
        )
        assert http.get("/auth/userinfo", headers=bearer).status_code == 401
        signed_out = self._bearer(cat["access_token"])
        assert http.delete("/Session", headers=signed_out).status_code == 204
        assert http.get("/auth/userinfo", headers=signed_out).status_code == 401


# Capturing what the server wrote.


@dataclass
class Stored:
    """What the run left in storage: the AuditEvents, and the stored forms of the secrets (hashes,
    sealed values, digests, from every version), which belong in storage and nowhere else."""

    events: list[dict[str, Any]]
    forms: list[tuple[str, str]]


async def _stored(storage: Storage) -> Stored:
    forms: list[tuple[str, str]] = []
    for resource_type, paths in (("User", ("password", "twoFactor.secretKey")), ("Client", ("secret",))):
        for current in await storage.all_resources(resource_type):
            for version in await storage.history(resource_type, current["id"]):
                for path in paths:
                    head, _, tail = path.partition(".")
                    value = version.document.get(head)
                    value = value.get(tail) if tail and isinstance(value, dict) else value
                    if isinstance(value, str):
                        forms.append((f"stored {path}", value))
                digests = (version.document.get("twoFactor") or {}).get("recoveryCodes") or []
                forms.extend(("stored recovery-code digest", digest) for digest in digests)
    return Stored(await storage.all_resources("AuditEvent"), forms)


def _stored_after(storage_url: str) -> Stored:
    async def read() -> Stored:
        storage = open_storage(storage_url, system_clock)
        await storage.start([])
        try:
            return await _stored(storage)
        finally:
            await storage.close()

    return asyncio.run(read())


def _check(story: Story, stored: Stored, sources: dict[str, str]) -> list[tuple[str, str, str]]:
    assert {event["action"] for event in stored.events} >= EXPECTED_ACTIONS
    kinds = {kind for kind, _ in stored.forms}
    assert kinds == {
        "stored password",
        "stored secret",
        "stored twoFactor.secretKey",
        "stored recovery-code digest",
    }
    for kind, value in stored.forms:
        story.secrets.add(kind, value)
    return leaks(story.secrets, {**sources, "AuditEvents": json.dumps(stored.events)})


EXPECTED_ACTIONS = {
    "signup",
    "signup-confirm",
    "login",
    "token",
    "2fa-enabled",
    "2fa-code-refused",
    "2fa-replay-refused",
    "2fa-recovery-used",
    "2fa-recovery-regenerated",
    "2fa-disabled",
}


_EMAILS = re.compile(r"^----- e-mail \(console provider\) -----$.*?^----- end of e-mail -----$", re.M | re.S)


def _without_emails(text: str) -> str:
    return _EMAILS.sub("[e-mail]", text)


def _from_the_test_client(record: logging.LogRecord) -> bool:
    return (
        record.name == "httpx2"
        and record.getMessage().startswith("HTTP Request: ")
        and (" http://testserver/" in record.getMessage())
    )


def _record_text(record: logging.LogRecord) -> str:
    # The formatted line with its traceback, and every attribute: arguments and structured extras.
    return logging.Formatter().format(record) + "\n" + repr(vars(record))


def test_in_process_logs_and_audit_events_hold_no_secret(
    receiver: _Receiver, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    printed: list[str] = []

    def console() -> str:
        captured = capsys.readouterr()
        printed.extend((captured.out, captured.err))
        return "".join(printed)

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        storage="sqlite://:memory:",
        secret_key=SECRET_KEY,
        root_client_secret=ROOT_CLIENT_SECRET,
        base_url="http://testserver",
    )
    with TestClient(create_app(settings), raise_server_exceptions=True) as http:
        story = Story(http, receiver, time.time, console)
        story.run()
        assert http.portal is not None
        stored = http.portal.call(_stored, http.app.state.services.storage)  # type: ignore[attr-defined]
    logged = "\n".join(_record_text(record) for record in caplog.records if not _from_the_test_client(record))

    assert any(record.name == "fhirauth.audit" for record in caplog.records)
    assert _check(story, stored, {"log records": logged, "printed": _without_emails(console())}) == []


class _VerboseServer(LiveServer):
    def command(self) -> list[str]:
        return [*super().command(), "--access-log"]


@pytest.mark.parametrize("backend", ["sqlite", "mongo"])
def test_live_server_output_and_audit_events_hold_no_secret(
    backend: str, receiver: _Receiver, storage_for: StorageFor, tmp_path: Path
) -> None:
    server = _VerboseServer(
        storage=storage_for(backend),
        workdir=tmp_path / "live",
        env={"FHIRAUTH_LOG_LEVEL": "debug", "FHIRAUTH_LOG_FORMAT": "json"},
    )
    with server, httpx2.Client(base_url=server.url) as http:
        story = Story(http, receiver, time.time, server.output)
        story.run()
    output = server.output()

    # The capture is real: access-log lines, debug lines and structured audit lines are all there.
    assert '"POST /auth/token HTTP/1.1" 200' in output
    assert '"level":"debug"' in output
    assert '"audit_action":"2fa-enabled"' in output
    assert _check(story, _stored_after(server.storage), {"server output": _without_emails(output)}) == []
