"""Reading a request body from its ASGI messages: every way a body arrives or fails to."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import ClientDisconnect, Request

from fhirauth.errors import PayloadTooLarge
from fhirauth.http.serving.body import read_bytes

Message = dict[str, Any]


def request_of(
    messages: list[Message], headers: dict[str, str] | None = None
) -> tuple[Request, list[Message]]:
    """A POST whose body arrives as `messages`; the second value is what is left unread."""
    pending = list(messages)

    async def receive() -> Message:
        return pending.pop(0)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    return Request(scope, receive), pending


def chunk(body: bytes, more: bool) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


async def test_a_body_of_one_message() -> None:
    request, left = request_of([chunk(b'{"token": "123456"}', False)])
    assert await read_bytes(request, 100) == b'{"token": "123456"}'
    assert left == []


async def test_a_body_in_several_messages_is_joined_in_order() -> None:
    request, left = request_of([chunk(b"ab", True), chunk(b"", True), chunk(b"cd", True), chunk(b"e", False)])
    assert await read_bytes(request, 5) == b"abcde"
    assert left == []


async def test_no_body() -> None:
    request, left = request_of([{"type": "http.request"}])
    assert await read_bytes(request, 100) == b""
    assert left == []


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    request, left = request_of([chunk(b"x" * 11, False)], {"content-length": "11"})
    with pytest.raises(PayloadTooLarge, match="larger than 10 bytes"):
        await read_bytes(request, 10)
    assert len(left) == 1


async def test_a_body_without_a_length_is_refused_at_the_message_that_passes_the_limit() -> None:
    request, left = request_of([chunk(b"x" * 6, True), chunk(b"x" * 5, True), chunk(b"x", False)])
    with pytest.raises(PayloadTooLarge, match="larger than 10 bytes"):
        await read_bytes(request, 10)
    assert left == [chunk(b"x", False)]


async def test_a_client_gone_mid_body_is_a_disconnect() -> None:
    request, left = request_of([chunk(b"ab", True), {"type": "http.disconnect"}, chunk(b"cd", False)])
    with pytest.raises(ClientDisconnect):
        await read_bytes(request, 100)
    assert left == [chunk(b"cd", False)]


async def test_a_body_read_once_is_there_for_starlette_again() -> None:
    request, left = request_of([chunk(b"ab", True), chunk(b"cd", False)])
    assert await read_bytes(request, 100) == b"abcd"
    assert left == []
    # No message is left to receive: these answer from what was read, rather than wait for one.
    assert await request.body() == b"abcd"
    assert [part async for part in request.stream()] == [b"abcd", b""]
