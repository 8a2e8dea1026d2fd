"""The HTTP protocol `fhirauth serve` runs: uvicorn's httptools protocol, bounding each request's line
and headers, and sending each response in one socket write.

httptools sets no limit on a request's line and headers: it gathers a header in memory until the header
ends, so one endless header grew a worker by as much as the client sent (300 MB held, then answered 200).
h11 has such a limit, uvicorn's --h11-max-incomplete-event-size; this protocol applies that same setting
(`fhirauth serve` sets it from FHIRAUTH_MAX_HEADER_BYTES) and answers 431 past it. A chunked body's
trailer section is parsed and gathered as headers are, so it counts against the same limit.

uvicorn times a connection only between requests (its keep-alive timeout): a head that stops arriving,
or a connection that never sends one, was held for good, and a few hundred of them use up a worker's
descriptors. Here each head has a total deadline (`fhirauth serve` sets it from
FHIRAUTH_HEADER_TIMEOUT_SECONDS), past which it is answered 408 and the connection closed. A body that
stops arriving held its connection the same way (and the app's task, waiting in receive()): each body
has a total deadline too (FHIRAUTH_BODY_TIMEOUT_SECONDS), a total rather than an idle time so that a
body dripped a byte at a time cannot hold a connection either.

uvicorn writes a response's status line and headers as soon as the app sends `http.response.start`,
and the body as a second write: two `send` calls and two TCP segments for every small JSON answer,
and on the receiving side two wake-ups. An app sends both in the same step of the request's task, so
the connection's transport here holds what is written until the end of the event-loop iteration and
sends it at once. Measured (bench/README.md): token introspection 0.107 → 0.070 ms of CPU a request.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

# Past this many bytes held, they are written at once: a long streamed body must reach the socket's
# own buffer, whose high-water mark is what pauses the app (uvicorn's flow control).
FLUSH_BYTES = 65536
# The request line and headers of one request, blank line included, when uvicorn is given no limit.
DEFAULT_MAX_HEAD_BYTES = 65536
# The seconds they may take, when the protocol is given none (uvicorn told the class by name).
DEFAULT_HEAD_TIMEOUT_SECONDS = 10.0
# The seconds a request's body (a chunked one's trailer included) may take from the end of its head.
DEFAULT_BODY_TIMEOUT_SECONDS = 60.0
# After a refusal (431, 408) the connection reads and drops what the client still sends, for this long,
# before closing: closing a socket with unread input makes the kernel reset the connection, which can
# destroy the answer before the client has read it.
LINGER_SECONDS = 2.0

_HEAD_END = b"\r\n\r\n"
_TOO_LARGE = 431
_TIMED_OUT = 408


def _refusal(status: int, text: bytes) -> tuple[bytes, bytes]:
    """The status line, and the headers and body after the server's own default headers."""
    ending = b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
    return STATUS_LINE[status], ending % (len(text), text)


_REFUSALS = {
    _TOO_LARGE: _refusal(_TOO_LARGE, b"Request header fields too large"),
    _TIMED_OUT: _refusal(_TIMED_OUT, b"Request not received in time"),
}


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

    Answers 408 to a head not complete `header_timeout` seconds after its first read (a connection's
    first head: after the connection was made), and closes a connection that sent nothing by then. The
    deadline is armed only by a read that leaves a head incomplete, so a head that arrives in one read,
    the common case, costs no timer; a connection costs one, until its first head is complete. Answers
    408 likewise to a body (trailer included) not complete `body_timeout` seconds after the read that
    left it incomplete; a body that arrives with its head, the common case, costs no timer either.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        header_timeout: float = DEFAULT_HEAD_TIMEOUT_SECONDS,
        body_timeout: float = DEFAULT_BODY_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limit = config.h11_max_incomplete_event_size
        self._max_head_bytes = DEFAULT_MAX_HEAD_BYTES if limit is None else limit
        self._head_timeout = header_timeout
        self._body_timeout = body_timeout
        # From the end of a request's head to the end of its message: the deadline is the body's.
        self._in_body = False
        # Bytes of the current request's head received so far; None from its end to the end of its body.
        self._head_bytes: int | None = 0
        self._head_deadline: asyncio.TimerHandle | None = None
        # The status of the refusal answered or to answer (_TOO_LARGE, _TIMED_OUT); 0 while none.
        self._refused = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's own: it is given a socket transport
        super().connection_made(transport)
        self._head_deadline = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

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
        if (self._in_body or self._head_bytes) and self._head_deadline is None and not self._refused:
            timeout = self._body_timeout if self._in_body else self._head_timeout
            self._head_deadline = self.loop.call_later(timeout, self._head_timed_out)

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
            super().data_received(memoryview(data)[start:end])  # type: ignore[arg-type]  # httptools reads any buffer: no copy of the read
            if self.parser is None or self.transport.is_closing() or self.parser.should_upgrade():
                return
            if self._head_bytes is not None and self._head_bytes >= self._max_head_bytes:
                self.logger.warning(
                    "Request line and headers, or trailer, over %d bytes: answered 431.", self._max_head_bytes
                )
                self._refuse(_TOO_LARGE)
                return
            start = end

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._in_body = True
        if self._head_deadline is not None:
            self._cancel_head_deadline()
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
        self._in_body = False
        if self._head_deadline is not None:
            self._cancel_head_deadline()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._refused and self.cycle.response_complete and not self.transport.is_closing():
            self._send_refusal()

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self._refused or self.transport.is_closing():
            return
        if self._in_body:
            if self.cycle is not None and self.cycle.response_complete:
                # Answered already (a 413, say) without the rest of the body: no second answer.
                self.transport.close()
                return
            self.logger.warning("Request body not complete in %g s: answered 408.", self._body_timeout)
            self._refuse(_TIMED_OUT)
            return
        if not self._head_bytes:
            # Nothing of a request arrived: closed unanswered, as a kept-alive connection is when idle.
            self.transport.close()
            return
        self.logger.warning(
            "Request line and headers, or trailer, not complete in %g s: answered 408.", self._head_timeout
        )
        self._refuse(_TIMED_OUT)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _refuse(self, status: int) -> None:
        self._refused = status
        self._cancel_head_deadline()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if not cycle.more_body:
                # A pipelined request before this one is answered first (on_response_complete).
                return
            # The trailer of the request being served: the app hears that its client is gone (its
            # receive() says so, its send() is dropped), and the refusal is the answer, if none began.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                self.transport.close()
                return
        self._send_refusal()

    def _send_refusal(self) -> None:
        self._unset_keepalive_if_required()
        status_line, ending = _REFUSALS[self._refused]
        content = [status_line]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.append(ending)
        self.transport.write(b"".join(content))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()


class CoalescingHttpToolsProtocol(BoundedHeadHttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's own: it is given a socket transport
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]  # stands in for the transport, passing on what it does not do itself


def serving_protocol(header_timeout: float, body_timeout: float) -> type[asyncio.Protocol]:
    """What `fhirauth serve` gives uvicorn as its HTTP protocol: CoalescingHttpToolsProtocol with the
    head and body deadlines set. uvicorn calls it as it would the class (Server.startup, by keyword),
    and a partial of a module's class pickles, as the configuration must for worker processes."""
    factory = functools.partial(
        CoalescingHttpToolsProtocol, header_timeout=header_timeout, body_timeout=body_timeout
    )
    return cast("type[asyncio.Protocol]", factory)
