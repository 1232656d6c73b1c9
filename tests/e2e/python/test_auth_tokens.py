"""JWT tokens over a connection's life: the Authorization header, room claims, `refresh`,
and expiry (a `token_expiring` warning, then close 4001).

Tokens are made with PyJWT. docs/protocol.md (Authentication), docs/security.md.
"""

import asyncio
import time

import jwt
import pytest
from sbtest.wsclient import TIMEOUT, Client, connect
from websockets.asyncio.client import connect as ws_connect

SERVER_CONFIG = "auth.toml"
SECRET = "e2e-test-secret"

# The shared test secret is short on purpose (it matches auth.toml); PyJWT warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:The HMAC key")


def token(sub: str = "user-1", ttl_s: float = 3600, **claims) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + ttl_s), **claims}, SECRET, algorithm="HS256")


async def test_the_token_may_come_in_an_authorization_header(server):
    ws = await ws_connect(
        server.ws_url("/auth"),
        additional_headers={"Authorization": f"Bearer {token('header-user')}"},
        open_timeout=TIMEOUT,
    )
    c = Client(ws, "json")
    try:
        welcome = await c.recv()
        assert welcome["type"] == "welcome" and welcome["client_id"] == "header-user"
    finally:
        await c.close()


async def test_room_claims_limit_joins_and_writes(server, room):
    t = token(rooms=[f"{room}:*"], publish=[f"{room}:chat"])
    async with connect(server, "/auth", token=t) as c:
        await c.request({"type": "join", "room": f"{room}:news"}, expect_type="joined")
        await c.request({"type": "join", "room": f"{room}:chat"}, expect_type="joined")
        err = await c.request_error({"type": "join", "room": f"other-{room}"}, "FORBIDDEN")
        assert f"other-{room}" in err["message"]
        # Joined but not allowed to write: publish, param and trigger are refused.
        await c.request_error({"type": "publish", "room": f"{room}:news", "data": 1}, "FORBIDDEN")
        await c.request_error({"type": "trigger", "room": f"{room}:news", "name": "go"}, "FORBIDDEN")
        ack = await c.request({"type": "publish", "room": f"{room}:chat", "data": 2}, expect_type="ack")
        assert ack["offset"] == 1
        await c.expect("message", room=f"{room}:chat", data=2)
        # Nothing reached the read-only room.
        hist = await c.request({"type": "history", "room": f"{room}:news"}, expect_type="history")
        assert hist["messages"] == []


async def test_a_server_side_join_is_not_limited_by_claims(server, room):
    server.rest.create_room(id=room)
    async with connect(server, "/auth", token=token(rooms=["elsewhere"])) as c:
        r = server.rest.post(f"/api/rooms/{room}/join", json={"connection_id": c.connection_id})
        assert r.status_code == 200, r.text
        await c.expect("joined", room=room)


async def test_expiring_token_gets_a_warning_then_close_4001(server):
    ttl = 3
    async with connect(server, "/authwarn", token=token(ttl_s=ttl)) as c:
        warning = await c.expect("token_expiring", timeout=ttl + 2)
        assert 0 < warning["expires_in_ms"] <= 1500 + 50, warning
        assert isinstance(warning["expires_at"], int)
        code, reason = await c.expect_close(timeout=ttl + 3)
        assert code == 4001, (code, reason)
        assert "expired" in reason


async def test_a_token_expiring_within_the_warning_is_warned_at_once(server):
    async with connect(server, "/authwarn", token=token(ttl_s=1.2)) as c:
        warning = await c.expect("token_expiring", timeout=1)
        assert warning["expires_in_ms"] <= 1500
        code, _ = await c.expect_close(timeout=4)
        assert code == 4001


async def test_refresh_keeps_the_connection_open_past_the_old_expiry(server, room):
    ttl = 3
    old_exp = int(time.time() + ttl)
    async with connect(server, "/authwarn", token=token(ttl_s=ttl)) as c:
        await c.request({"type": "join", "room": room}, expect_type="joined")
        await c.expect("token_expiring", timeout=ttl + 2)
        ack = await c.request({"type": "refresh", "token": token(ttl_s=3600)})
        assert ack["type"] == "ack", ack
        # Past the old expiry (whole seconds in a JWT) the connection still works.
        await asyncio.sleep(max(0.0, old_exp + 1 - time.time()))
        await c.request({"type": "publish", "room": room, "data": "still here"}, expect_type="ack")
        await c.expect("message", room=room, data="still here")
        assert not [m for m in c.backlog if m.get("type") == "token_expiring"], c.backlog


async def test_refresh_can_widen_room_permissions(server, room):
    async with connect(server, "/auth", token=token(rooms=["nothing"])) as c:
        await c.request_error({"type": "join", "room": room}, "FORBIDDEN")
        await c.request({"type": "refresh", "token": token(rooms=[room])}, expect_type="ack")
        await c.request({"type": "join", "room": room}, expect_type="joined")


async def test_bad_refreshes_are_refused_and_the_connection_goes_on(server):
    async with connect(server, "/auth", token=token("user-1")) as c:
        await c.request_error({"type": "refresh", "token": "not-a-jwt"}, "UNAUTHORIZED")
        await c.request_error({"type": "refresh", "token": token("user-1", ttl_s=-60)}, "UNAUTHORIZED")
        err = await c.request_error({"type": "refresh", "token": token("someone-else")}, "UNAUTHORIZED")
        assert "subject" in err["message"]
        await c.request({"type": "ping"}, expect_type="pong")


async def test_refresh_on_an_endpoint_without_auth_is_forbidden(server):
    async with connect(server, "/ws") as c:
        await c.request_error({"type": "refresh", "token": token()}, "FORBIDDEN")


async def test_anonymous_connections_on_optional_auth_have_no_room_limits(server, room):
    async with connect(server, "/authopt", client_id="anon") as c:
        await c.request({"type": "join", "room": room}, expect_type="joined")
        await c.request({"type": "publish", "room": room, "data": 1}, expect_type="ack")
