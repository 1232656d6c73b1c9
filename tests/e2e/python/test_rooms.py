"""Rooms: join/leave, presence, publish and offsets, metadata, params/triggers/sync,
room codes, REST-side room operations, room limits.

PROTOCOL §4, §5, §7, §8, §11.
"""

import asyncio

from sbtest.wsclient import connect, connect_many, join_all


def member_ids(members: list[dict]) -> list[str]:
    return [m["connection_id"] for m in members]


def assert_member(member: dict, client) -> None:
    for field in ("client_id", "connection_id", "name", "meta", "joined_at"):
        assert field in member, f"member lacks {field!r}: {member}"
    assert member["connection_id"] == client.connection_id
    assert member["client_id"] == client.client_id
    assert isinstance(member["joined_at"], int)


# -- join / leave / presence events ---------------------------------------------------------


async def test_join_new_room(server, room):
    async with connect(server, client_id="joiner", name="Joe") as c:
        joined = await c.request({"type": "join", "room": room}, expect_type="joined")
        assert joined["room"] == room
        assert isinstance(joined["epoch"], str) and joined["epoch"]
        assert joined["offset"] == 0, "a new room's offset is 0 (§11)"
        assert len(joined["members"]) == 1
        assert_member(joined["members"][0], c)
        assert joined["members"][0]["name"] == "Joe"
        assert joined["recovered"] == []
        assert isinstance(joined["recovered_complete"], bool)


async def test_joined_members_include_self_and_earlier_members(server, room):
    async with connect_many(server, 3) as cs:
        replies = await join_all(cs, room)
        assert sorted(member_ids(replies[2]["members"])) == sorted(c.connection_id for c in cs)
        assert member_ids(replies[0]["members"]) == [cs[0].connection_id]


async def test_presence_join_and_leave_go_to_others_only(server, room):
    async with connect(server) as a, connect(server) as b:
        await a.request({"type": "join", "room": room}, expect_type="joined")
        await b.request({"type": "join", "room": room}, expect_type="joined")
        pj = await a.expect("presence_join", room=room)
        assert_member(pj["member"], b)
        own = [m for m in await b.barrier() if m.get("type") == "presence_join"]
        assert not own, "the joiner must not get its own presence_join"

        left = await b.request({"type": "leave", "room": room}, expect_type="left")
        assert left["room"] == room
        pl = await a.expect("presence_leave", room=room)
        assert pl["member"]["connection_id"] == b.connection_id
        assert not [m for m in await b.barrier() if m.get("type") == "presence_leave"]
        # b is no longer a member (§11: room-scoped requests need membership).
        await b.request_error({"type": "publish", "room": room, "data": 1}, "NOT_IN_ROOM")


async def test_closing_connection_sends_presence_leave(server, room):
    async with connect(server) as a:
        await a.request({"type": "join", "room": room}, expect_type="joined")
        async with connect(server) as b:
            await b.request({"type": "join", "room": room}, expect_type="joined")
            await a.expect("presence_join", room=room)
        pl = await a.expect("presence_leave", room=room)
        assert pl["member"]["connection_id"] == b.connection_id


# -- publish / message / ack / offsets ------------------------------------------------------


async def test_publish_reaches_every_member_including_sender(server, room):
    async with connect_many(server, 3) as (a, b, c):
        await join_all([a, b, c], room)
        ack = await a.request({"type": "publish", "room": room, "data": {"text": "hi"}, "id": "p1"}, expect_type="ack")
        assert ack["id"] == "p1"
        assert ack["room"] == room
        assert ack["offset"] == 1, "the first message of a new room has offset 1 (§11)"
        for x in (a, b, c):
            m = await x.expect("message", room=room)
            assert m["data"] == {"text": "hi"}
            assert m["offset"] == 1
            assert m["from"] == a.client_id
            assert m["connection_id"] == a.connection_id
            assert isinstance(m["ts"], int)
            assert "id" not in m, f"broadcasts never carry an id (§11): {m}"


async def test_publish_without_id_gets_no_ack(server, room):
    async with connect(server) as a:
        await a.request({"type": "join", "room": room}, expect_type="joined")
        await a.send({"type": "publish", "room": room, "data": 1})
        await a.expect("message", room=room)
        assert not [m for m in await a.barrier() if m.get("type") == "ack"]


async def test_exclude_self(server, room):
    async with connect(server) as a, connect(server) as b:
        await join_all([a, b], room)
        ack = await a.request({"type": "publish", "room": room, "data": "x", "exclude_self": True}, expect_type="ack")
        m = await b.expect("message", room=room)
        assert m["offset"] == ack["offset"]
        assert not [m for m in await a.barrier() if m.get("type") == "message"], "sender got its own message"


