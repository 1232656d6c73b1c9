"""Protocol-mode client on top of the third-party `websockets` library (asyncio).

`Client.expect()` waits for the next message matching a type and fields; messages that do
not match are kept in a backlog (in arrival order) so a later `expect()` can still find
them. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from .harness import Server

TIMEOUT = 5.0

JSON = "json"
MSGPACK = "msgpack"
RAW = "raw"  # no envelope: raw and echo endpoints


def _matcher(type: str | None, fields: dict[str, Any]) -> Callable[[Any], bool]:
    def match(m: Any) -> bool:
        if not isinstance(m, dict):
            return False
        if type is not None and m.get("type") != type:
            return False
        return all(k in m and m[k] == v for k, v in fields.items())

    return match


class Client:
    def __init__(self, ws: ClientConnection, encoding: str):
        self.ws = ws
        self.encoding = encoding
        self.backlog: list[Any] = []
        self.welcome: dict = {}
        self._ids = itertools.count(1)

    # -- identity (from welcome) -----------------------------------------------------------

    @property
    def connection_id(self) -> str:
        return self.welcome["connection_id"]

    @property
    def client_id(self) -> str:
        return self.welcome["client_id"]

    # -- encoding --------------------------------------------------------------------------

    def encode(self, msg: Any) -> str | bytes:
        if self.encoding == JSON:
            return json.dumps(msg)
        if self.encoding == MSGPACK:
            return msgpack.packb(msg, use_bin_type=True)
        return msg

    def decode(self, frame: str | bytes) -> Any:
        if self.encoding == JSON:
            assert isinstance(frame, str), f"JSON encoding must use text frames, got binary {frame[:80]!r}"
            return json.loads(frame)
        if self.encoding == MSGPACK:
            assert isinstance(frame, bytes), f"msgpack encoding must use binary frames, got text {frame[:80]!r}"
            return msgpack.unpackb(frame, raw=False)
        return frame

    # -- sending ---------------------------------------------------------------------------

    async def send(self, msg: Any) -> None:
        await self.ws.send(self.encode(msg))

    async def send_frame(self, frame: str | bytes) -> None:
        """Send a frame as-is (malformed payloads, raw endpoints)."""
        await self.ws.send(frame)

    def next_id(self) -> str:
        return f"r{next(self._ids)}"

    async def request(self, msg: dict, expect_type: str | None = None, timeout: float = TIMEOUT) -> dict:
        """Send `msg` with an `id` (one is added when missing) and wait for the reply carrying it.
        With `expect_type`, assert the reply's type (an `error` reply is shown in full)."""
        msg = dict(msg)
        msg.setdefault("id", self.next_id())
        await self.send(msg)
        reply = await self.expect(id=msg["id"], timeout=timeout, what=f"reply to {msg}")
        if expect_type is not None:
            assert reply.get("type") == expect_type, f"{msg} -> expected {expect_type!r}, got {reply}"
        return reply

    async def request_error(self, msg: dict, code: str, timeout: float = TIMEOUT) -> dict:
        """Send a request that must fail with `code`; checks the error shape (§5)."""
        reply = await self.request(msg, expect_type="error", timeout=timeout)
        assert reply.get("code") == code, f"{msg} -> expected error {code}, got {reply}"
        assert isinstance(reply.get("message"), str), f"error without message: {reply}"
        return reply

    # -- receiving -------------------------------------------------------------------------

    async def _read(self, timeout: float) -> Any:
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        return self.decode(frame)

    async def recv(self, timeout: float = TIMEOUT) -> Any:
        """The next message (backlog first)."""
        if self.backlog:
            return self.backlog.pop(0)
        try:
            return await self._read(timeout)
        except TimeoutError:
            raise AssertionError(f"no message within {timeout}s") from None

    async def expect(self, type: str | None = None, *, timeout: float = TIMEOUT, what: str = "", **fields) -> dict:
        """The first message (backlog first) whose `type` and `fields` match."""
        match = _matcher(type, fields)
        for i, m in enumerate(self.backlog):
            if match(m):
                return self.backlog.pop(i)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                m = await self._read(remaining)
            except TimeoutError:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what or ''} type={type!r} {fields}; "
                    f"unmatched messages meanwhile: {self.backlog[-8:]}"
                ) from None
            except ConnectionClosed as e:
                raise AssertionError(
                    f"connection closed ({e.rcvd.code if e.rcvd else None}) while waiting for "
                    f"{what or ''} type={type!r} {fields}; unmatched: {self.backlog[-8:]}"
                ) from None
            if match(m):
                return m
            self.backlog.append(m)

    async def barrier(self, timeout: float = TIMEOUT) -> list[Any]:
        """Round-trip a `ping` request, then return and clear everything that arrived before
        the `pong`: whatever the server queued for us before handling the ping."""
        await self.request({"type": "ping"}, expect_type="pong", timeout=timeout)
        got, self.backlog = self.backlog, []
        return got

    async def expect_close(self, timeout: float = TIMEOUT) -> tuple[int | None, str]:
        """Wait for the server to close; messages before the close go to the backlog.
        Returns (close code, reason); code is None when no close frame was received."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise AssertionError(f"connection still open after {timeout}s; got {self.backlog[-8:]}")
                try:
                    frame = await asyncio.wait_for(self.ws.recv(), remaining)
                except TimeoutError:
                    continue
                try:
                    self.backlog.append(self.decode(frame))
                except (AssertionError, ValueError):
                    self.backlog.append(frame)
        except ConnectionClosed as e:
            return (e.rcvd.code, e.rcvd.reason) if e.rcvd else (None, "")

    async def close(self) -> None:
        await self.ws.close()


def _subprotocols(encoding: str, offer: bool) -> list[str] | None:
    if not offer or encoding == RAW:
        return None
    return [f"switchboard.{encoding}"]


async def open_client(
    server: Server,
    path: str = "/ws",
    *,
    encoding: str = JSON,
    offer_subprotocol: bool = True,
    timeout: float = TIMEOUT,
    **query: str,
) -> Client:
    """Connect; in protocol mode also read and check the `welcome` (§3.1)."""
    ws = await ws_connect(
        server.ws_url(path, **query),
        subprotocols=_subprotocols(encoding, offer_subprotocol),
        open_timeout=timeout,
        close_timeout=2,
        max_size=None,
        max_queue=None,
    )
    client = Client(ws, encoding)
    if encoding != RAW:
        if encoding == MSGPACK:
            assert ws.subprotocol == "switchboard.msgpack", f"server chose subprotocol {ws.subprotocol!r}"
        welcome = await client.recv(timeout)
        assert isinstance(welcome, dict) and welcome.get("type") == "welcome", f"first message: {welcome}"
        client.welcome = welcome
    return client


@asynccontextmanager
async def connect(server: Server, path: str = "/ws", **kw) -> AsyncIterator[Client]:
    client = await open_client(server, path, **kw)
    try:
        yield client
    finally:
        await client.close()


@asynccontextmanager
async def connect_many(server: Server, n: int, path: str = "/ws", **kw) -> AsyncIterator[list[Client]]:
    """Open `n` clients concurrently (at most 50 handshakes in flight)."""
    gate = asyncio.Semaphore(50)

    async def one() -> Client:
        async with gate:
            return await open_client(server, path, **kw)

    async with AsyncExitStack() as stack:
        results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
        for r in results:
            if isinstance(r, Client):
                stack.push_async_callback(r.close)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        yield list(results)  # type: ignore[arg-type]


async def join_all(clients: list[Client], room: str, **extra) -> list[dict]:
    """Join every client to `room` one after another (so member lists are predictable)."""
    replies = []
    for c in clients:
        replies.append(await c.request({"type": "join", "room": room, **extra}, expect_type="joined"))
    return replies
