"""Connection lifecycle: HTTP side of the upgrade, welcome, ping, leave, limits, heartbeat.

PROTOCOL §1 (transport), §3 (lifecycle), §6 (close codes), §9 (ready line), §11.
"""

import asyncio
import time

from sbtest import rawws
from sbtest.wsclient import connect, open_client


def now_ms() -> int:
    return int(time.time() * 1000)


def test_healthz(rest):
    r = rest.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


# -- HTTP side of the upgrade (§1, §3.5) ----------------------------------------------------


def test_plain_get_on_endpoint_is_400(rest):
    r = rest.get("/ws")
    assert r.status_code == 400, f"plain GET /ws -> {r.status_code} {r.text!r}"


def test_unsupported_websocket_version_is_426(server):
    resp = server.upgrade("/ws", {"Sec-WebSocket-Version": "8"})
    assert resp.status == 426, f"version 8 -> {resp.status} {resp.headers}"
    assert resp.headers.get("sec-websocket-version") == "13", resp.headers


async def test_admission_503_with_retry_after_at_max_connections(server):
    """/capped has max_connections = 2."""
    async with connect(server, "/capped"), connect(server, "/capped"):
        resp = await asyncio.to_thread(server.upgrade, "/capped")
        assert resp.status == 503, f"third connection on /capped -> {resp.status}"
        retry_after = resp.headers.get("retry-after")
        assert retry_after is not None and retry_after.strip().isdigit(), f"Retry-After: {retry_after!r}"
    # Once the two have gone, a new connection is admitted again (the server may need a
    # moment to notice both closes).
    deadline = time.monotonic() + 5
    while True:
        resp = await asyncio.to_thread(server.upgrade, "/capped")
        if resp.status == 101 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert resp.status == 101, f"after closing, /capped still answers {resp.status}"


# -- welcome (§3.1, §11) --------------------------------------------------------------------


async def test_welcome_fields(server):
    async with connect(server, "/ws", client_id="alice", name="Alice") as c:
        w = c.welcome
        assert isinstance(w["connection_id"], str) and w["connection_id"]
        assert w["client_id"] == "alice"
        assert isinstance(w["node_id"], str) and w["node_id"]
        assert w["path"] == "/ws"
        assert isinstance(w["server_time"], int) and abs(w["server_time"] - now_ms()) < 5000, w
        assert w["heartbeat_ms"] == 25000, "heartbeat_ms is the endpoint's ping interval (default 25000)"
        assert w["protocol"] == 1


async def test_client_id_defaults_to_connection_id(server):
    async with connect(server) as c:
        assert c.welcome["client_id"] == c.welcome["connection_id"]


async def test_heartbeat_ms_reflects_endpoint_ping_interval(server):
    async with connect(server, "/hb") as c:
        assert c.welcome["heartbeat_ms"] == 200
        assert c.welcome["path"] == "/hb"


async def test_connection_ids_are_unique(server):
    ids = set()
    for _ in range(3):
        async with connect(server, client_id="same") as a, connect(server, client_id="same") as b:
            ids |= {a.connection_id, b.connection_id}
    assert len(ids) == 6, "connection ids must never be reused"


async def test_json_is_default_without_subprotocol(server):
    async with connect(server, offer_subprotocol=False) as c:
        assert c.ws.subprotocol is None
        await c.barrier()  # JSON in text frames (checked by the client's decoder)


async def test_json_subprotocol_is_selected(server):
    async with connect(server) as c:
        assert c.ws.subprotocol == "switchboard.json"


# -- requests without a room (§4, §11) ------------------------------------------------------


async def test_ping_pong(server):
    async with connect(server) as c:
        pong = await c.request({"type": "ping", "client_time": 1234}, expect_type="pong")
        assert pong["client_time"] == 1234
        assert isinstance(pong["server_time"], int) and abs(pong["server_time"] - now_ms()) < 5000


async def test_integer_request_id_is_echoed(server):
    async with connect(server) as c:
        pong = await c.request({"type": "ping", "id": 42}, expect_type="pong")
        assert pong["id"] == 42


async def test_get_connection_id(server):
    async with connect(server) as c:
        reply = await c.request({"type": "get_connection_id"}, expect_type="connection_id")
        assert reply["connection_id"] == c.connection_id


