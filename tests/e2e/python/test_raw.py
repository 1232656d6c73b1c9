"""Raw endpoints: no envelope; every frame is relayed unchanged, as the same frame type, to
every *other* connection of the endpoint's room.

PROTOCOL §1 (mode raw), §11 (raw rooms invisible to protocol clients).
"""

import asyncio

from sbtest.wsclient import RAW, connect, connect_many


async def recv_frame(client, timeout=5.0):
    return await asyncio.wait_for(client.ws.recv(), timeout)


async def test_text_and_binary_relayed_to_others_not_sender(server):
    async with connect_many(server, 3, "/raw", encoding=RAW) as (a, b, c):
        await a.send_frame("hi")
        assert await recv_frame(b) == "hi"
        assert await recv_frame(c) == "hi"
        # Ordering proves a got nothing: b answers only after receiving "hi", so anything
        # relayed to a for "hi" would be queued before b's answer.
        await b.send_frame(b"\x00\x01binary\xff")
        got = await recv_frame(a)
        assert got == b"\x00\x01binary\xff", f"sender received its own frame or wrong type: {got!r}"
        assert await recv_frame(c) == b"\x00\x01binary\xff"


async def test_raw_payloads_are_not_interpreted(server):
    frames = ['{"type":"join","room":"x"}', "not json", "", "ünïcödé ✓"]
    async with connect_many(server, 2, "/raw", encoding=RAW) as (a, b):
        for f in frames:
            await a.send_frame(f)
        assert [await recv_frame(b) for _ in frames] == frames


async def test_raw_room_is_invisible_to_protocol_clients(server):
    async with (
        connect(server, "/raw", encoding=RAW) as r1,
        connect(server, "/raw", encoding=RAW) as r2,
        connect(server) as p,
    ):
        await p.request({"type": "join", "room": "general"}, expect_type="joined")
        await r1.send_frame("raw only")
        assert await recv_frame(r2) == "raw only"
        assert not [m for m in await p.barrier() if m.get("type") == "message"]
