"""A chunked body's trailer section counts against the bound on a request's line and headers
(FHIRAUTH_MAX_HEADER_BYTES), on a real socket: past the limit 431 and the connection closed, while the
body, however many chunks it comes in, counts for nothing."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest
from support.server import LiveServer

from tests.serving.test_header_limits import assert_refused, connect, read_response

pytestmark = pytest.mark.e2e

LIMIT = 8192
HEAD = (
    b"POST /auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\nAuthorization: Basic cm9vdDpzZWNyZXQ=\r\n\r\n"
)
FORM = b"grant_type=client_credentials&pad="


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer(env={"FHIRAUTH_MAX_HEADER_BYTES": str(LIMIT)}) as server:
        yield server


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def assert_token(sock: socket.socket) -> None:
    with sock.makefile("rb") as reader:
        status, _, body = read_response(reader)
    assert status == b"HTTP/1.1 200 OK\r\n", body
    assert b'"access_token"' in body


def send_trailer_past_the_limit(sock: socket.socket) -> None:
    """Trailer fields adding up to twice the limit, in reads of their own after the body's end."""
    field = b"X-T: %s\r\n" % (b"b" * 100)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(HEAD + chunk(FORM) + b"0\r\n")
    time.sleep(0.2)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        for _ in range(2 * LIMIT // (8 * len(field))):
            sock.sendall(field * 8)


def test_a_small_trailer_is_served(server: LiveServer) -> None:
    with connect(server) as sock:
        sock.sendall(HEAD + chunk(FORM) + chunk(b"a") + b"0\r\nX-Checksum: 1234\r\nX-Other: b\r\n\r\n")
        assert_token(sock)


def test_a_body_of_many_chunks_far_past_the_limit_is_served(server: LiveServer) -> None:
    with connect(server) as sock:
        sock.sendall(HEAD + chunk(FORM) + b"".join(chunk(b"a" * 100) for _ in range(400)) + b"0\r\n\r\n")
        assert_token(sock)


def test_a_chunk_larger_than_the_limit_after_its_size_line_alone_is_served(server: LiveServer) -> None:
    """The chunk's size line arrives in one read and its 32 KiB of data in the next: data, not trailer."""
    data = b"a" * 32768
    with connect(server) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(HEAD + chunk(FORM) + b"%x\r\n" % len(data))
        time.sleep(0.2)
        sock.sendall(data + b"\r\n0\r\n\r\n")
        assert_token(sock)


def test_trailer_fields_adding_up_past_the_limit_are_refused(server: LiveServer) -> None:
    """Counted from the read after the one where the body ends (as a pipelined head is): the fields
    come in reads of their own."""
    with connect(server) as sock, sock.makefile("rb") as reader:
        send_trailer_past_the_limit(sock)
        assert_refused(*read_response(reader))
        assert reader.read() == b""
    with connect(server) as sock:
        sock.sendall(HEAD + chunk(FORM) + b"0\r\n\r\n")
        assert_token(sock)


def test_a_refused_trailer_is_not_logged_as_an_application_error(server: LiveServer) -> None:
    """The app reading that body learns the client is gone (ClientDisconnect): nobody is left to
    answer, and it is no bug of the app's, so nothing is logged as one."""
    with connect(server) as sock, sock.makefile("rb") as reader:
        send_trailer_past_the_limit(sock)
        assert_refused(*read_response(reader))
    # The app's task ends after the refusal is written; give its log line the time to appear.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and "Exception in ASGI application" not in server.output():
        time.sleep(0.05)
    assert "Exception in ASGI application" not in server.output()
    assert "ClientDisconnect" not in server.output()
