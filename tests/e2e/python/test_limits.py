"""Abuse cases from the outside: message floods, connection floods per address, REST
floods, oversized and slow request heads, silent connections, room exhaustion.

Each test starts its own server, because per-address limits are server-wide and every
test client connects from 127.0.0.1. docs/security.md describes each control.
"""

import asyncio
import socket
import time

import pytest
import requests
from sbtest import rawws
from sbtest.harness import Server
from sbtest.wsclient import connect, open_client
from websockets.exceptions import ConnectionClosed, InvalidStatus


@pytest.fixture
def start(tmp_path):
    """start(config_text) -> a running Server, stopped after the test."""
    servers: list[Server] = []

    def run(config: str) -> Server:
        srv = Server("shutdown_drain_ms = 200\n" + config, tmp_path / f"server{len(servers)}")
        servers.append(srv)
        return srv.start()

    yield run
    for s in servers:
        s.stop()


# -- messages per connection ------------------------------------------------------------------

RATE = """
[[endpoint]]
path = "/ws"
rate_limit.messages_per_second = 20
rate_limit.burst = 10
rate_limit.max_violations = 5
"""


async def test_a_flooding_client_gets_rate_limited_then_closed_4029_while_others_go_on(start, room):
    srv = start(RATE)
    async with connect(srv) as flooder, connect(srv) as calm:
        await flooder.request({"type": "join", "room": room}, expect_type="joined")
        await calm.request({"type": "join", "room": room}, expect_type="joined")
        # 200 publishes at once: the first 9 pass (the burst of 10, less the join), the
        # next 5 get RATE_LIMITED with their ids, then the connection is closed with 4029.
        try:
            for i in range(200):
                await flooder.send({"type": "publish", "room": room, "data": i, "id": f"p{i}"})
        except ConnectionClosed:
            pass  # closed while we were still sending: that is the point
        code, reason = await flooder.expect_close(timeout=5)
        assert code == 4029, (code, reason, flooder.backlog[-5:])
        errors = [m for m in flooder.backlog if m.get("type") == "error"]
        acks = [m for m in flooder.backlog if m.get("type") == "ack"]
        assert errors and all(e["code"] == "RATE_LIMITED" for e in errors), errors[:3]
        assert all(e.get("id", "").startswith("p") for e in errors), errors[:3]
        assert 9 <= len(acks) < 40, len(acks)
        assert 5 <= len(errors) < 40, len(errors)
        # The other member got exactly what passed, and is served normally throughout.
        acked = sorted(int(a["id"][1:]) for a in acks)
        delivered = [m["data"] for m in await calm.barrier() if m.get("type") == "message"]
        assert delivered == acked
        for _ in range(5):
            await calm.request({"type": "ping"}, expect_type="pong", timeout=1)
        await calm.request({"type": "publish", "room": room, "data": "calm"}, expect_type="ack")


async def test_a_client_within_its_rate_is_never_limited(start, room):
    srv = start(RATE)
    async with connect(srv) as c:
        await c.request({"type": "join", "room": room}, expect_type="joined")
        # 30 requests, each waiting for its reply, spread over ≥ 1.5 s at ≤ 20/s.
        started = time.monotonic()
        for i in range(30):
            await c.request({"type": "publish", "room": room, "data": i}, expect_type="ack")
            await asyncio.sleep(max(0.0, started + (i + 1) / 18 - time.monotonic()))


# -- connections per address -----------------------------------------------------------------


def test_connects_per_address_are_rate_limited(start):
    srv = start("[limits]\nconnects_per_ip_per_second = 1\nconnects_per_ip_burst = 3\n")
    statuses = [srv.upgrade("/ws").status for _ in range(4)]
    assert statuses[:3] == [101, 101, 101], statuses
    r = srv.upgrade("/ws")
    r.assert_refused(429, "RATE_LIMITED")
    assert int(r.headers["retry-after"]) >= 1
    # Other routes are not affected.
    assert requests.get(f"{srv.http_url}/healthz", timeout=5).status_code == 200


async def test_open_connections_per_address_are_capped(start):
    srv = start("[limits]\nmax_connections_per_ip = 2\n")
    async with connect(srv), connect(srv) as second:
        with pytest.raises(InvalidStatus) as refused:
            await open_client(srv)
        assert refused.value.response.status_code == 429
        await second.close()
        # The slot comes back once the server has seen the close.
        deadline = time.monotonic() + 5
        while True:
            try:
                third = await open_client(srv)
                break
            except InvalidStatus:
                assert time.monotonic() < deadline, "the closed connection's slot never came back"
                await asyncio.sleep(0.05)
        await third.close()


# -- REST -----------------------------------------------------------------------------------


