"""The HTTP protocol `fhirauth serve` runs: uvicorn's httptools protocol, bounding each request's line
and headers, and sending each response in one socket write.

httptools sets no limit on a request's line and headers: it gathers a header in memory until the header
ends, so one endless header grew a worker by as much as the client sent (300 MB held, then answered 200).
h11 has such a limit, uvicorn's --h11-max-incomplete-event-size; this protocol applies that same setting
(`fhirauth serve` sets it from FHIRAUTH_MAX_HEADER_BYTES) and answers 431 past it. A chunked body's
trailer section is parsed and gathered as headers are, so it counts against the same limit.

uvicorn writes a response's status line and headers as soon as the app sends `http.response.start`,
and the body as a second write: two `send` calls and two TCP segments for every small JSON answer,
and on the receiving side two wake-ups. An app sends both in the same step of the request's task, so
the connection's transport here holds what is written until the end of the event-loop iteration and
sends it at once. Measured (bench/README.md): token introspection 0.107 → 0.070 ms of CPU a request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

# Past this many bytes held, they are written at once: a long streamed body must reach the socket's
# own buffer, whose high-water mark is what pauses the app (uvicorn's flow control).
FLUSH_BYTES = 65536
# The request line and headers of one request, blank line included, when uvicorn is given no limit.
DEFAULT_MAX_HEAD_BYTES = 65536
# After a 431 the connection reads and drops what the client still sends, for this long, before closing:
# closing a socket with unread input makes the kernel reset the connection, which can destroy the answer
# before the client has read it.
LINGER_SECONDS = 2.0

_HEAD_END = b"\r\n\r\n"
_REFUSAL = (
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 31\r\n"
    b"connection: close\r\n\r\n"
    b"Request header fields too large"
)


class CoalescingTransport:
    """`transport`, except that writes wait for the end of the loop iteration (or FLUSH_BYTES)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._held_bytes = 0

    def write(self, data: bytes) -> None:
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(data)
        self._held_bytes += len(data)
        if self._held_bytes >= FLUSH_BYTES:
            self.flush()

    def writelines(self, chunks: Any) -> None:
        for data in chunks:
            self.write(data)

    def flush(self) -> None:
        held, self._held, self._held_bytes = self._held, [], 0
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held, self._held_bytes = [], 0
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        # Reading, flow control, extra info, is_closing, set_protocol: the transport's own.
        return getattr(self._transport, name)


class BoundedHeadHttpToolsProtocol(HttpToolsProtocol):
    """Refuses with 431 a request whose line and headers pass `config.h11_max_incomplete_event_size`,
    or whose trailer section does.

    The bytes of each request's head are counted as they arrive, and the parser is never given more of
    one head than the limit, so no more than the limit is held. Each request has its own count: it starts
    when the request before it is complete, kept alive or pipelined. A read that fits in what is left of
    the limit goes to the parser whole, the common case at one call; so a head pipelined behind another
    request in the same read is counted from the next read on (the parser does not tell where in a read a
    request ends), and can pass the limit by at most that read: 256 KiB at most with asyncio or uvloop.

    A chunked body is counted from each chunk's size line until its data begins: only the last chunk
    (size 0) has none, and the trailer section behind it is counted to the end of the message, with the
    same allowance of one read.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limit = config.h11_max_incomplete_event_size
        self._max_head_bytes = DEFAULT_MAX_HEAD_BYTES if limit is None else limit
        # Bytes of the current request's head received so far; None from its end to the end of its body.
        self._head_bytes: int | None = 0
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        head = self._head_bytes
        if head is None or head + len(data) < self._max_head_bytes:
            if head is not None:
                self._head_bytes = head + len(data)
            super().data_received(data)
        else:
            self._receive_in_parts(data)

    def _receive_in_parts(self, data: bytes) -> None:
        """Feeds the parser a read that may hold more than the rest of the limit, a head at a time."""
        start, size = 0, len(data)
        while start < size:
            if self._head_bytes is None:
                end = size
            else:
                room = self._max_head_bytes - self._head_bytes
                found = data.find(_HEAD_END, start, start + room)
                end = found + len(_HEAD_END) if found >= 0 else min(size, start + room)
                self._head_bytes += end - start
            super().data_received(memoryview(data)[start:end])  # type: ignore[arg-type]
            if self.parser is None or self.transport.is_closing() or self.parser.should_upgrade():
                return
            if self._head_bytes is not None and self._head_bytes >= self._max_head_bytes:
                self._refuse()
                return
            start = end

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        super().on_headers_complete()

    def on_chunk_header(self) -> None:
        self._head_bytes = 0

    def on_body(self, body: bytes) -> None:
        # Data: the chunk whose size line was counted is not the last one.
        self._head_bytes = None
        # Called by name, not through super(): this runs for every piece of every body.
        HttpToolsProtocol.on_body(self, body)

    def on_message_complete(self) -> None:
        self._head_bytes = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._refused and self.cycle.response_complete and not self.transport.is_closing():
            self._send_refusal()

    def _refuse(self) -> None:
        self._refused = True
        self.logger.warning(
            "Request line and headers, or trailer, over %d bytes: answered 431.", self._max_head_bytes
        )
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if not cycle.more_body:
                # A pipelined request before this one is answered first (on_response_complete).
                return
            # The trailer of the request being served: the app hears that its client is gone (its
            # receive() says so, its send() is dropped), and the refusal is the answer.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                self.transport.close()
                return
        self._send_refusal()

    def _send_refusal(self) -> None:
        self._unset_keepalive_if_required()
        content = [STATUS_LINE[431]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.append(_REFUSAL)
        self.transport.write(b"".join(content))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()


class CoalescingHttpToolsProtocol(BoundedHeadHttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
