"""`fhirauth serve` gives each request's line and headers a total deadline
(FHIRAUTH_HEADER_TIMEOUT_SECONDS): a head not complete by then is answered 408 and its connection
closed, however steadily its bytes drip; a connection that sends nothing at all is closed unanswered.
On a real socket, with a one-second deadline."""

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
from tests.serving.test_header_limits import connect, read_response

pytestmark = pytest.mark.e2e

DEADLINE = 1.0
# Time for the server to notice under load, on two shared cores.
SLACK = 1.5
TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n",
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 28\r\n"
    b"connection: close\r\n\r\n"
    b"Request not received in time",
)
GET = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer(env={"FHIRAUTH_HEADER_TIMEOUT_SECONDS": str(DEADLINE)}) as server:
        yield server


def assert_timed_out(sock: socket.socket, started: float) -> None:
    """The 408, then the end of the connection, at the deadline and not before."""
    with sock.makefile("rb") as reader:
        status, headers, body = read_response(reader)
        assert status == TIMEOUT[0]
        assert (headers + b"\r\n" + body).endswith(TIMEOUT[1])
        assert reader.read() == b""
    elapsed = time.monotonic() - started
    assert DEADLINE <= elapsed < DEADLINE + SLACK, elapsed


def test_a_head_that_stops_arriving_is_answered_408_at_the_deadline(server: LiveServer) -> None:
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
        assert_timed_out(sock, started)
    with connect(server) as sock, sock.makefile("rb") as reader:
        sock.sendall(GET)
        assert read_response(reader)[0] == b"HTTP/1.1 200 OK\r\n"


def test_the_deadline_is_total_not_renewed_by_each_byte(server: LiveServer) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: " + b"a" * 40 + b"\r\n\r\n"
    with connect(server) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.monotonic()
        # A byte every tenth of a second: never idle for long, never done in time.
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
            if select.select([sock], [], [], 0)[0]:
                break
        assert_timed_out(sock, started)


def test_a_head_completed_in_time_is_served_however_it_is_split(server: LiveServer) -> None:
    with connect(server) as sock, sock.makefile("rb") as reader:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for part in (GET[:5], GET[5:20], GET[20:]):
            sock.sendall(part)
            time.sleep(0.1)
        status, _, body = read_response(reader)
        assert (status, body) == (b"HTTP/1.1 200 OK\r\n", b'{"status":"ok"}')


def test_each_request_on_a_kept_alive_connection_has_its_own_deadline(server: LiveServer) -> None:
    with connect(server) as sock, sock.makefile("rb") as reader:
        for _ in range(3):
            sock.sendall(GET)
            assert read_response(reader)[0] == b"HTTP/1.1 200 OK\r\n"
            time.sleep(DEADLINE / 2)
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert_timed_out(sock, started)


def test_a_connection_that_sends_nothing_is_closed_unanswered(server: LiveServer) -> None:
    with connect(server) as sock:
        started = time.monotonic()
        assert sock.recv(1024) == b""
        elapsed = time.monotonic() - started
    assert DEADLINE - 0.1 <= elapsed < DEADLINE + SLACK, elapsed


def test_the_deadline_is_a_setting_of_positive_seconds() -> None:
    assert Settings(_env_file=None).header_timeout_seconds == 10.0  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Settings(_env_file=None, header_timeout_seconds=0)  # type: ignore[call-arg]


def test_the_protocol_given_to_uvicorn_survives_the_trip_to_a_worker_process() -> None:
    """uvicorn's workers are spawned: its configuration, the protocol included, is pickled."""
    protocol = pickle.loads(pickle.dumps(serving_protocol(2.5, 60.0)))
    assert protocol.func is CoalescingHttpToolsProtocol
    assert protocol.keywords == {"header_timeout": 2.5, "body_timeout": 60.0}
