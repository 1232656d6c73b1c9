"""Direct messages by client_id (every connection of that client) and by connection_id;
server-originated directs and broadcast events through the REST API.

PROTOCOL §4 (`direct`), §5 (`event`), §8, §11 (replies, API messages from "server").
"""

from sbtest.wsclient import connect


async def test_direct_by_client_id_reaches_every_connection_of_the_client(server):
    async with (
        connect(server, client_id="bob") as bob1,
        connect(server, client_id="bob") as bob2,
        connect(server, client_id="carol") as carol,
        connect(server, client_id="alice") as alice,
    ):
        ack = await alice.request({"type": "direct", "to": "bob", "data": {"hello": 1}}, expect_type="ack")
        assert ack["id"]
        for bob in (bob1, bob2):
            d = await bob.expect("direct")
            assert d["from"] == "alice"
            assert d["connection_id"] == alice.connection_id
            assert d["data"] == {"hello": 1}
            assert isinstance(d["ts"], int)
            assert "id" not in d
        assert not [m for m in await carol.barrier() if m.get("type") == "direct"]
        assert not [m for m in await alice.barrier() if m.get("type") == "direct"]


async def test_direct_by_connection_id_reaches_only_that_connection(server):
    async with (
        connect(server, client_id="bob") as bob1,
        connect(server, client_id="bob") as bob2,
        connect(server) as alice,
    ):
        await alice.request({"type": "direct", "to": bob2.connection_id, "data": "psst"}, expect_type="ack")
        d = await bob2.expect("direct")
        assert d["data"] == "psst"
        assert d["from"] == alice.client_id
        assert not [m for m in await bob1.barrier() if m.get("type") == "direct"]


async def test_direct_needs_no_shared_room(server, room):
    async with connect(server) as a, connect(server) as b:
        await a.request({"type": "join", "room": room}, expect_type="joined")
        await a.request({"type": "direct", "to": b.connection_id, "data": [1, 2]}, expect_type="ack")
        assert (await b.expect("direct"))["data"] == [1, 2]


async def test_rest_direct_comes_from_server(server, rest):
    async with connect(server) as a:
        r = rest.post(f"/api/connections/{a.connection_id}/messages", json={"data": {"x": 1}})
        assert r.status_code == 200, r.text
        d = await a.expect("direct")
        assert d["from"] == "server"
        assert d["connection_id"] is None
        assert d["data"] == {"x": 1}


async def test_rest_broadcast_sends_event_to_every_connection_except(server, rest):
    async with connect(server) as a, connect(server) as b, connect(server, "/limited") as c:
        r = rest.post("/api/broadcast", json={"name": "notice", "data": {"v": 1}, "except": [b.connection_id]})
        assert r.status_code == 200, r.text
        for x in (a, c):
            ev = await x.expect("event", name="notice")
            assert ev["data"] == {"v": 1}
            assert isinstance(ev["ts"], int)
        assert not [m for m in await b.barrier() if m.get("type") == "event"], "excepted connection got the event"

        rest.post("/api/broadcast", json={"data": 2})
        assert (await a.expect("event", data=2))["name"] == "broadcast", "name defaults to broadcast (§11)"
