"""`fhirauth serve` bounds the request line and headers of each request (FHIRAUTH_MAX_HEADER_BYTES):
past the limit it answers 431 and closes, having held no more than the limit, on a real socket."""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterator
from io import BufferedReader
from pathlib import Path

import pytest
from support.server import LiveServer

pytestmark = pytest.mark.e2e

MB = 1 << 20
DEFAULT_LIMIT = 65536
SMALL_LIMIT = 8192
REFUSAL = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 31\r\n"
    b"connection: close\r\n\r\n"
    b"Request header fields too large",
)


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer() as server:
        yield server


@pytest.fixture(scope="module")
def small_limit_server() -> Iterator[LiveServer]:
    with LiveServer(env={"FHIRAUTH_MAX_HEADER_BYTES": str(SMALL_LIMIT)}) as server:
        yield server


def request(
    size: int, *, method: str = "GET", path: str = "/health", headers: str = "", body: bytes = b""
) -> bytes:
    """A request whose request line and headers, blank line included, are exactly `size` bytes."""
    start = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Content-Length: {len(body)}\r\nX-Pad: "
    start = start.encode()
    end = b"\r\n\r\n"
    assert size >= len(start) + len(end)
    return start + b"a" * (size - len(start) - len(end)) + end + body


def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def read_response(reader: BufferedReader) -> tuple[bytes, bytes, bytes]:
    """(status line, headers, body) of one response."""
    status = reader.readline()
    headers = b""
    length = 0
    while (line := reader.readline()) not in (b"\r\n", b""):
        headers += line
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return status, headers, reader.read(length)


def assert_refused(status: bytes, headers: bytes, body: bytes) -> None:
    assert status == REFUSAL[0]
    # uvicorn's own date and server headers come first, then the refusal's.
    assert (headers + b"\r\n" + body).endswith(REFUSAL[1])
    assert b"date: " in headers and b"server: uvicorn\r\n" in headers


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def exchange(server: LiveServer, data: bytes, responses: int) -> list[tuple[bytes, bytes, bytes]]:
    """Send `data` on one connection and read `responses` responses."""
    with connect(server) as sock, sock.makefile("rb") as reader:
        sock.sendall(data)
        return [read_response(reader) for _ in range(responses)]


def test_a_one_megabyte_header_is_answered_431_and_the_connection_closed(server: LiveServer) -> None:
    with connect(server) as sock, sock.makefile("rb") as reader:
        # The server may answer and close before the last bytes are sent.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request(MB))
        assert_refused(*read_response(reader))
        assert reader.read() == b""


def test_a_long_request_line_counts_against_the_same_limit(server: LiveServer) -> None:
    line = b"GET /health?" + b"a" * DEFAULT_LIMIT + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    [refused] = exchange(server, line, 1)
    assert_refused(*refused)


def test_a_300_mb_header_streamed_is_cut_off_without_the_worker_growing(server: LiveServer) -> None:
    before = rss_kib(server.pid)
    chunk = b"a" * MB
    sent = 0
    with connect(server) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ")
        deadline = time.monotonic() + 60
        while sent < 300 * MB and time.monotonic() < deadline:
            if select.select([sock], [], [], 0)[0]:
                break  # the server answered
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        assert_refused(*read_response(reader))
        assert reader.read() == b""
    grown = rss_kib(server.pid) - before
    assert sent < 32 * MB, f"the server read {sent} bytes of one header before answering"
    assert grown < 4096, f"the worker grew by {grown} KiB"
    with connect(server) as sock, sock.makefile("rb") as reader:
        sock.sendall(request(200))
        assert read_response(reader)[0] == b"HTTP/1.1 200 OK\r\n"


def test_headers_up_to_the_limit_are_served_and_one_byte_more_is_not(server: LiveServer) -> None:
    for size in (60 * 1024, DEFAULT_LIMIT):
        [(status, _, body)] = exchange(server, request(size), 1)
        assert (status, body) == (b"HTTP/1.1 200 OK\r\n", b'{"status":"ok"}')
    [refused] = exchange(server, request(DEFAULT_LIMIT + 1), 1)
    assert_refused(*refused)


def test_each_request_on_a_kept_alive_connection_has_its_own_limit(server: LiveServer) -> None:
    with connect(server) as sock, sock.makefile("rb") as reader:
        for size in (200, 60 * 1024, 60 * 1024, 200):
            sock.sendall(request(size))
            status, headers, body = read_response(reader)
            assert (status, body) == (b"HTTP/1.1 200 OK\r\n", b'{"status":"ok"}')
            assert b"connection: close" not in headers
        sock.sendall(request(DEFAULT_LIMIT + 1))
        assert_refused(*read_response(reader))
        assert reader.read() == b""


def test_pipelined_requests_each_have_their_own_limit(server: LiveServer) -> None:
    # Sent at once: the server reads them together and still counts each one's headers apart.
    two = exchange(server, request(40 * 1024) + request(40 * 1024), 2)
    assert [(status, body) for status, _, body in two] == [(b"HTTP/1.1 200 OK\r\n", b'{"status":"ok"}')] * 2
    with connect(server) as sock, sock.makefile("rb") as reader:
        sock.sendall(request(200) + request(DEFAULT_LIMIT + 1))
        assert read_response(reader)[0] == b"HTTP/1.1 200 OK\r\n"
        assert_refused(*read_response(reader))
        assert reader.read() == b""


def test_a_body_does_not_count_against_the_header_limit(server: LiveServer) -> None:
    token = request(
        1024,
        method="POST",
        path="/auth/token",
        headers="Content-Type: application/x-www-form-urlencoded\r\nAuthorization: Basic cm9vdDpzZWNyZXQ=\r\n",
        body=b"grant_type=client_credentials&pad=" + b"a" * (60 * 1024),
    )
    # With a request pipelined behind it, read together with the body.
    (status, _, answer), (then, _, _) = exchange(server, token + request(60 * 1024), 2)
    assert status == b"HTTP/1.1 200 OK\r\n", answer
    assert b'"access_token"' in answer
    assert then == b"HTTP/1.1 200 OK\r\n"
    # An endless head right behind a body is refused all the same.
    with connect(server) as sock, sock.makefile("rb") as reader:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(token + request(MB))
        assert read_response(reader)[0] == b"HTTP/1.1 200 OK\r\n"
        assert_refused(*read_response(reader))
        assert reader.read() == b""


def test_the_setting_sets_the_limit(small_limit_server: LiveServer) -> None:
    [(status, _, _)] = exchange(small_limit_server, request(SMALL_LIMIT), 1)
    assert status == b"HTTP/1.1 200 OK\r\n"
    [refused] = exchange(small_limit_server, request(SMALL_LIMIT + 1), 1)
    assert_refused(*refused)
