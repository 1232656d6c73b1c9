"""permessage-deflate (RFC 7692), negotiated only where the endpoint enables it. The
`websockets` client offers permessage-deflate by default, so every other module also checks
that endpoints without `compression` do not negotiate it.

PROTOCOL §1 (permessage-deflate), §10 (compression).
"""

import asyncio
import os

from sbtest.wsclient import RAW, connect

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
