"""An outsider's attacks on `fhirauth serve`'s bound on a request's line and headers, on a real socket.

A test marked xfail proves a hole that is still open (the mark goes with the fix); the unmarked ones
are attacks the server refuses, kept as regression guards.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.server import LiveServer

LIMIT = 8192
MB = 1 << 20
# FHIRAUTH_HEADER_TIMEOUT_SECONDS, short here so that the test does not wait the default 10 s.
HEADER_TIMEOUT_SECONDS = 2


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    env = {
        "FHIRAUTH_MAX_HEADER_BYTES": str(LIMIT),
        "FHIRAUTH_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT_SECONDS),
    }
    with LiveServer(env=env) as server:
        yield server


def _connect(server: LiveServer) -> socket.socket:
    sock = socket.socket()
    # A small send buffer, so that what a test counts as sent is what the server took in, not what the
    # kernel buffered on the way (up to 4 MiB on loopback, filled in a millisecond).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.port))
    return sock


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def _answered(sock: socket.socket, seconds: float) -> bool:
    return bool(select.select([sock], [], [], seconds)[0])


def _stream_until_answered(sock: socket.socket, total: int) -> int:
    """Send `total` bytes of one header value in 64 KiB writes, stopping once the server answers or
    closes; the bytes sent."""
    chunk = b"a" * 65536
    sent = 0
    while sent < total and not _answered(sock, 0):
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(chunk)
    return sent


def test_a_chunked_bodys_trailer_counts_against_the_header_limit(server: LiveServer) -> None:
    """Attack: headers after a body. A chunked request ends with a trailer section, parsed like
    headers, and httptools gathers each trailer field whole in memory (by repeated concatenation); the
    limit counts nothing from the end of the head to the end of the message. One endless trailer
    behind a one-byte body grows the worker by all that is sent, and is never answered."""
    before = _rss_kib(server.pid)
    head = (
        b"POST /auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\n1\r\na\r\n0\r\nX-Pad: "
    )
    with _connect(server) as sock, sock.makefile("rb") as reader:
        sock.sendall(head)
        sent = _stream_until_answered(sock, 8 * MB)
        grown = _rss_kib(server.pid) - before
        assert _answered(sock, 5), f"the server read {sent} bytes of one trailer and did not answer"
        assert reader.readline().startswith((b"HTTP/1.1 431 ", b"HTTP/1.1 400 "))
    assert sent < MB, f"the server read {sent} bytes of one trailer before answering"
    assert grown < 4096, f"the worker grew by {grown} KiB"


def test_a_head_that_stops_arriving_does_not_hold_the_connection(server: LiveServer) -> None:
    """Attack: slow drip (slowloris). The request line and a header arrive, then nothing: uvicorn arms
    its keep-alive timeout only between requests, and nothing else bounds the time a head may take,
    so each such connection is held for good (a few hundred of them use up the worker's descriptors).
    Refused: the head has a total deadline, past which it is answered 408 and the connection closed."""
    with _connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
        started = time.monotonic()
        assert _answered(sock, HEADER_TIMEOUT_SECONDS + 3), "the connection was still open"
        with contextlib.suppress(ConnectionResetError):
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started < HEADER_TIMEOUT_SECONDS + 3


def test_many_small_headers_and_a_pipelined_drip_are_counted(server: LiveServer) -> None:
    """Attack: the limit split into many small headers, sent a few bytes at a time behind a served
    request on the same connection, the dripped one HTTP/1.0: counted all the same, 431."""
    first = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with _connect(server) as sock, sock.makefile("rb") as reader:
        sock.sendall(first + b"GET /health HTTP/1.0\r\n")
        assert reader.readline() == b"HTTP/1.1 200 OK\r\n"
        while reader.readline() not in (b"\r\n", b""):
            pass
        assert reader.read(15) == b'{"status":"ok"}'
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(4 * LIMIT // 8):
                if _answered(sock, 0):
                    break
                sock.sendall(b"X-A: b\r\n")
        assert _answered(sock, 5)
        assert reader.readline() == b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
