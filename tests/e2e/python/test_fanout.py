"""Fan-out at moderate scale: every member receives every message, in order.

PROTOCOL §4 (`publish`), §5 (offsets strictly +1).
"""

import asyncio

from sbtest.wsclient import connect_many

CLIENTS = 200
MESSAGES = 50


async def test_200_clients_each_receive_50_messages_in_order(server, rest, room):
    rest.create_room(id=room, max_connections=CLIENTS)  # room_max_connections defaults to 100 (§10)
    async with connect_many(server, CLIENTS) as cs:
        await asyncio.gather(*(c.request({"type": "join", "room": room}, expect_type="joined", timeout=20) for c in cs))
        publisher = cs[0]

        async def receive_all(c):
            got = []
            while len(got) < MESSAGES:
                m = await c.expect("message", room=room, timeout=30)
                got.append((m["offset"], m["data"]["seq"]))
            return got

        receivers = [asyncio.create_task(receive_all(c)) for c in cs]
        for seq in range(MESSAGES):
            await publisher.send({"type": "publish", "room": room, "data": {"seq": seq}})
        results = await asyncio.wait_for(asyncio.gather(*receivers), 60)
        want = [(i + 1, i) for i in range(MESSAGES)]
        bad = [i for i, got in enumerate(results) if got != want]
        assert not bad, f"{len(bad)} clients got wrong order/content, e.g. #{bad[0]}: {results[bad[0]][:10]}"