def test_rest_calls_are_rate_limited_per_token(start):
    srv = start('api_token = "t0ken"\n[limits]\napi_requests_per_second = 1\napi_burst = 3\n')
    auth = {"Authorization": "Bearer t0ken"}
    got = [requests.get(f"{srv.http_url}/api/rooms", headers=auth, timeout=5).status_code for _ in range(4)]
    assert got[:3] == [200, 200, 200] and got[3] == 429, got
    r = requests.get(f"{srv.http_url}/api/rooms", headers=auth, timeout=5)
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "RATE_LIMITED"
    assert int(r.headers["Retry-After"]) >= 1
    # Callers without the token are counted per address, apart from the token's bucket:
    # wrong tokens get 401 until they too are limited (guessing the token is slowed down).
    wrong = [
        requests.get(f"{srv.http_url}/api/rooms", headers={"Authorization": "Bearer guess"}, timeout=5).status_code
        for _ in range(4)
    ]
    assert wrong == [401, 401, 401, 429], wrong
    assert requests.get(f"{srv.http_url}/healthz", timeout=5).status_code == 200


# -- CORS -------------------------------------------------------------------------------------

CORS = """
api_token = "t0ken"
[cors]
allowed_origins = ["https://app.example.com", "https://*.example.org"]
max_age_s = 120
"""


@pytest.mark.parametrize("origin", ["https://app.example.com", "https://x.example.org"])
def test_cors_preflight_is_answered_without_a_token(start, origin):
    srv = start(CORS)
    r = requests.options(
        f"{srv.http_url}/api/rooms",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
        timeout=5,
    )
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers["Access-Control-Allow-Origin"] == origin
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    allowed = r.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert r.headers["Access-Control-Max-Age"] == "120"
    # The real request still needs the token, and carries the CORS header either way.
    r = requests.get(f"{srv.http_url}/api/rooms", headers={"Origin": origin}, timeout=5)
    assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == origin
    r = requests.get(f"{srv.http_url}/api/rooms", headers={"Origin": origin, "Authorization": "Bearer t0ken"}, timeout=5)
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == origin


@pytest.mark.parametrize("origin", ["https://evil.com", "https://example.org", "http://app.example.com"])
def test_cors_refuses_other_origins(start, origin):
    srv = start(CORS)
    r = requests.options(
        f"{srv.http_url}/api/rooms",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        timeout=5,
    )
    assert "Access-Control-Allow-Origin" not in r.headers, dict(r.headers)


def test_without_cors_config_no_cors_headers_are_sent(start):
    srv = start("")
    r = requests.get(f"{srv.http_url}/api/rooms", headers={"Origin": "https://app.example.com"}, timeout=5)
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers


# -- request heads: size and time -------------------------------------------------------------


def test_an_oversized_request_head_is_refused_431(start):
    srv = start("[limits]\nmax_header_bytes = 8192\n")
    r = srv.upgrade("/ws", {"X-Padding": "a" * 20_000})
    assert r.status == 431, (r.status, r.body[:200])
    # A normal upgrade still works.
    assert srv.upgrade("/ws", {"X-Padding": "a" * 2_000}).status == 101


def _closed_within(sock: socket.socket, seconds: float) -> bytes:
    """Read until the server closes the socket; fails if it stays open `seconds`."""
    sock.settimeout(seconds)
    data = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            break
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"connection still open after {seconds}s (got {data[:100]!r})")


@pytest.mark.parametrize("sent", [b"", b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"], ids=["silent", "partial-head"])
def test_a_slow_or_silent_handshake_is_dropped(start, sent):
    srv = start("[limits]\nhandshake_timeout_ms = 500\n")
    with socket.create_connection((srv.host, srv.port), timeout=5) as s:
        started = time.monotonic()
        if sent:
            s.sendall(sent)
        _closed_within(s, 5)
        assert time.monotonic() - started >= 0.4


# -- idle before the first message --------------------------------------------------------------

FIRST = """
[[endpoint]]
path = "/ws"
first_message_timeout_ms = 500
"""


async def test_a_connection_that_never_speaks_is_closed_1008(start):
    srv = start(FIRST)
    async with connect(srv) as silent:
        code, reason = await silent.expect_close(timeout=5)
        assert code == 1008, (code, reason)


async def test_a_connection_that_speaks_in_time_stays(start, room):
    srv = start(FIRST)
    async with connect(srv) as c:
        await c.request({"type": "join", "room": room}, expect_type="joined")
        await asyncio.sleep(1.0)  # twice the first-message timeout
        await c.request({"type": "ping"}, expect_type="pong")


def test_raw_sockets_that_only_answer_pings_are_closed_too(start):
    srv = start(FIRST)
    with rawws.RawWebSocket.connect(srv.host, srv.port, "/ws") as ws:
        frame = ws.expect_close(timeout=5)
        assert frame is not None and frame.close_code == 1008


# -- rooms --------------------------------------------------------------------------------------


async def test_the_total_number_of_rooms_is_capped(start, room):
    srv = start("[limits]\nmax_rooms = 3\n")
    async with connect(srv) as c:
        for i in range(3):
            await c.request({"type": "join", "room": f"{room}-{i}"}, expect_type="joined")
        err = await c.request_error({"type": "join", "room": f"{room}-3"}, "FORBIDDEN")
        assert "rooms" in err["message"]
        # Existing rooms can still be joined.
        await c.request({"type": "join", "room": f"{room}-0"}, expect_type="joined")
    r = srv.rest.post("/api/rooms", json={"id": f"{room}-rest"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
