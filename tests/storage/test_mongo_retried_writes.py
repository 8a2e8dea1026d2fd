"""A write whose reply is lost is retried once by pymongo. MongoDB applies a retried write once; a server
that does not (SecantusDB) refuses the retry as a duplicate of the first attempt, which had landed. The
backend must then see its own write and report success, with the resource and its history whole.

The reply is lost for real: the storage talks to SecantusDB through a TCP proxy that closes the client's
connection instead of passing on the reply to one chosen command."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import bson
import pytest
from support.mongo import drop_database, with_database

from fhirauth.clock import ManualClock
from fhirauth.storage.base import Create, Delete, Document, Index, Replace, Stored
from fhirauth.storage.mongo import MongoStorage

_OP_MSG = 2013


def _command(body: bytes) -> tuple[str, Any] | None:
    """The command name and its first value (the collection) of an OP_MSG body."""
    offset = 4  # flag bits
    while offset < len(body):
        kind = body[offset]
        (size,) = struct.unpack_from("<i", body, offset + 1)
        if kind == 0:
            document = bson.decode(body[offset + 1 : offset + 1 + size])
            name = next(iter(document))
            return name, document[name]
        offset += 1 + size
    return None


class ReplyDroppingProxy:
    """Forwards MongoDB connections; `drop_reply_to(command, collection)` makes the next such command's
    reply never arrive: its connection is cut once the server has answered it."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._drop: tuple[str, str] | None = None
        self.dropped: list[tuple[str, str]] = []
        self._server: asyncio.Server | None = None

    def drop_reply_to(self, command: str, collection: str) -> None:
        self._drop = (command, collection)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _connect(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        server_in, server_out = await asyncio.open_connection("127.0.0.1", self._port)
        doomed: dict[int, tuple[str, str]] = {}

        async def upstream() -> None:
            while True:
                header = await client_in.readexactly(16)
                length, request_id, _to, opcode = struct.unpack("<iiii", header)
                body = await client_in.readexactly(length - 16)
                if self._drop is not None and opcode == _OP_MSG and _command(body) == self._drop:
                    doomed[request_id], self._drop = self._drop, None
                server_out.write(header + body)
                await server_out.drain()

        async def downstream() -> None:
            while True:
                header = await server_in.readexactly(16)
                length, _id, response_to, _opcode = struct.unpack("<iiii", header)
                body = await server_in.readexactly(length - 16)
                if response_to in doomed:
                    self.dropped.append(doomed.pop(response_to))
                    client_out.transport.abort()
                    return
                client_out.write(header + body)
                await client_out.drain()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        client_out.transport.abort()
        server_out.transport.abort()


@pytest.fixture
async def proxied(mongo_uri: str) -> AsyncIterator[tuple[MongoStorage, ReplyDroppingProxy]]:
    url = with_database(mongo_uri, f"test_{uuid.uuid4().hex}")
    proxy = ReplyDroppingProxy(urlsplit(mongo_uri).port or 27017)
    port = await proxy.start()
    # directConnection: SecantusDB names itself a replica set member at its own port, which would
    # take the driver around the proxy.
    through = f"mongodb://127.0.0.1:{port}{urlsplit(url).path}?directConnection=true"
    storage = MongoStorage(through, ManualClock())
    await storage.start([Index("User", "email", unique=True)])
    yield storage, proxy
    await storage.close()
    await proxy.close()
    drop_database(url)


def user(id: str, version: int = 1, **fields: Any) -> Document:
    return {"resourceType": "User", "id": id, "meta": {"versionId": str(version)}, **fields}


@pytest.mark.parametrize(
    ("lost", "writes"),
    [
        (("insert", "User_history"), [Create(user("u1", note="first"))]),
        (("insert", "User"), [Create(user("u1", note="first"))]),
        (("insert", "User_history"), [Replace(user("u1", 2, note="second"), expected_version=1)]),
        (("update", "User"), [Replace(user("u1", 2, note="second"), expected_version=1)]),
        (("update", "User"), [Delete(user("u1", 2), expected_version=1)]),
    ],
    ids=["create-history", "create-current", "replace-history", "replace-current", "delete-current"],
)
async def test_a_write_whose_reply_was_lost_is_done_once(
    proxied: tuple[MongoStorage, ReplyDroppingProxy], lost: tuple[str, str], writes: list[Any]
) -> None:
    storage, proxy = proxied
    if not isinstance(writes[0], Create):
        await storage.write([Create(user("u1", note="first"))])
    proxy.drop_reply_to(*lost)
    await storage.write(writes)
    assert proxy.dropped == [lost]
    written: Document = writes[0].document
    deleted = isinstance(writes[0], Delete)
    assert await storage.get("User", "u1") == Stored(written, deleted)
    versions = await storage.history("User", "u1")
    assert versions[0] == Stored(written, deleted)
    assert [stored.version for stored in versions] == list(range(int(written["meta"]["versionId"]), 0, -1))
