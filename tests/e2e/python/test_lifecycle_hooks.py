"""Lifecycle webhooks (docs/webhooks.md): room occupied/vacated, member joined/left per
client id, client online/offline after a grace period — signed, retried, deduplicated.

The receiver run by this module checks every signature (HMAC-SHA256 over
"<timestamp>.<raw body>") and answers 500 to the first attempt of any event about a room
or client whose name contains "FLAKY", so that retries can be observed.
"""

import asyncio
import hashlib
import hmac
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sbtest.harness import config_text
from sbtest.wsclient import connect, open_client

LIFECYCLE_SECRET = b"lifecycle-secret"  # webhooks.secret in lifecycle_hooks.toml
SYNC_SECRET = b"sync-secret"  # hooks.secret of /signed
GRACE_S = 0.6  # webhooks.offline_grace_ms
WAIT_S = 10.0


def signature_ok(secret: bytes, headers, raw: bytes) -> bool:
    """The receiver's side of docs/webhooks.md § Verifying signatures."""
    ts = headers.get("X-Switchboard-Timestamp")
    sig = headers.get("X-Switchboard-Signature", "")
    if ts is None or abs(time.time() - int(ts)) > 300:
        return False
    expected = hmac.new(secret, ts.encode() + b"." + raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(sig, "sha256=" + expected)


class Receiver:
    def __init__(self):
        self.deliveries: list[dict] = []  # every attempt, in arrival order
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.loads(raw)
                secret = LIFECYCLE_SECRET if self.path == "/events" else SYNC_SECRET
                entry = {
                    "path": self.path,
                    "body": body,
                    "signed": signature_ok(secret, self.headers, raw),
                    "attempt": int(self.headers.get("X-Switchboard-Attempt", "0")),
                    "event_header": self.headers.get("X-Switchboard-Event"),
                }
                with receiver.lock:
                    first_try = not any(d["body"].get("id") == body.get("id") for d in receiver.deliveries)
                    flaky = "FLAKY" in f"{body.get('room')} {body.get('client_id')}"
                    status = 500 if self.path == "/events" and flaky and first_try else 200
                    entry["status"] = status
                    receiver.deliveries.append(entry)
                payload = b"{}"
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
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def events(self, **fields) -> list[dict]:
        """Delivered (200) lifecycle event bodies matching `fields`, in arrival order."""
        with self.lock:
            return [
                d["body"]
                for d in self.deliveries
                if d["path"] == "/events" and d["status"] == 200 and all(d["body"].get(k) == v for k, v in fields.items())
            ]

    def wait_for(self, timeout: float = WAIT_S, **fields) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(**fields)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no delivered event matching {fields}; last: {self.deliveries[-5:]}")
            time.sleep(0.02)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def server_config(receiver) -> str:
    return config_text("lifecycle_hooks.toml").replace("{HOOK_URL}", receiver.url)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_room_and_member_events_count_clients_not_tabs(server, receiver, room):
    alice = unique("alice")
    async with (
        connect(server, client_id=alice) as tab1,
        connect(server, client_id=alice) as tab2,
        connect(server, client_id=unique("bob")) as bob,
    ):
        for c in (tab1, tab2, bob):
            await c.request({"type": "join", "room": room}, expect_type="joined")
        for c in (tab1, tab2, bob):
            await c.request({"type": "leave", "room": room}, expect_type="left")
        receiver.wait_for(event="room_vacated", room=room)
        # One shard delivers a room's events one by one, in order: by the time
        # room_vacated is in, everything before it is too.
        seen = [(e["event"], e["client_id"]) for e in receiver.events(room=room)]
        assert seen == [
            ("room_occupied", alice),
            ("member_joined", alice),
            ("member_joined", bob.client_id),
            ("member_left", alice),
            ("member_left", bob.client_id),
            ("room_vacated", bob.client_id),
        ]
        events = receiver.events(room=room)
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs) and len(set(e["id"] for e in events)) == len(events)
        joined = events[1]
        assert joined["connection_id"] == tab1.connection_id
        assert joined["endpoint"] == "/ws"
        assert joined["node_id"] == tab1.welcome["node_id"]
        with receiver.lock:
            attempts = [d for d in receiver.deliveries if d["body"].get("room") == room]
        assert all(d["signed"] for d in attempts), "every delivery carries a valid signature"
        assert all(d["event_header"] == d["body"]["event"] for d in attempts)


async def test_client_offline_once_after_its_last_tab_closes(server, receiver):
    carol = unique("carol")
    tab1 = await open_client(server, client_id=carol)
    tab2 = await open_client(server, client_id=carol)
    receiver.wait_for(event="client_online", client_id=carol)
    await tab1.close()
    last = tab2.connection_id
    await tab2.close()
    offline = receiver.wait_for(event="client_offline", client_id=carol)
    assert offline["connection_id"] == last
    assert offline["ts"] - offline["offline_since"] >= GRACE_S * 1000 * 0.9
    # Come back once more: a client's events are delivered in order, so when this
    # second online is in, a duplicate offline from the two tabs would have been too.
    async with connect(server, client_id=carol):
        deadline = time.monotonic() + WAIT_S
        while len(receiver.events(event="client_online", client_id=carol)) < 2:
            assert time.monotonic() < deadline, "second client_online not delivered"
            await asyncio.sleep(0.02)
    assert len(receiver.events(event="client_offline", client_id=carol)) == 1
    assert len(receiver.events(event="client_online", client_id=carol)) == 2


async def test_reconnect_within_grace_sends_no_offline(server, receiver):
    dave = unique("dave")
    first = await open_client(server, client_id=dave)
    receiver.wait_for(event="client_online", client_id=dave)
    await first.close()
    second = await open_client(server, client_id=dave)  # back well within the grace
    # Stay connected past the end of the first connection's grace period.
    await asyncio.sleep(GRACE_S * 2)
    last = second.connection_id
    await second.close()
    offline = receiver.wait_for(event="client_offline", client_id=dave)
    assert offline["connection_id"] == last, "the first close must not have been reported"
    assert len(receiver.events(event="client_offline", client_id=dave)) == 1
    assert len(receiver.events(event="client_online", client_id=dave)) == 1


async def test_failed_deliveries_are_retried_with_the_same_id(server, receiver):
    room = unique("FLAKY")
    async with connect(server) as c:
        await c.request({"type": "join", "room": room}, expect_type="joined")
        occupied = receiver.wait_for(event="room_occupied", room=room)
    with receiver.lock:
        attempts = [d for d in receiver.deliveries if d["body"].get("id") == occupied["id"]]
    assert [(d["attempt"], d["status"]) for d in attempts] == [(1, 500), (2, 200)]
    assert all(d["signed"] for d in attempts), "each attempt is signed afresh"
    metrics = server.rest.get("/metrics").text
    assert 'switchboard_webhook_lifecycle_events_total{outcome="retried"}' in metrics


async def test_sync_hooks_are_signed_too(server, receiver, room):
    async with connect(server, "/signed") as a:
        await a.request({"type": "join", "room": room}, expect_type="joined")
        await a.request({"type": "publish", "room": room, "data": 1}, expect_type="ack")
    with receiver.lock:
        calls = [d for d in receiver.deliveries if d["path"] == "/publish" and d["body"].get("room") == room]
    assert len(calls) == 1 and calls[0]["signed"]
