"""`fhirauth serve`'s HTTP protocol: a real uvicorn server on a real socket sends each response in
one write, and closes, streams and answers HEAD as uvicorn's own protocol does."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn.importer import import_from_string

from fhirauth.http.serving.protocol import FLUSH_BYTES, CoalescingHttpToolsProtocol

pytestmark = pytest.mark.e2e

CHUNK = b"x" * 16384
CHUNKS = 20


class RecordingTransport:
    """The real transport, with a note of every write it is handed."""

    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        self._transport = transport
        self.writes = writes

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


CONNECTIONS: list[list[bytes]] = []


class RecordingProtocol(CoalescingHttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        writes: list[bytes] = []
        CONNECTIONS.append(writes)
        super().connection_made(RecordingTransport(transport, writes))  # type: ignore[arg-type]


async def small(request: Request) -> Response:
    return JSONResponse({"ok": True, "path": request.url.path})


async def big(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        # Never suspends: every chunk is written in the same loop iteration.
        for _ in range(CHUNKS):
            yield CHUNK

    return StreamingResponse(chunks(), media_type="application/octet-stream")


APP = Starlette(routes=[Route("/small", small, methods=["GET", "HEAD"]), Route("/big", big)])


@pytest.fixture
async def port() -> AsyncIterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = int(probe.getsockname()[1])
    config = uvicorn.Config(
        APP, host="127.0.0.1", port=free, http=RecordingProtocol, lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    CONNECTIONS.clear()
    yield free
    server.should_exit = True
    await serving


async def read_response(reader: asyncio.StreamReader, *, head: bool = False) -> tuple[bytes, bytes]:
    """The status line and headers, and the body (by Content-Length, or chunked)."""
    headers = await reader.readuntil(b"\r\n\r\n")
    if head:
        return headers, b""
    for line in headers.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return headers, await reader.readexactly(int(line.split(b":")[1]))
    assert b"transfer-encoding: chunked" in headers
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return headers, body
        body += chunk[:-2]


async def test_each_response_on_a_kept_alive_connection_is_one_write(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    responses = []
    for path in ("/small", "/small?again", "/small"):
        writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        responses.append(await read_response(reader))
    writer.close()
    await writer.wait_closed()
    assert [body for _, body in responses] == [b'{"ok":true,"path":"/small"}'] * 3
    assert all(headers.startswith(b"HTTP/1.1 200 OK\r\n") for headers, _ in responses)
    [writes] = CONNECTIONS
    assert writes == [headers + body for headers, body in responses]


async def test_a_closing_connection_gets_the_whole_response_then_the_end(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /small HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
    headers, body = await read_response(reader)
    assert body == b'{"ok":true,"path":"/small"}'
    assert await reader.read() == b""
    writer.close()
    [writes] = CONNECTIONS
    assert writes == [headers + body]


async def test_head_is_one_write_of_the_headers(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"HEAD /small HTTP/1.1\r\nHost: test\r\n\r\n")
    headers, _ = await read_response(reader, head=True)
    writer.write(b"GET /small HTTP/1.1\r\nHost: test\r\n\r\n")
    again = await read_response(reader)
    writer.close()
    assert b"content-length: 27\r\n" in headers
    [writes] = CONNECTIONS
    assert writes == [headers, again[0] + again[1]]


async def test_a_long_stream_is_written_as_it_grows_not_held_whole(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /big HTTP/1.1\r\nHost: test\r\n\r\n")
    headers, body = await read_response(reader)
    writer.close()
    assert body == CHUNK * CHUNKS
    [writes] = CONNECTIONS
    # Everything the client read, in order; no write holds much more than FLUSH_BYTES.
    sent = b"".join(writes)
    assert sent.startswith(headers) and len(sent) > len(body)
    assert len(writes) >= len(CHUNK) * CHUNKS // FLUSH_BYTES
    assert max(len(write) for write in writes) < FLUSH_BYTES + len(CHUNK) + 64


def test_the_path_given_to_plain_uvicorn_names_this_protocol() -> None:
    # docs/operations.md: `uvicorn --http fhirauth.http.protocol:CoalescingHttpToolsProtocol ...`
    named = import_from_string("fhirauth.http.protocol:CoalescingHttpToolsProtocol")
    assert named is CoalescingHttpToolsProtocol
