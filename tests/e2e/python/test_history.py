"""History and recovery on join.

PROTOCOL §4 (`history`), §5 (`joined` with `since`), §11 (history paging rules).
"""

from sbtest.wsclient import connect


async def publish_n(client, room: str, n: int) -> list[int]:
    return [
        (await client.request({"type": "publish", "room": room, "data": {"n": i}}, expect_type="ack"))["offset"]
        for i in range(1, n + 1)
    ]


async def test_history_since_and_limit(server, room):
    async with connect(server) as a:
        joined = await a.request({"type": "join", "room": room}, expect_type="joined")
        assert await publish_n(a, room, 5) == [1, 2, 3, 4, 5]

        h = await a.request({"type": "history", "room": room, "since": 2}, expect_type="history")
        assert h["room"] == room
        assert h["epoch"] == joined["epoch"]
        assert h["offset"] == 5
        assert [m["offset"] for m in h["messages"]] == [3, 4, 5]
        assert [m["data"] for m in h["messages"]] == [{"n": 3}, {"n": 4}, {"n": 5}]

        h = await a.request({"type": "history", "room": room, "since": 0, "limit": 2}, expect_type="history")
        assert [m["offset"] for m in h["messages"]] == [1, 2], "with since: oldest first, at most limit"

        h = await a.request({"type": "history", "room": room, "limit": 2}, expect_type="history")
        assert [m["offset"] for m in h["messages"]] == [4, 5], "without since: newest limit, oldest first"


async def test_join_with_since_recovers_missed_messages(server, room):
    async with connect(server) as a:
        joined = await a.request({"type": "join", "room": room}, expect_type="joined")
        await publish_n(a, room, 2)
        async with connect(server) as b:
            await b.request({"type": "join", "room": room}, expect_type="joined")
            await b.request({"type": "leave", "room": room}, expect_type="left")
            await publish_n(a, room, 3)  # offsets 3..5, missed by b
            since = {"offset": 2, "epoch": joined["epoch"]}
            rejoined = await b.request({"type": "join", "room": room, "since": since}, expect_type="joined")
            assert rejoined["offset"] == 5
            assert [m["offset"] for m in rejoined["recovered"]] == [3, 4, 5]
            assert rejoined["recovered_complete"] is True


async def test_join_with_wrong_epoch_is_not_complete(server, room):
    async with connect(server) as a:
        await a.request({"type": "join", "room": room}, expect_type="joined")
        await publish_n(a, room, 1)
        async with connect(server) as b:
            joined = await b.request(
                {"type": "join", "room": room, "since": {"offset": 0, "epoch": "not-the-epoch"}}, expect_type="joined"
            )
            assert joined["recovered_complete"] is False
