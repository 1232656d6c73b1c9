"""MessagePack encoding chosen by subprotocol `switchboard.msgpack`: the same messages as
maps in binary frames, interoperating with JSON clients in the same room.

PROTOCOL §1 (encodings), §2.
"""

from sbtest.wsclient import MSGPACK, connect


async def test_welcome_and_ping_in_msgpack(server):
    async with connect(server, encoding=MSGPACK, client_id="mp") as c:
        assert c.welcome["client_id"] == "mp"
        assert c.welcome["protocol"] == 1
        pong = await c.request({"type": "ping", "client_time": 7}, expect_type="pong")
        assert pong["client_time"] == 7


async def test_msgpack_and_json_clients_share_a_room(server, room):
    async with connect(server, encoding=MSGPACK) as mp, connect(server) as js:
        await mp.request({"type": "join", "room": room}, expect_type="joined")
        await js.request({"type": "join", "room": room}, expect_type="joined")
        ack = await mp.request(
            {"type": "publish", "room": room, "data": {"from": "mp", "list": [1, 2.5, None]}}, expect_type="ack"
        )
        assert ack["offset"] == 1
        for c in (mp, js):
            m = await c.expect("message", room=room, offset=1)
            assert m["data"] == {"from": "mp", "list": [1, 2.5, None]}
        await js.request({"type": "publish", "room": room, "data": "from json"}, expect_type="ack")
        m = await mp.expect("message", room=room, offset=2)
        assert m["data"] == "from json"


async def test_malformed_msgpack_is_bad_request(server):
    async with connect(server, encoding=MSGPACK) as c:
        await c.send_frame(b"\xc1\xff\x00")  # 0xc1 is never used in MessagePack
        err = await c.expect("error")
        assert err["code"] == "BAD_REQUEST"
        await c.barrier()


async def test_msgpack_non_map_is_bad_request(server):
    async with connect(server, encoding=MSGPACK) as c:
        await c.send([1, 2, 3])
        err = await c.expect("error")
        assert err["code"] == "BAD_REQUEST"
        await c.barrier()