async def test_publish_any_json_data(server, room):
    payloads = ["text", 3, 2.5, True, None, [1, "two", {"three": 3}], {"nested": {"a": [1, 2]}}, ""]
    async with connect(server) as a, connect(server) as b:
        await join_all([a, b], room)
        for data in payloads:
            await a.request({"type": "publish", "room": room, "data": data}, expect_type="ack")
        got = [(await b.expect("message", room=room))["data"] for _ in payloads]
        assert got == payloads


async def test_offsets_increase_by_one_with_concurrent_publishers(server, room):
    per_publisher = 20
    async with connect_many(server, 4) as cs:
        await join_all(cs, room)
        publishers, listener = cs[:3], cs[3]

        async def publish_all(p):
            return [
                (await p.request({"type": "publish", "room": room, "data": i}, expect_type="ack"))["offset"]
                for i in range(per_publisher)
            ]

        acked = await asyncio.gather(*(publish_all(p) for p in publishers))
        total = per_publisher * len(publishers)
        assert sorted(o for offs in acked for o in offs) == list(range(1, total + 1))
        for offs in acked:
            assert offs == sorted(offs), "one publisher's offsets must increase"
        seen = [(await listener.expect("message", room=room))["offset"] for _ in range(total)]
        assert seen == list(range(1, total + 1)), "offsets must arrive strictly +1"


# -- presence request and metadata ----------------------------------------------------------


async def test_presence_paging(server, room):
    async with connect_many(server, 5) as cs:
        await join_all(cs, room)
        asker = cs[0]
        pages, cursor = [], None
        for _ in range(5):  # at most 5 pages of 2 for 5 members
            req = {"type": "presence", "room": room, "limit": 2}
            if cursor is not None:
                req["cursor"] = cursor
            page = await asker.request(req, expect_type="presence")
            assert page["room"] == room
            assert page["count"] == 5
            assert len(page["members"]) <= 2
            pages.append(page)
            cursor = page.get("next_cursor")
            if cursor is None:
                break
        assert [len(p["members"]) for p in pages] == [2, 2, 1]
        assert "next_cursor" not in pages[-1], "next_cursor is absent on the last page (§11)"
        ids = [i for p in pages for i in member_ids(p["members"])]
        assert sorted(ids) == sorted(c.connection_id for c in cs), "pages must cover every member once"


async def test_presence_default_lists_everyone(server, room):
    async with connect_many(server, 3) as cs:
        await join_all(cs, room)
        page = await cs[1].request({"type": "presence", "room": room}, expect_type="presence")
        assert page["count"] == 3
        assert sorted(member_ids(page["members"])) == sorted(c.connection_id for c in cs)
        assert "next_cursor" not in page


async def test_set_meta_visible_in_presence_and_rest(server, rest, room):
    async with connect(server) as a, connect(server) as b:
        ack = await a.request({"type": "set_meta", "meta": {"color": "red"}}, expect_type="ack")
        assert "id" in ack
        await a.request({"type": "join", "room": room, "meta": {"seat": 3}}, expect_type="joined")
        await b.request({"type": "join", "room": room}, expect_type="joined")
        page = await b.request({"type": "presence", "room": room}, expect_type="presence")
        member = next(m for m in page["members"] if m["connection_id"] == a.connection_id)
        # §11: a join's meta is merged over the connection meta for that room's member entry.
        assert member["meta"] == {"color": "red", "seat": 3}

        r = rest.get(f"/api/connections/{a.connection_id}")
        assert r.status_code == 200, r.text
        assert r.json()["connection"]["meta"] == {"color": "red"}


# -- params, triggers, sync ------------------------------------------------------------------


async def test_params_update_trigger_and_sync(server, rest, room):
    async with connect(server, client_id="ctl") as a, connect(server) as b:
        await join_all([a, b], room)
        param = rest.define_param(room, name="volume", value=0.5, min=0, max=1)
        assert param["name"] == "volume"
        await b.expect("update", room=room, param="volume")  # REST defines are broadcast too

        ack = await a.request({"type": "param", "room": room, "param": "volume", "value": 0.8}, expect_type="ack")
        assert ack["id"]
        upd = await b.expect("update", room=room, param="volume", value=0.8)
        assert upd["from"] == a.client_id

        await a.request_error({"type": "param", "room": room, "param": "volume", "value": 1.5}, "BAD_REQUEST")
        await a.request_error({"type": "param", "room": room, "param": "volume", "value": -0.1}, "BAD_REQUEST")

        state = await b.request({"type": "sync", "room": room}, expect_type="state")
        assert state["room"] == room
        assert {"name": "volume", "value": 0.8, "min": 0, "max": 1} in state["params"], state

        await a.request(
            {"type": "trigger", "room": room, "name": "flash", "data": {"n": 2}, "at": 12345}, expect_type="ack"
        )
        trig = await b.expect("trigger", room=room, name="flash")
        assert trig["data"] == {"n": 2}
        assert trig["at"] == 12345
        assert trig["from"] == a.client_id
        assert isinstance(trig["ts"], int)


