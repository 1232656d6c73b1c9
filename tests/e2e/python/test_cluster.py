"""Cluster mode (docs/cluster.md): several `switchboard` processes sharing one private
`redis-server`, driven by `websockets` clients and plain HTTP.

Every node is a separate process started by the shared harness (`sbtest.harness.Server`:
`--listen 127.0.0.1:0 --store memory --config <tmp>/config.toml`) with `--node-id` and
`--redis`, and counts as started once `/readyz` answers 200. The module's two nodes are
shared by its tests (each test uses its own rooms and client ids); the dead-node test starts
a cluster of its own (another key prefix on the same Redis) because it kills one of them.

PROTOCOL §4, §5 (joined, message offsets, presence, direct), §7, §8, §9.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from sbtest.fixtures import ServerFactory
from sbtest.harness import Server
from sbtest.wsclient import Client, connect, open_client

if shutil.which("redis-server") is None:
    pytest.skip(
        "redis-server is not on PATH (scripts/test installs it): cluster tests skipped",
        allow_module_level=True,
    )

REDIS_START_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 15.0
# node_ttl_ms 1.5 s + heartbeat_ms 0.3 s: a killed node is reaped in about 2 s.
DEAD_NODE_TIMEOUT_S = 15.0
# Messages crossing nodes go through Redis pub/sub; allow more than a local round trip.
WAIT = 10.0


def cluster_config(prefix: str | None = None) -> str:
    text = "shutdown_drain_ms = 200\n\n[cluster]\nheartbeat_ms = 300\nnode_ttl_ms = 1500\n"
    if prefix:
        text += f'prefix = "{prefix}"\n'
    return text


def uid(prefix: str) -> str:
    """A client id unique to this run (directs route by client id across nodes)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.settimeout(1.0)
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A private `redis-server` without persistence, on a free port."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log_path = workdir / "redis.log"

    def start(self) -> RedisServer:
        # The free port may be taken between probing and binding: try a few.
        for _ in range(3):
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
                    + ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            deadline = time.monotonic() + REDIS_START_TIMEOUT_S
            while time.monotonic() < deadline and self.proc.poll() is None:
                if redis_ping(self.port):
                    return self
                time.sleep(0.05)
            self.stop()
        raise RuntimeError(f"redis-server did not answer PING:\n{self.log_path.read_text()[-2000:]}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class Cluster(ServerFactory):
    """Switchboard nodes on one Redis. A ServerFactory, so that the conftest hook attaches
    every node's log to a failing test's report."""

    def __init__(self, tmp_path: Path, redis: RedisServer, prefix: str | None = None):
        super().__init__(tmp_path)
        self.redis = redis
        self.prefix = prefix

    def node(self, node_id: str) -> Server:
        srv = Server(
            cluster_config(self.prefix),
            self.tmp_path / node_id,
            ("--node-id", node_id, "--redis", self.redis.url),
            store="memory",
        )
        self.servers.append(srv)  # stopped by stop_all() even if it fails to start
        srv.start()
        wait_ready(srv)
        return srv


def wait_ready(srv: Server, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not srv.running:
            raise RuntimeError(f"node exited with {srv.proc.returncode}:\n{srv.log_tail()}")
        try:
            r = requests.get(srv.http_url + "/readyz", timeout=2)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text}"
        except requests.RequestException as e:
            last = repr(e)
        time.sleep(0.05)
    raise TimeoutError(f"/readyz of {srv.http_url} not 200 within {timeout}s (last: {last}):\n{srv.log_tail()}")


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis(tmp_path_factory) -> RedisServer:
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield srv.start()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def cluster_nodes(redis, tmp_path_factory) -> list[Server]:
    """Two nodes, n1 and n2, shared by the module's tests. (A list rather than the Cluster,
    so that the conftest hook reports each node's log once, through n1 and n2.)"""
    c = Cluster(tmp_path_factory.mktemp("cluster"), redis)
    try:
        yield [c.node("n1"), c.node("n2")]
    finally:
        c.stop_all()


@pytest.fixture
def n1(cluster_nodes) -> Server:
    return cluster_nodes[0]


@pytest.fixture
def n2(cluster_nodes) -> Server:
    return cluster_nodes[1]


@pytest.fixture
def own_cluster(redis, tmp_path) -> Cluster:
    """A cluster owned by one test (its own key prefix on the module's Redis)."""
    c = Cluster(tmp_path / "own", redis, prefix=f"t{uuid.uuid4().hex[:8]}")
    try:
        yield c
    finally:
        c.stop_all()


# -- client helpers ---------------------------------------------------------------------------


async def join(c: Client, room: str, **extra) -> dict:
    return await c.request({"type": "join", "room": room, **extra}, expect_type="joined", timeout=WAIT)


async def publish(c: Client, room: str, data) -> int:
    ack = await c.request({"type": "publish", "room": room, "data": data}, expect_type="ack", timeout=WAIT)
    return ack["offset"]


async def messages(c: Client, room: str, n: int) -> list[dict]:
    """The next `n` `message`s of `room`, in arrival order."""
    return [await c.expect("message", room=room, timeout=WAIT) for _ in range(n)]


async def expect_presence(watcher: Client, room: str, kind: str, who: Client, timeout: float = WAIT) -> dict:
    """The next `presence_join` / `presence_leave` of `room` at `watcher`, which must be about `who`."""
    event = await watcher.expect(kind, room=room, timeout=timeout)
    member = event["member"]
    assert (member["connection_id"], member["client_id"]) == (who.connection_id, who.client_id), (
        f"{watcher.client_id} on {watcher.welcome['node_id']} expected {kind} of {who.client_id}, got {event}"
    )
    return member


def summary(msgs: list[dict]) -> list[tuple]:
    return [(m["offset"], m["from"], m["connection_id"], m["data"]) for m in msgs]


def rest_ok(srv: Server, method: str, path: str, status: int = 200, json=None) -> dict:
    r = srv.rest.request(method, path, json=json)
    assert r.status_code == status, f"{method} {path} on {srv.http_url} -> {r.status_code} {r.text}"
    return r.json() if r.content else {}


async def wait_members_count(srv: Server, room: str, n: int, timeout: float = WAIT) -> None:
    """Wait until `GET /api/rooms/{room}` on `srv` counts `n` members. The count is read
    from Redis, so a node that starts serving the room then sees them. (`srv` must know
    the room: an auto-created room is 404 on a node that never had it.)"""
    deadline = time.monotonic() + timeout
    while True:
        r = await asyncio.to_thread(srv.rest.get, f"/api/rooms/{room}")
        if r.status_code == 200 and r.json()["room"]["members_count"] == n:
            return
        assert time.monotonic() < deadline, f"members_count of {room} never {n}: {r.status_code} {r.text}"
        await asyncio.sleep(0.02)


# -- 1. one order, one numbering ----------------------------------------------------------------


async def test_publishes_from_two_nodes_reach_every_member_in_one_order(n1, n2, room):
    per_publisher = 25
    async with (
        connect(n1, client_id=uid("pub1")) as p1,
        connect(n2, client_id=uid("pub2")) as p2,
        connect(n1, client_id=uid("obs1")) as o1,
        connect(n2, client_id=uid("obs2")) as o2,
    ):
        assert p1.welcome["node_id"] == "n1" and p2.welcome["node_id"] == "n2", (p1.welcome, p2.welcome)
        clients = [p1, p2, o1, o2]
        for c in clients:
            assert (await join(c, room))["offset"] == 0

        async def pipeline(p: Client, tag: str) -> list[str]:
            ids = []
            for i in range(per_publisher):
                ids.append(f"{tag}{i}")
                await p.send({"type": "publish", "id": ids[-1], "room": room, "data": {"by": tag, "i": i}})
            return ids

        ids1, ids2 = await asyncio.gather(pipeline(p1, "a"), pipeline(p2, "b"))
        acked: dict[tuple[str, int], int] = {}
        for p, tag, ids in ((p1, "a", ids1), (p2, "b", ids2)):
            for i, rid in enumerate(ids):
                ack = await p.expect(id=rid, timeout=WAIT)
                assert ack["type"] == "ack", f"publish {rid} refused: {ack}"
                acked[(tag, i)] = ack["offset"]
        total = 2 * per_publisher
        assert sorted(acked.values()) == list(range(1, total + 1)), f"acked offsets not unique and dense: {acked}"

        seen = {c.connection_id: summary(await messages(c, room, total)) for c in clients}
        reference = seen[o1.connection_id]
        assert [s[0] for s in reference] == list(range(1, total + 1)), "offsets grow by 1 from 1"
        for c in clients:
            assert seen[c.connection_id] == reference, (
                f"{c.client_id} on {c.welcome['node_id']} saw another sequence than {o1.client_id} on n1"
            )
        # Each message is numbered as its publisher's ack said, and carries its publisher.
        for offset, sender, conn, data in reference:
            publisher = p1 if data["by"] == "a" else p2
            assert acked[(data["by"], data["i"])] == offset, (offset, data)
            assert (sender, conn) == (publisher.client_id, publisher.connection_id)
        # One connection's publishes keep their order.
        for tag in ("a", "b"):
            assert [d["i"] for _, _, _, d in reference if d["by"] == tag] == list(range(per_publisher))
        for c in clients:
            assert not [m for m in await c.barrier() if m.get("type") == "message"], "more messages than published"


# -- 2. recovery on another node ----------------------------------------------------------------


@pytest.mark.parametrize("node2_serving", [False, True], ids=["node2-cold", "node2-serving"])
async def test_recovery_after_moving_to_another_node(n1, n2, room, node2_serving):
    """A client leaves node 1, misses messages, rejoins on node 2 with `since` and gets
    exactly what it missed, then the live stream without duplicates. node2-cold: node 2 has
    no member in the room (reads it from Redis at the join); node2-serving: it has one, so
    it answers from what it received over pub/sub."""
    who = uid("mover")
    async with connect(n1, client_id=uid("pub")) as pub, connect(n2, client_id=uid("watch")) as watcher:
        await join(pub, room)
        if node2_serving:
            await join(watcher, room)
        mover = await open_client(n1, client_id=who, timeout=WAIT)
        try:
            first = await join(mover, room)
            epoch = first["epoch"]
            seen_before = [await publish(pub, room, {"n": i}) for i in range(5)]
            got = await messages(mover, room, 5)
            assert [m["offset"] for m in got] == seen_before == [1, 2, 3, 4, 5]
            last_seen = got[-1]["offset"]
        finally:
            await mover.close()

        missed = [await publish(pub, room, {"n": i}) for i in range(5, 15)]
        assert missed == list(range(6, 16))
        if node2_serving:
            # Node 2 has received them all (an ack on node 1 says nothing of when node 2
            # gets the message over pub/sub).
            got = await messages(watcher, room, missed[-1])
            assert [m["offset"] for m in got] == list(range(1, missed[-1] + 1))

        async with connect(n2, client_id=who) as back:
            assert back.welcome["node_id"] == "n2"
            joined = await join(back, room, since={"offset": last_seen, "epoch": epoch})
            assert joined["epoch"] == epoch, joined
            assert joined["offset"] == missed[-1], joined
            assert joined["recovered_complete"] is True, joined
            recovered = joined["recovered"]
            assert [m["offset"] for m in recovered] == missed, f"recovered {summary(recovered)}"
            assert [m["data"] for m in recovered] == [{"n": i} for i in range(5, 15)]
            assert all(m["room"] == room and m["from"] == pub.client_id for m in recovered), recovered
            assert all(m["connection_id"] == pub.connection_id for m in recovered), recovered

            # Live messages follow, nothing recovered comes again.
            live = await publish(pub, room, {"n": "live"})
            assert live == missed[-1] + 1
            nxt = await back.expect("message", room=room, timeout=WAIT)
            assert (nxt["offset"], nxt["data"]) == (live, {"n": "live"}), "first message after joined"
            dup = [m for m in back.backlog + await back.barrier() if m.get("type") == "message"]
            assert not dup, f"duplicates after recovery: {summary(dup)}"

        if node2_serving:
            assert [m["offset"] for m in await messages(watcher, room, 1)] == [live]


# -- 3. presence across nodes -------------------------------------------------------------------


async def test_presence_spans_nodes(n1, n2, room):
    async with (
        connect(n1, client_id=uid("alice"), name="Alice") as a,
        connect(n2, client_id=uid("bob"), name="Bob") as b,
        connect(n1, client_id=uid("carol")) as c,
        connect(n2, client_id=uid("dave")) as d,
    ):
        ja = await join(a, room)
        assert ja["members_count"] == 1, ja
        # `joined` is sent before the member is written to Redis: wait until it is there,
        # so that node 2, not serving the room yet, reads it at b's join.
        await wait_members_count(n1, room, 1)

        jb = await join(b, room, meta={"seat": 2})
        assert jb["members_count"] == 2, jb
        assert {m["connection_id"] for m in jb["members"]} == {a.connection_id, b.connection_id}, jb
        alice = next(m for m in jb["members"] if m["connection_id"] == a.connection_id)
        assert (alice["client_id"], alice["name"]) == (a.client_id, "Alice"), alice
        pj = await a.expect("presence_join", room=room, timeout=WAIT)
        member = pj["member"]
        assert (member["connection_id"], member["client_id"], member["name"]) == (b.connection_id, b.client_id, "Bob")
        assert member["meta"] == {"seat": 2} and isinstance(member["joined_at"], int), member

        # Nodes serving a room answer `joined` from their cache of the other nodes' members,
        # kept by presence changes over pub/sub: each join below comes after the node it
        # goes to has shown (by a presence_join to its member) that it knows the previous one.
        jc = await join(c, room)  # n1 told a of b above
        assert jc["members_count"] == 3, jc
        await expect_presence(a, room, "presence_join", c)
        await expect_presence(b, room, "presence_join", c)
        jd = await join(d, room)
        assert jd["members_count"] == 4, jd
        assert {m["connection_id"] for m in jd["members"]} == {x.connection_id for x in (a, b, c, d)}
        for watcher in (a, b, c):
            await expect_presence(watcher, room, "presence_join", d)

        # `presence` on either node, and the REST presence, list all four.
        for x in (a, b):
            p = await x.request({"type": "presence", "room": room}, expect_type="presence", timeout=WAIT)
            assert p["count"] == 4, p
            assert {m["connection_id"] for m in p["members"]} == {y.connection_id for y in (a, b, c, d)}, p
        body = rest_ok(n2, "GET", f"/api/rooms/{room}/presence")
        assert {m["connection_id"] for m in body["members"]} == {y.connection_id for y in (a, b, c, d)}, body

        # A leave on node 2 reaches node 1's members and the other member on node 2.
        await b.request({"type": "leave", "room": room}, expect_type="left", timeout=WAIT)
        for watcher in (a, c, d):
            await expect_presence(watcher, room, "presence_leave", b)
        # A connection closed on node 1 leaves everywhere too.
        await a.close()
        for watcher in (c, d):
            await expect_presence(watcher, room, "presence_leave", a)
        p = await d.request({"type": "presence", "room": room}, expect_type="presence", timeout=WAIT)
        assert {m["connection_id"] for m in p["members"]} == {c.connection_id, d.connection_id}, p
        jb2 = await join(b, room)
        assert jb2["members_count"] == 3, jb2
        for x in (b, c, d):
            stray = [m for m in await x.barrier() if m.get("type") in ("presence_join", "presence_leave")]
            assert all(m["member"]["connection_id"] == b.connection_id for m in stray), stray


# -- 4. directs across nodes --------------------------------------------------------------------


async def test_direct_to_a_client_on_another_node(n1, n2):
    bob_id = uid("bob")
    async with (
        connect(n1, client_id=uid("alice")) as a,
        connect(n2, client_id=bob_id) as b,
        connect(n1, client_id=bob_id) as b_local,
    ):
        # By client id: every connection of that client, on either node.
        await a.request({"type": "direct", "to": bob_id, "data": {"hi": 1}}, expect_type="ack", timeout=WAIT)
        for x in (b, b_local):
            d = await x.expect("direct", timeout=WAIT)
            assert (d["from"], d["connection_id"], d["data"]) == (a.client_id, a.connection_id, {"hi": 1}), d
            assert isinstance(d["ts"], int), d

        # By connection id: only that connection.
        await a.request({"type": "direct", "to": b.connection_id, "data": "just you"}, expect_type="ack", timeout=WAIT)
        d = await b.expect("direct", timeout=WAIT)
        assert (d["from"], d["data"]) == (a.client_id, "just you"), d
        assert not [m for m in await b_local.barrier() if m.get("type") == "direct"]

        # And back, node 2 to node 1.
        await b.request({"type": "direct", "to": a.client_id, "data": "back"}, expect_type="ack", timeout=WAIT)
        d = await a.expect("direct", timeout=WAIT)
        assert (d["from"], d["connection_id"], d["data"]) == (bob_id, b.connection_id, "back"), d

        await a.request_error({"type": "direct", "to": uid("nobody"), "data": 1}, "NOT_FOUND", timeout=WAIT)


# -- 5. room definitions shared through Redis; routed REST joins ----------------------------------


async def test_room_created_on_one_node_is_enforced_on_another(n1, n2, room):
    code = str(uuid.uuid4().int % 900000 + 100000)
    made = rest_ok(
        n1, "POST", "/api/rooms", 201, json={"id": room, "name": "Locked", "code": code, "max_connections": 1}
    )["room"]
    assert made["id"] == room and made["max_connections"] == 1, made

    listed = rest_ok(n2, "GET", "/api/rooms")
    assert room in [r["id"] for r in listed["rooms"]], f"GET /api/rooms on n2 lacks {room}: {listed}"
    one = rest_ok(n2, "GET", f"/api/rooms/{room}")["room"]
    assert (one["name"], one["max_connections"]) == ("Locked", 1), one

    async with (
        connect(n2, client_id=uid("bob")) as b,
        connect(n2, client_id=uid("carol")) as c,
        connect(n1, client_id=uid("alice")) as a,
    ):
        await b.request_error({"type": "join", "room": room}, "INVALID_ROOM", timeout=WAIT)
        wrong = "0000" if code != "0000" else "1111"
        await b.request_error({"type": "join", "room": room, "code": wrong}, "INVALID_ROOM", timeout=WAIT)
        joined = await join(b, room, code=code)
        assert joined["room"] == room and joined["members_count"] == 1, joined

        # The limit counts members of every node (once b's membership reached Redis:
        # `joined` is sent before that).
        await wait_members_count(n1, room, 1)
        await a.request_error({"type": "join", "room": room, "code": code}, "ROOM_FULL", timeout=WAIT)

        # A REST join on node 1 of a connection held by node 2 answers with node 2's refusal.
        r = n1.rest.post(f"/api/rooms/{room}/join", json={"connection_id": c.connection_id})
        assert r.status_code == 409, f"routed REST join into a full room -> {r.status_code} {r.text}"
        assert r.json()["error"]["code"] == "ROOM_FULL", r.text
        r = n1.rest.post(f"/api/rooms/{room}.nowhere/join", json={"connection_id": c.connection_id})
        assert r.status_code == 404, f"routed REST join into an unknown room -> {r.status_code} {r.text}"
        assert r.json()["error"]["code"] == "NOT_FOUND", r.text
        assert not [m for m in await c.barrier() if m.get("type") == "joined"], "refused joins sent `joined`"

        # ... and with its success, which the connection sees as `joined`.
        open_room = f"{room}.open"
        rest_ok(n1, "POST", "/api/rooms", 201, json={"id": open_room})
        body = rest_ok(n1, "POST", f"/api/rooms/{open_room}/join", json={"connection_id": c.connection_id})
        assert body.get("joined") is True, body
        j = await c.expect("joined", room=open_room, timeout=WAIT)
        assert [m["connection_id"] for m in j["members"]] == [c.connection_id], j


# -- 6. a node killed with SIGKILL --------------------------------------------------------------


async def test_killed_node_members_leave_presence_everywhere(own_cluster, room):
    k1 = own_cluster.node("k1")
    k2 = own_cluster.node("k2")
    k3 = own_cluster.node("k3")
    async with connect(k1, client_id=uid("a")) as a, connect(k3, client_id=uid("c")) as c:
        b = await open_client(k2, client_id=uid("b"), timeout=WAIT)
        try:
            await join(a, room)
            await join(c, room)
            await expect_presence(a, room, "presence_join", c)
            await wait_members_count(k1, room, 2)  # k2 does not serve the room yet: it reads Redis
            jb = await join(b, room)
            assert jb["members_count"] == 3, jb
            for x in (a, c):
                await expect_presence(x, room, "presence_join", b)

            k2.signal(signal.SIGKILL)
            k2.wait(5)
            started = time.monotonic()
            left = await asyncio.gather(
                a.expect("presence_leave", room=room, timeout=DEAD_NODE_TIMEOUT_S),
                c.expect("presence_leave", room=room, timeout=DEAD_NODE_TIMEOUT_S),
            )
            took = time.monotonic() - started
            for pl in left:
                assert (pl["member"]["connection_id"], pl["member"]["client_id"]) == (b.connection_id, b.client_id), pl
            assert took < DEAD_NODE_TIMEOUT_S, took
        finally:
            await b.close()  # its node is gone (or the test failed before killing it)

        for x in (a, c):
            p = await x.request({"type": "presence", "room": room}, expect_type="presence", timeout=WAIT)
            assert {m["connection_id"] for m in p["members"]} == {a.connection_id, c.connection_id}, p
        # The room keeps working between the surviving nodes.
        offset = await publish(a, room, "still here")
        m = await c.expect("message", room=room, timeout=WAIT)
        assert (m["offset"], m["data"]) == (offset, "still here")
