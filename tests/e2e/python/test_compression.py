"""permessage-deflate (RFC 7692), negotiated only where the endpoint enables it. The
`websockets` client offers permessage-deflate by default, so every other module also checks
that endpoints without `compression` do not negotiate it.

PROTOCOL §1 (permessage-deflate), §10 (compression).
"""

import asyncio
import json
import os

import pytest
from sbtest.wsclient import MSGPACK, RAW, connect, connect_many, join_all
from websockets.asyncio.client import connect as ws_connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

SERVER_CONFIG = "compression.toml"


async def test_deflate_negotiated_when_enabled(server, room):
    async with connect(server, "/deflate") as c:  # the websockets client offers permessage-deflate
        ext = c.ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert "permessage-deflate" in ext, f"extensions: {ext!r}"
        await c.request({"type": "join", "room": room}, expect_type="joined")
        await c.request({"type": "publish", "room": room, "data": "z" * 5000}, expect_type="ack")
        assert (await c.expect("message", room=room))["data"] == "z" * 5000


async def test_deflate_not_negotiated_when_disabled(server):
    async with connect(server, "/ws") as c:
        assert "Sec-WebSocket-Extensions" not in c.ws.response.headers


async def test_deflate_echo_of_large_and_binary_messages(server):
    async with connect(server, "/echo-deflate", encoding=RAW) as c:
        assert "permessage-deflate" in c.ws.response.headers.get("Sec-WebSocket-Extensions", "")
        payloads = ["a" * 60000, os.urandom(30000), "ünïcödé " * 100, b""]
        for p in payloads:
            await c.send_frame(p)
            assert await asyncio.wait_for(c.ws.recv(), 5) == p


def _sensor_batch(n: int) -> list[dict]:
    """Realistic, repetitive JSON: what compression is for."""
    return [{"sensor": f"room-{i % 7}", "temperature": 20 + i % 5, "unit": "C", "ok": True} for i in range(n)]


async def test_broadcast_reaches_compressed_and_plain_members(server, room):
    data = _sensor_batch(60)
    async with connect_many(server, 12, "/deflate") as zs, connect(server, "/ws") as plain:
        for c in zs:
            assert "permessage-deflate" in c.ws.response.headers.get("Sec-WebSocket-Extensions", "")
        members = [*zs, plain]
        await join_all(members, room)
        await zs[0].request({"type": "publish", "room": room, "data": data}, expect_type="ack")
        got = await asyncio.gather(*(c.expect("message", room=room) for c in members))
        assert all(m["data"] == data and m["offset"] == 1 for m in got)


async def test_msgpack_over_deflate(server, room):
    async with connect(server, "/deflate", encoding=MSGPACK) as c:
        await c.request({"type": "join", "room": room}, expect_type="joined")
        data = _sensor_batch(40)
        await c.request({"type": "publish", "room": room, "data": data}, expect_type="ack")
        assert (await c.expect("message", room=room))["data"] == data


async def test_context_takeover_endpoint(server, room):
    async with connect(server, "/deflate-takeover") as a, connect(server, "/deflate-takeover") as b:
        assert a.ws.response.headers["Sec-WebSocket-Extensions"] == "permessage-deflate"
        await join_all([a, b], room)
        for i in range(20):
            data = {"i": i, "batch": _sensor_batch(10 + i)}
            await a.request({"type": "publish", "room": room, "data": data}, expect_type="ack")
            for c in (a, b):
                assert (await c.expect("message", room=room, offset=i + 1))["data"] == data


@pytest.mark.parametrize("bits", [9, 12])
async def test_window_bits_offers(server, bits):
    ext = ClientPerMessageDeflateFactory(server_max_window_bits=bits, client_max_window_bits=bits)
    async with ws_connect(server.ws_url("/echo-deflate"), extensions=[ext], compression=None, max_size=None) as ws:
        agreed = ws.response.headers["Sec-WebSocket-Extensions"]
        assert f"server_max_window_bits={bits}" in agreed, agreed
        for n in (300, 5000, 60000):
            text = json.dumps(_sensor_batch(n // 60 + 1))[:n]
            await ws.send(text)
            assert await asyncio.wait_for(ws.recv(), 5) == text


async def test_message_over_max_size_once_inflated_is_closed_1009(server):
    async with connect(server, "/deflate") as c:
        # ~100 KiB that compresses to a few hundred bytes: the limit is on what it inflates to.
        await c.ws.send(json.dumps({"type": "ping", "pad": "z" * 100_000}))
        code, _ = await c.expect_close()
        assert code == 1009
