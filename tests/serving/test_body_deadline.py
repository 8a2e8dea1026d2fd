"""`fhirauth serve` gives each request's body a total deadline from the end of its head
(FHIRAUTH_BODY_TIMEOUT_SECONDS): a body that stops arriving, or drips, is answered 408 and its
connection closed, without the app's wait for it being logged as an error. On a real socket, with a
one-second deadline."""

from __future__ import annotations

import pickle
import select
import socket
import time
from collections.abc import Iterator

import pytest
from pydantic import ValidationError
from support.server import LiveServer

from fhirauth.http.serving.protocol import CoalescingHttpToolsProtocol, serving_protocol
from fhirauth.settings import Settings

# The head's tests use the same one-second deadline, so their check of a 408 at it serves here too.
from tests.serving.test_head_deadline import DEADLINE, SLACK, TIMEOUT, assert_timed_out
from tests.serving.test_header_limits import connect, read_response

pytestmark = pytest.mark.e2e

FORM = b"grant_type=client_credentials"
HEAD = (
    b"POST /auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic cm9vdDpzZWNyZXQ=\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % len(FORM)
)


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer(env={"FHIRAUTH_BODY_TIMEOUT_SECONDS": str(DEADLINE)}) as server:
        yield server


def test_a_body_that_stops_arriving_is_answered_408_at_the_deadline(server: LiveServer) -> None:
    with connect(server) as sock:
        # From before the send: the server's deadline starts when it reads the head.
        started = time.monotonic()
        sock.sendall(HEAD + FORM[:10])
        assert_timed_out(sock, started)
    assert "Request body not complete in 1 s: answered 408." in server.output()
    assert "Exception in ASGI application" not in server.output()


def test_the_deadline_is_total_not_renewed_by_each_byte(server: LiveServer) -> None:
    with connect(server) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.monotonic()
        sock.sendall(HEAD)
        # A byte every tenth of a second: never idle for long, never done in time.
        for byte in FORM:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
            if select.select([sock], [], [], 0)[0]:
                break
        assert_timed_out(sock, started)


def test_a_body_completed_in_time_is_served_however_it_is_split(server: LiveServer) -> None:
    with connect(server) as sock, sock.makefile("rb") as reader:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(HEAD)
        for part in (FORM[:5], FORM[5:20], FORM[20:]):
            time.sleep(0.1)
            sock.sendall(part)
        status, _, body = read_response(reader)
        assert status == b"HTTP/1.1 200 OK\r\n", body
        assert b'"access_token"' in body


def test_each_request_on_a_kept_alive_connection_has_its_own_deadline(server: LiveServer) -> None:
    with connect(server) as sock, sock.makefile("rb") as reader:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(3):
            sock.sendall(HEAD + FORM[:4])
            time.sleep(DEADLINE / 2)
            sock.sendall(FORM[4:])
            assert read_response(reader)[0] == b"HTTP/1.1 200 OK\r\n"
        started = time.monotonic()
        sock.sendall(HEAD)
        status, headers, body = read_response(reader)
        assert (status, headers.endswith(b"connection: close\r\n"), body) == (
            TIMEOUT[0],
            True,
            b"Request not received in time",
        )
        assert reader.read() == b""
    assert DEADLINE <= time.monotonic() - started < DEADLINE + SLACK


def test_a_request_answered_before_its_body_ends_gets_no_second_answer(server: LiveServer) -> None:
    """413 is answered from the Content-Length alone; at the body's deadline the connection closes."""
    head = (
        b"POST /User HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic cm9vdDpzZWNyZXQ=\r\n"
        b"Content-Type: application/json\r\nContent-Length: 9999999\r\n\r\n"
    )
    with connect(server) as sock, sock.makefile("rb") as reader:
        sock.sendall(head + b"a" * 100)
        status, _, body = read_response(reader)
        assert status == b"HTTP/1.1 413 Request Entity Too Large\r\n"
        assert b"Request body is larger than 1048576 bytes" in body
        started = time.monotonic()
        assert reader.read() == b""
    assert DEADLINE - 0.5 <= time.monotonic() - started < DEADLINE + SLACK


def test_the_deadline_is_a_setting_of_positive_seconds() -> None:
    assert Settings(_env_file=None).body_timeout_seconds == 60.0  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Settings(_env_file=None, body_timeout_seconds=0)  # type: ignore[call-arg]


def test_the_protocol_given_to_uvicorn_survives_the_trip_to_a_worker_process() -> None:
    protocol = pickle.loads(pickle.dumps(serving_protocol(2.5, 30.0)))
    assert protocol.func is CoalescingHttpToolsProtocol
    assert protocol.keywords == {"header_timeout": 2.5, "body_timeout": 30.0}