async def test_rest_param_out_of_range_is_400(server, rest, room):
    rest.create_room(id=room)
    rest.define_param(room, name="level", value=5, min=0, max=10)
    r = rest.post(f"/api/rooms/{room}/params", json={"name": "level", "value": 11})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "BAD_REQUEST"


# -- rooms created over REST, codes, deletion, REST publish ---------------------------------


async def test_room_with_code(server, rest, room):
    created = rest.create_room(id=room, code="1234")
    assert created["id"] == room
    async with connect(server) as c:
        await c.request_error({"type": "join", "room": room}, "INVALID_ROOM")
        await c.request_error({"type": "join", "room": room, "code": "9999"}, "INVALID_ROOM")
        joined = await c.request({"type": "join", "room": room, "code": "1234"}, expect_type="joined")
        assert joined["room"] == room


async def test_generated_room_code_has_4_to_8_digits(rest, room):
    created = rest.create_room(id=room, code=True)
    code = created.get("code")
    assert isinstance(code, str) and code.isdigit() and 4 <= len(code) <= 8, created


async def test_rest_delete_room_closes_it_for_members(server, rest, room):
    rest.create_room(id=room)
    async with connect(server) as a, connect(server) as b:
        await join_all([a, b], room)
        r = rest.delete(f"/api/rooms/{room}")
        assert r.status_code == 204, r.text
        for c in (a, b):
            closed = await c.expect("closed", room=room)
            assert isinstance(closed["reason"], str) and closed["reason"]
        r = rest.get(f"/api/rooms/{room}")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "NOT_FOUND"
        await a.barrier()  # the connection itself stays open


async def test_rest_publish_comes_from_server(server, rest, room):
    async with connect(server) as a:
        await a.request({"type": "join", "room": room}, expect_type="joined")
        r = rest.post(f"/api/rooms/{room}/messages", json={"data": {"alert": 1}})
        assert r.status_code == 200, r.text
        assert r.json()["offset"] == 1
        m = await a.expect("message", room=room)
        assert m["data"] == {"alert": 1}
        assert m["from"] == "server"
        assert m["connection_id"] is None
        assert m["offset"] == 1


async def test_rest_get_room(server, rest, room):
    async with connect(server) as a:
        await a.request({"type": "join", "room": room}, expect_type="joined")
        r = rest.get(f"/api/rooms/{room}")
        assert r.status_code == 200, r.text
        info = r.json()["room"]
        assert info["id"] == room
        assert info["members_count"] == 1


# -- room limits ------------------------------------------------------------------------------


async def test_auto_create_off_gives_invalid_room(server, rest, room):
    async with connect(server, "/strict") as c:
        await c.request_error({"type": "join", "room": room}, "INVALID_ROOM")
        rest.create_room(id=room)
        await c.request({"type": "join", "room": room}, expect_type="joined")


async def test_room_full(server, room):
    """/limited: room_max_connections = 2 applies to rooms auto-created there (§7)."""
    async with connect_many(server, 3, "/limited") as (a, b, c):
        await join_all([a, b], room)
        await c.request_error({"type": "join", "room": room}, "ROOM_FULL")
        await c.barrier()


async def test_rest_room_max_connections(server, rest, room):
    rest.create_room(id=room, max_connections=1)
    async with connect(server) as a, connect(server) as b:
        await a.request({"type": "join", "room": room}, expect_type="joined")
        await b.request_error({"type": "join", "room": room}, "ROOM_FULL")


async def test_too_many_rooms_is_forbidden(server, room):
    """/limited: max_rooms_per_connection = 2."""
    async with connect(server, "/limited") as c:
        await c.request({"type": "join", "room": room + "-1"}, expect_type="joined")
        await c.request({"type": "join", "room": room + "-2"}, expect_type="joined")
        await c.request_error({"type": "join", "room": room + "-3"}, "FORBIDDEN")
        await c.barrier()
