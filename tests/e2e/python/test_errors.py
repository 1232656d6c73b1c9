"""Every error path answers `error {id?, code, message}` and leaves the connection usable.

PROTOCOL §2 (envelope, ids), §5 (error codes, "an error never closes the connection"), §11.
"""

import pytest
from sbtest.wsclient import connect

LONG_ID = "i" * 65


async def expect_error_frame(client, frame: str, code: str, id=None) -> dict:
    await client.send_frame(frame)
    err = await client.expect("error")
    assert err["code"] == code, f"{frame!r} -> {err}"
    assert isinstance(err.get("message"), str) and err["message"], err
    if id is None:
        assert "id" not in err or err["id"] is None, f"{frame!r}: error must not carry an id: {err}"
    else:
        assert err.get("id") == id, f"{frame!r}: error must carry id {id!r}: {err}"
    await client.barrier()  # still usable
    return err


@pytest.mark.parametrize(
    "frame, id",
    [
        pytest.param('{"type": "ping", ', None, id="truncated-json"),
        pytest.param("not json at all", None, id="not-json"),
        pytest.param("[1, 2, 3]", None, id="json-array"),
        pytest.param('"ping"', None, id="json-string"),
        pytest.param('{"id": "no-type"}', "no-type", id="missing-type-keeps-id"),
        pytest.param('{"type": 7, "id": "t7"}', "t7", id="type-not-a-string"),
        pytest.param('{"type": "frobnicate", "id": "u1"}', "u1", id="unknown-type"),
        pytest.param('{"type": "join", "id": "m1"}', "m1", id="join-missing-room"),
        pytest.param('{"type": "join", "room": 5, "id": "m2"}', "m2", id="join-room-not-string"),
        pytest.param('{"type": "publish", "id": "m3"}', "m3", id="publish-missing-room"),
        pytest.param('{"type": "direct", "data": 1, "id": "m4"}', "m4", id="direct-missing-to"),
        pytest.param('{"type": "set_meta", "meta": "red", "id": "m5"}', "m5", id="meta-not-object"),
        pytest.param('{"type": "publish", "room": "r", "id": "m6"}', "m6", id="publish-missing-data"),
        pytest.param('{"type": "ping", "client_time": "noon", "id": "m7"}', "m7", id="client-time-not-number"),
        pytest.param('{"type": "ping", "id": {"x": 1}}', None, id="id-not-string-or-int"),
        pytest.param(f'{{"type": "ping", "id": "{LONG_ID}"}}', None, id="id-over-64-chars"),
        pytest.param(f'{{"type": "frobnicate", "id": "{LONG_ID}"}}', None, id="unknown-type-long-id"),
    ],
)
async def test_bad_request(server, frame, id):
    async with connect(server) as c:
        await expect_error_frame(c, frame, "BAD_REQUEST", id)


async def test_id_of_64_chars_is_accepted(server):
    async with connect(server) as c:
        pong = await c.request({"type": "ping", "id": "i" * 64}, expect_type="pong")
        assert pong["id"] == "i" * 64


async def test_unknown_fields_are_ignored(server):
    async with connect(server) as c:
        await c.request({"type": "ping", "extra": {"anything": [1]}}, expect_type="pong")


@pytest.mark.parametrize(
    "bad_room",
    ["", "has space", "slash/room", "ünïcode", "x" * 129, "semi;colon"],
    ids=["empty", "space", "slash", "unicode", "129-chars", "semicolon"],
)
async def test_malformed_room_id(server, bad_room):
    async with connect(server) as c:
        await c.request_error({"type": "join", "room": bad_room}, "BAD_REQUEST")
        await c.barrier()


async def test_longest_valid_room_id(server):
    room = "A-z_0.9:" * 16  # 128 chars of the allowed alphabet
    async with connect(server) as c:
        joined = await c.request({"type": "join", "room": room}, expect_type="joined")
        assert joined["room"] == room


ROOM_SCOPED = [
    {"type": "publish", "data": 1},
    {"type": "leave"},
    {"type": "presence"},
    {"type": "history"},
    {"type": "sync"},
    {"type": "param", "param": "p", "value": 1},
    {"type": "trigger", "name": "t"},
]


@pytest.mark.parametrize("request_", ROOM_SCOPED, ids=[r["type"] for r in ROOM_SCOPED])
async def test_not_in_room(server, room, request_):
    """§11: an existing room the connection has not joined → NOT_IN_ROOM."""
    async with connect(server) as owner, connect(server) as c:
        await owner.request({"type": "join", "room": room}, expect_type="joined")
        await c.request_error({**request_, "room": room}, "NOT_IN_ROOM")
        await c.barrier()


@pytest.mark.parametrize(
    "request_",
    [r for r in ROOM_SCOPED if r["type"] != "leave"],
    ids=[r["type"] for r in ROOM_SCOPED if r["type"] != "leave"],
)
async def test_unknown_room_in_room_scoped_request(server, room, request_):
    """§11: unknown room in a room-scoped request → INVALID_ROOM."""
    async with connect(server) as c:
        await c.request_error({**request_, "room": room + "-never-created"}, "INVALID_ROOM")
        await c.barrier()


@pytest.mark.parametrize(
    "request_",
    [{"type": "presence", "room": "x"}, {"type": "get_connection_id"}, {"type": "direct", "to": "someone", "data": 1}],
    ids=["presence", "get_connection_id", "direct"],
)
async def test_type_not_enabled_on_endpoint_is_forbidden(server, request_):
    """/limited: events = [join, leave, publish, ping]."""
    async with connect(server, "/limited") as c:
        await c.request_error(request_, "FORBIDDEN")
        await c.barrier()


async def test_many_errors_do_not_close_the_connection(server):
    async with connect(server) as c:
        for i in range(10):
            await c.request_error({"type": "frobnicate", "id": f"e{i}"}, "BAD_REQUEST")
        await c.barrier()


async def test_each_request_gets_exactly_one_reply(server, room):
    """§11: exactly one direct reply carries the request's id; broadcasts carry none."""
    async with connect(server) as c, connect(server) as other:
        requests = [
            {"type": "ping"},
            {"type": "join", "room": room},
            {"type": "publish", "room": room, "data": 1},
            {"type": "presence", "room": room},
            {"type": "history", "room": room},
            {"type": "sync", "room": room},
            {"type": "set_meta", "meta": {"a": 1}},
            {"type": "get_connection_id"},
            {"type": "direct", "to": other.connection_id, "data": 2},
            {"type": "leave", "room": room},
            {"type": "frobnicate"},
        ]
        ids = []
        for i, req in enumerate(requests):
            reply = await c.request({**req, "id": f"once-{i}"})
            ids.append(reply["id"])
        extra = [m for m in await c.barrier() if m.get("id") in ids]
        assert not extra, f"second replies: {extra}"
