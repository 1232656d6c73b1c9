"""Webhooks: the server POSTs each hooked event to a receiver run by this module, which
allows, rewrites, rejects, fails or stalls it depending on the event's data.

PROTOCOL §10 (webhook exchange: payload fields; 200 {} allow, 200 {"data"} rewrite,
403 {"error"} reject with that error; timeout or other status → fail_open decides, else
INTERNAL), §11 (a connection refused by the connect hook gets 403 at the upgrade).
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sbtest.harness import config_text
from sbtest.wsclient import connect

HOOK_TIMEOUT_S = 0.5  # hooks.timeout_ms in hooks.toml


class HookReceiver:
    """Records every hook call and answers according to `data.action`: allow (default),
    rewrite, reject, fail (500), stall (longer than the timeout). Calls whose room or
    client_id contains "NOPE" are rejected too (join and connect carry no data)."""

    def __init__(self):
        self.calls: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                body["_path"] = self.path
                with receiver.lock:
                    receiver.calls.append(body)
                status, answer = receiver.answer(body)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def answer(body: dict) -> tuple[int, dict]:
        data = body.get("data")
        action = data.get("action") if isinstance(data, dict) else None
        if "NOPE" in f"{body.get('room')} {body.get('client_id')}":
            action = "reject"
        if action == "rewrite":
            return 200, {"data": {"rewritten": True}}
        if action == "reject":
            return 403, {"error": {"code": "FORBIDDEN", "message": "rejected by hook"}}
        if action == "fail":
            return 500, {}
        if action == "stall":
            time.sleep(HOOK_TIMEOUT_S * 4)
        return 200, {}

    def wait_for(self, timeout: float = 5.0, **fields) -> dict:
        """The first recorded call whose fields match (polled, bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                for call in self.calls:
                    if all(call.get(k) == v for k, v in fields.items()):
                        return call
            if time.monotonic() > deadline:
                raise AssertionError(f"no hook call matching {fields}; calls: {self.calls[-5:]}")
            time.sleep(0.02)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def hooks():
    receiver = HookReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def server_config(hooks) -> str:
    return config_text("hooks.toml").replace("{HOOK_URL}", hooks.url)


async def test_publish_allowed_and_hook_payload(server, hooks, room):
    async with connect(server, "/hooked", client_id="hooky") as a, connect(server, "/hooked") as b:
        for c in (a, b):
            await c.request({"type": "join", "room": room}, expect_type="joined")
        await a.request({"type": "set_meta", "meta": {"k": "v"}}, expect_type="ack")
        await a.request({"type": "publish", "room": room, "data": {"text": "plain"}}, expect_type="ack")
        assert (await b.expect("message", room=room))["data"] == {"text": "plain"}
        call = hooks.wait_for(event="publish", room=room)
        assert call["_path"] == "/publish"
        assert call["endpoint"] == "/hooked"
        assert call["connection_id"] == a.connection_id
        assert call["client_id"] == "hooky"
        assert call["data"] == {"text": "plain"}
        assert call["meta"] == {"k": "v"}


async def test_publish_rewritten_by_hook(server, room):
    async with connect(server, "/hooked") as a, connect(server, "/hooked") as b:
        for c in (a, b):
            await c.request({"type": "join", "room": room}, expect_type="joined")
        await a.request({"type": "publish", "room": room, "data": {"action": "rewrite"}}, expect_type="ack")
        for c in (a, b):
            assert (await c.expect("message", room=room))["data"] == {"rewritten": True}


@pytest.mark.parametrize("action, code", [("reject", "FORBIDDEN"), ("fail", "INTERNAL"), ("stall", "INTERNAL")])
async def test_publish_refused_by_hook_is_not_delivered(server, room, action, code):
    async with connect(server, "/hooked") as a, connect(server, "/hooked") as b:
        for c in (a, b):
            await c.request({"type": "join", "room": room}, expect_type="joined")
        await a.request_error({"type": "publish", "room": room, "data": {"action": action}}, code)
        assert not [m for m in await b.barrier() if m.get("type") == "message"]
        await a.request({"type": "publish", "room": room, "data": "next"}, expect_type="ack")
        assert (await b.expect("message", room=room))["offset"] == 1, "a refused publish takes no offset"


@pytest.mark.parametrize("action", ["fail", "stall"])
async def test_fail_open_delivers_when_the_hook_fails(server, room, action):
    async with connect(server, "/hooked-open") as a, connect(server, "/hooked-open") as b:
        for c in (a, b):
            await c.request({"type": "join", "room": room}, expect_type="joined")
        await a.request({"type": "publish", "room": room, "data": {"action": action}}, expect_type="ack")
        assert (await b.expect("message", room=room))["data"] == {"action": action}


async def test_join_hook_sees_joins_and_can_reject(server, hooks, room):
    async with connect(server, "/hooked") as a:
        await a.request({"type": "join", "room": room}, expect_type="joined")
        assert hooks.wait_for(event="join", room=room)["connection_id"] == a.connection_id
        await a.request_error({"type": "join", "room": room + "-NOPE"}, "FORBIDDEN")
        await a.barrier()


async def test_connect_hook_refusal_is_403_at_upgrade(server, hooks):
    resp = server.upgrade("/hooked?client_id=NOPE-me")
    resp.assert_refused(403, "FORBIDDEN")
    hooks.wait_for(event="connect", client_id="NOPE-me")


async def test_direct_and_close_hooks(server, hooks):
    async with connect(server, "/hooked") as b:
        async with connect(server, "/hooked") as a:
            await a.request({"type": "direct", "to": b.connection_id, "data": {"d": 1}}, expect_type="ack")
            assert (await b.expect("direct"))["data"] == {"d": 1}
            call = hooks.wait_for(event="direct", connection_id=a.connection_id)
            assert call["to"] == b.connection_id
            closing = a.connection_id
        hooks.wait_for(event="close", connection_id=closing)