async def test_leave_without_room_acks_then_closes_1000(server, room):
    async with connect(server) as a, connect(server) as b:
        await a.request({"type": "join", "room": room}, expect_type="joined")
        await b.request({"type": "join", "room": room}, expect_type="joined")
        await a.expect("presence_join", room=room)
        ack = await b.request({"type": "leave", "id": "bye"}, expect_type="ack")
        assert ack["id"] == "bye"
        code, _ = await b.expect_close()
        assert code == 1000
        leave = await a.expect("presence_leave", room=room)
        assert leave["member"]["connection_id"] == b.connection_id


async def test_message_over_max_message_size_closes_1009(server, room):
    """/limited has max_message_size = 1024 bytes."""
    async with connect(server, "/limited") as c:
        await c.request({"type": "join", "room": room}, expect_type="joined")
        await c.request({"type": "publish", "room": room, "data": "x" * 900}, expect_type="ack")
        await c.send({"type": "publish", "room": room, "data": "x" * 2000})
        code, _ = await c.expect_close()
        assert code == 1009


def test_invalid_utf8_text_frame_closes_1007(server):
    with rawws.RawWebSocket.connect(server.host, server.port, "/ws") as ws:
        assert ws.recv_message()[0] == rawws.OP_TEXT  # welcome
        ws.send_text(b'{"type":"ping","x":"\xff"}')
        close = ws.expect_close()
        assert close is not None and close.close_code == 1007, close


# -- heartbeat (§3.2): /hb pings every 200 ms, times out after 1000 ms -----------------------


async def test_silent_connection_is_closed_after_timeout(server):
    """A raw client that never answers pings nor sends anything is closed (close frame or
    TCP close; the code is not specified) about connection_timeout after its last sign of life."""

    def run() -> tuple[float, int]:
        with rawws.RawWebSocket.connect(server.host, server.port, "/hb") as ws:
            start = time.monotonic()
            pings = 0
            while True:
                try:
                    f = ws.recv_frame(timeout=max(0.0, start + 6 - time.monotonic()))
                except rawws.ConnectionClosed:
                    return time.monotonic() - start, pings
                except TimeoutError:
                    raise AssertionError(f"still open after 6 s ({pings} pings); connection_timeout is 1 s") from None
                if f.opcode == rawws.OP_PING:
                    pings += 1  # never answered
                elif f.opcode == rawws.OP_CLOSE:
                    return time.monotonic() - start, pings

    elapsed, pings = await asyncio.to_thread(run)
    assert pings >= 2, f"expected pings every 200 ms, got {pings} in {elapsed:.2f}s"
    assert 0.8 <= elapsed <= 3.0, f"closed after {elapsed:.2f}s; connection_timeout is 1 s"


async def test_answering_client_survives_past_timeout(server):
    async with connect(server, "/hb") as c:
        # Nothing to poll for: we assert that *nothing* happens for 2.5 connection timeouts
        # while the library answers the server's pings.
        await asyncio.sleep(2.5)
        await c.barrier()


# -- shutdown (§3.4, §9) ---------------------------------------------------------------------


async def test_sigterm_sends_closed_then_1001_and_exits_0(server_factory):
    srv = server_factory("e2e.toml")
    clients = [await open_client(srv) for _ in range(5)]
    try:
        for c in clients:
            await c.barrier()
        started = time.monotonic()
        srv.signal()
        retry_after = []
        for c in clients:
            closed = await c.expect("closed", timeout=10)
            assert closed.get("reason") == "shutdown", closed
            assert closed.get("room") is None, f"server shutdown's closed has no room: {closed}"
            assert isinstance(closed.get("retry_after_ms"), int) and closed["retry_after_ms"] >= 0, closed
            retry_after.append(closed["retry_after_ms"])
            code, _ = await c.expect_close(timeout=10)
            assert code == 1001
        rc = await asyncio.to_thread(srv.wait, max(0.1, started + 10 - time.monotonic()))
        assert rc == 0, f"exit code {rc}"
        assert len(set(retry_after)) > 1, f"retry_after_ms must be jittered per connection: {retry_after}"
    finally:
        for c in clients:
            await c.close()
