"""E-mail providers from AidboxConfig: smtp against a loopback SMTP server, console, and the fallback."""

from __future__ import annotations

import base64
import logging
import socket
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message

import httpx2
import pytest
from starlette.testclient import TestClient

from tests.api.pages_support import csrf_from


@dataclass
class Mailbox:
    messages: list[Message] = field(default_factory=list)
    logins: list[bytes] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)


class _SMTPHandler(socketserver.StreamRequestHandler):
    """Just enough RFC 5321 for smtplib: EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT."""

    mailbox: Mailbox

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self.reply("220 fake smtp")
        sender, recipients = "", []
        while line := self.rfile.readline():
            command = line.decode().rstrip("\r\n")
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self.wfile.write(b"250-fake\r\n250 AUTH PLAIN\r\n")
            elif verb == "AUTH":
                self.mailbox.logins.append(base64.b64decode(command.split()[2]))
                self.reply("235 ok")
            elif verb == "MAIL":
                sender = command.split(":", 1)[1].strip("<> ")
                self.reply("250 ok")
            elif verb == "RCPT":
                recipients.append(command.split(":", 1)[1].strip("<> "))
                self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 go on")
                data = b""
                while (chunk := self.rfile.readline()) != b".\r\n":
                    data += chunk
                self.mailbox.messages.append(message_from_bytes(data))
                self.mailbox.envelopes.append((sender, recipients))
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, Mailbox]]:
    mailbox = Mailbox()
    handler = type("Handler", (_SMTPHandler,), {"mailbox": mailbox})
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], mailbox
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def signup(api: TestClient, email: str) -> httpx2.Response:
    token = csrf_from(api.get("/auth/signup"))
    return api.post("/auth/signup", data={"csrf": token, "email": email})


def test_smtp_provider_sends_the_signup_link(
    api: TestClient,
    smtp_server: tuple[int, Mailbox],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    port, mailbox = smtp_server
    api.put(
        "/AidboxConfig/provider",
        json={
            "resourceType": "AidboxConfig",
            "provider": {
                "default": "mail",
                "console": {"type": "console"},
                "mail": {
                    "type": "smtp",
                    "host": "127.0.0.1",
                    "port": port,
                    "from": "noreply@example.org",
                    "username": "mailer",
                    "password": "smtp-pass-123",
                },
            },
        },
    )
    capsys.readouterr()
    with caplog.at_level(logging.DEBUG, logger="fhirauth"):
        response = signup(api, "ann@example.org")
    assert response.status_code == 200
    assert "Check your e-mail" in response.text
    [message] = mailbox.messages
    assert (message["From"], message["To"], message["Subject"]) == (
        "noreply@example.org",
        "ann@example.org",
        "Registration Confirmation",
    )
    assert "http://testserver/auth/signup/confirm/" in message.get_payload()
    assert mailbox.envelopes == [("noreply@example.org", ["ann@example.org"])]
    assert mailbox.logins == [b"\0mailer\0smtp-pass-123"]
    assert "Registration Confirmation" not in capsys.readouterr().out
    assert "smtp-pass-123" not in caplog.text


def test_smtp_failure_is_a_page_not_a_crash(api: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    api.put(
        "/AidboxConfig/provider",
        json={
            "resourceType": "AidboxConfig",
            "provider": {
                "default": "mail",
                "mail": {
                    "type": "smtp",
                    "host": "127.0.0.1",
                    "port": closed_port,
                    "password": "smtp-pass-123",
                },
            },
        },
    )
    with caplog.at_level(logging.ERROR, logger="fhirauth.notify"):
        response = signup(api, "ann@example.org")
    assert response.status_code == 503
    assert "We could not send the e-mail just now." in response.text
    assert (
        "sending 'Registration Confirmation' to ann@example.org through smtp 127.0.0.1 failed" in caplog.text
    )
    assert "smtp-pass-123" not in caplog.text


def test_without_a_provider_the_console_is_used_with_a_warning(
    api: TestClient, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="fhirauth.notify"):
        assert signup(api, "ann@example.org").status_code == 200
    out = capsys.readouterr().out
    assert "To: ann@example.org\nSubject: Registration Confirmation\n" in out
    assert "no AidboxConfig with a provider; printing e-mail to stdout" in caplog.text


def test_a_default_naming_no_provider_falls_back_to_the_console(
    api: TestClient, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    api.put(
        "/AidboxConfig/other",
        json={
            "resourceType": "AidboxConfig",
            "provider": {"default": "missing", "console": {"type": "console"}},
        },
    )
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="fhirauth.notify"):
        assert signup(api, "ann@example.org").status_code == 200
    assert "Subject: Registration Confirmation" in capsys.readouterr().out
    assert "AidboxConfig.provider names no usable default provider" in caplog.text
