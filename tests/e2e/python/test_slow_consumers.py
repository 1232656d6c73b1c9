"""Slow-consumer policies (queue_size = 8 on the /slow* endpoints).

A stalled reader is a raw socket with a tiny SO_RCVBUF (set before connect, so the TCP
window stays small) that completes the handshake, joins, and then stops reading while a
publisher sends a bounded burst of ~1 KiB messages. Afterwards it reads everything.

PROTOCOL §5 (`gap`, per-room slow-consumer policy), §6 (4008), §11 (inclusive gap ranges,
conflate by `data.key`), DESIGN "every queue is bounded".
"""

import asyncio
import json
import time

from sbtest import rawws
from sbtest.wsclient import connect

BURST = 3000  # messages; ~3 MiB, far beyond queue_size + socket buffers
PAD = "x" * 1000
RCVBUF = 4096
LOCKSTEP_BATCH = 4  # < queue_size (8): a healthy reader never holds more than this queued
READ_TIMEOUT_S = 30.0


def stalled_member(server, path: str, room: str) -> rawws.RawWebSocket:
    ws = rawws.RawWebSocket.connect(server.host, server.port, path, rcvbuf=RCVBUF)
    welcome = read_json(ws)
    assert welcome["type"] == "welcome", welcome
    ws.send_text(json.dumps({"type": "join", "room": room, "id": "j"}))
    while True:
        m = read_json(ws)
        if m.get("id") == "j":
            assert m["type"] == "joined", m
            return ws


def read_json(ws: rawws.RawWebSocket, timeout: float = 5.0) -> dict:
    opcode, payload = ws.recv_message(timeout)
    assert opcode == rawws.OP_TEXT, f"expected a text frame, got opcode {opcode}"
    return json.loads(payload)


def read_until(ws: rawws.RawWebSocket, done, timeout: float = READ_TIMEOUT_S) -> list[dict]:
    """Read messages until `done(messages)` is true; bounded by `timeout` overall."""
    deadline = time.monotonic() + timeout
    got: list[dict] = []
    while not done(got):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"stalled reader not done after {timeout}s; last: {got[-3:]}"
        got.append(read_json(ws, remaining))
    return got


async def publish_burst(publisher, room: str, make_data) -> None:
    for seq in range(BURST):
        await publisher.send({"type": "publish", "room": room, "data": make_data(seq), "exclude_self": True})
    await publisher.barrier(timeout=30)  # the server has handled every publish


def covered(items: list[dict]) -> int:
    """Highest offset covered by the messages and gaps received so far."""
    top = 0
    for m in items:
        if m.get("type") == "message":
            top = max(top, m["offset"])
        elif m.get("type") == "gap":
            top = max(top, m["to_offset"])
    return top


async def test_drop_policy_sends_gap_for_exactly_the_missing_offsets(server, room):
    async with connect(server, "/slowdrop") as publisher:
        await publisher.request({"type": "join", "room": room}, expect_type="joined")
        with stalled_member(server, "/slowdrop", room) as stalled:
            await publish_burst(publisher, room, lambda seq: {"seq": seq, "pad": PAD})
            items = await asyncio.to_thread(read_until, stalled, lambda got: covered(got) >= BURST)

    offsets = [m["offset"] for m in items if m["type"] == "message"]
    gaps = [m for m in items if m["type"] == "gap"]
    assert gaps, f"no gap: all {len(offsets)} messages were delivered; the stall did not overflow the queue"
    # In arrival order, each message or gap continues exactly where the previous one ended,
    # so a client can fetch each gap with `history` when it sees it.
    expected_next = 1
    for m in (m for m in items if m["type"] in ("message", "gap")):
        start, end = (m["offset"], m["offset"]) if m["type"] == "message" else (m["from_offset"], m["to_offset"])
        assert start == expected_next, f"expected offset {expected_next} next, got {m['type']} {start}..{end}"
        expected_next = end + 1
    assert offsets == sorted(offsets), "delivered offsets must increase"
    seen: list[int] = list(offsets)
    for g in gaps:
        assert g["room"] == room, g
        assert 1 <= g["from_offset"] <= g["to_offset"] <= BURST, g
        seen += range(g["from_offset"], g["to_offset"] + 1)  # inclusive at both ends (§11)
    dupes = len(seen) - len(set(seen))
    assert dupes == 0, f"{dupes} offsets both delivered and reported missing (or in two gaps)"
    assert sorted(seen) == list(range(1, BURST + 1)), "messages + gaps must cover 1..N exactly"
    assert offsets[-1] == BURST, "drop removes the oldest queued messages, so the newest arrives"


async def test_disconnect_policy_closes_4008_and_others_get_everything(server, room):
    async with connect(server, "/slowdisc") as publisher, connect(server, "/slowdisc") as healthy:
        await publisher.request({"type": "join", "room": room}, expect_type="joined")
        await healthy.request({"type": "join", "room": room}, expect_type="joined")
        with stalled_member(server, "/slowdisc", room) as stalled:
            # Lockstep batches smaller than queue_size, so only the stalled reader can overflow.
            offsets = []
            for start in range(0, BURST, LOCKSTEP_BATCH):
                batch = range(start, min(start + LOCKSTEP_BATCH, BURST))
                for seq in batch:
                    await publisher.send(
                        {"type": "publish", "room": room, "data": {"seq": seq, "pad": PAD}, "exclude_self": True}
                    )
                for _ in batch:
                    offsets.append((await healthy.expect("message", room=room, timeout=10))["offset"])
            assert offsets == list(range(1, BURST + 1)), "a stalled member must not affect the others"
            close = await asyncio.to_thread(stalled.expect_close, READ_TIMEOUT_S)
            assert close is not None, "stalled connection was dropped without a close frame"
            assert close.close_code == 4008, f"close code {close.close_code} {close.close_reason!r}"


async def test_conflate_policy_keeps_newest_value_per_key(server, room):
    keys = 4
    async with connect(server, "/slowconflate") as publisher:
        await publisher.request({"type": "join", "room": room}, expect_type="joined")
        with stalled_member(server, "/slowconflate", room) as stalled:
            await publish_burst(publisher, room, lambda seq: {"key": f"k{seq % keys}", "seq": seq, "pad": PAD})
            final = {f"k{seq % keys}": seq for seq in range(BURST - keys, BURST)}

            def done(got):
                latest = {m["data"]["key"]: m["data"]["seq"] for m in got if m.get("type") == "message"}
                return latest == final

            items = await asyncio.to_thread(read_until, stalled, done)

    messages = [m for m in items if m["type"] == "message"]
    assert not [m for m in items if m["type"] == "gap"], "conflated messages (all with data.key) send no gap"
    assert len(messages) < BURST, "nothing was conflated: the stall did not overflow the queue"
    offsets = [m["offset"] for m in messages]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), "offsets must increase"
    for key in final:
        seqs = [m["data"]["seq"] for m in messages if m["data"]["key"] == key]
        assert seqs == sorted(seqs), f"values of {key} out of order"
        assert seqs[-1] == final[key], f"{key}: newest value {final[key]} not delivered last"
