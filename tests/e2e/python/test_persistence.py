"""Persistence across restarts, on real server processes sharing one store.

Every test runs once per SQL store (`--store sqlite:///…` in a temporary folder, and
`--store postgres://…?options[search_path]=<fresh schema>`), starts a server, does
something, stops it (SIGTERM, or SIGKILL for the crash test) and starts a new process on
the same store.

PROTOCOL §4/§5 (`publish` → `ack {offset}`, `joined` with `since`, `recovered_complete`),
§7 (`durable` rooms), §8 (REST rooms, params, history), §9 (`--store`, SIGTERM exit 0),
§11 ("A durable room keeps its epoch and offsets across restarts; any loss of continuity
gives a new epoch"; history paging; playback objects). docs/persistence.md says what is
kept where.

PostgreSQL: `postgres://postgres@127.0.0.1:5432/test` unless SWITCHBOARD_TEST_POSTGRES
names another; each test makes its own schema with `psql` and drops it afterwards. If it
cannot be reached the PostgreSQL tests fail, unless SWITCHBOARD_SKIP_POSTGRES=1.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid

import pytest
from sbtest.wsclient import Client, connect, open_client
from websockets.exceptions import ConnectionClosed

POSTGRES = os.environ.get("SWITCHBOARD_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")
PSQL_TIMEOUT_S = 15


# -- stores ----------------------------------------------------------------------------------


def skip_postgres() -> bool:
    return os.environ.get("SWITCHBOARD_SKIP_POSTGRES", "") in ("1", "true")


def psql(sql: str) -> None:
    """Runs one statement on the test database; fails (or skips) the test when PostgreSQL
    cannot be reached."""
    psql_bin = shutil.which("psql")
    problem = None
    if psql_bin is None:
        problem = "psql is not installed"
    else:
        try:
            done = subprocess.run(
                [psql_bin, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", POSTGRES, "-c", sql],
                capture_output=True,
                text=True,
                timeout=PSQL_TIMEOUT_S,
                env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
            )
        except subprocess.TimeoutExpired:
            problem = f"psql did not answer within {PSQL_TIMEOUT_S}s"
        else:
            if done.returncode != 0:
                problem = f"psql exited {done.returncode}: {done.stderr.strip()}"
    if problem is None:
        return
    message = f"PostgreSQL at {POSTGRES} is not usable ({problem}): `{sql}`"
    if skip_postgres():
        pytest.skip(message + " — skipped because SWITCHBOARD_SKIP_POSTGRES=1")
    pytest.fail(
        message + ". Start PostgreSQL (scripts/test does), point SWITCHBOARD_TEST_POSTGRES at "
        "one, or set SWITCHBOARD_SKIP_POSTGRES=1 to skip the PostgreSQL tests.",
        pytrace=False,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path) -> str:
    """A `--store` URL for an empty store that outlives the servers of one test."""
    if request.param == "sqlite":
        # tmp_path is absolute: sqlite:// + /abs/path = sqlite:///abs/path (§11).
        yield f"sqlite://{tmp_path / 'store' / 'switchboard.db'}"
        return
    schema = f"sbtest_{uuid.uuid4().hex[:12]}"
    psql(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in POSTGRES else "?"
    try:
        yield f"{POSTGRES}{sep}options[search_path]={schema}"
    finally:
        psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def restart(server_factory, old, store: str):
    """Graceful stop (SIGTERM, exit 0 per §9), then a new process on the same store."""
    assert old.stop() == 0, f"SIGTERM: expected exit 0, got {old.proc.returncode}:\n{old.log_tail()}"
    return server_factory(store=store)


# -- helpers ---------------------------------------------------------------------------------


async def join(client: Client, room: str, **extra) -> dict:
    return await client.request({"type": "join", "room": room, **extra}, expect_type="joined")


async def publish(client: Client, room: str, data) -> int:
    """Publishes (without receiving the own copy) and returns the acked offset."""
    ack = await client.request(
        {"type": "publish", "room": room, "data": data, "exclude_self": True}, expect_type="ack"
    )
    assert ack["room"] == room, ack
    return ack["offset"]


def get_room(srv, room: str) -> dict:
    r = srv.rest.get(f"/api/rooms/{room}")
    assert r.status_code == 200, f"GET /api/rooms/{room} -> {r.status_code} {r.text}"
    return r.json()["room"]


def full_history(srv, room: str) -> tuple[dict, list[dict]]:
    """Every message of a room through REST, page by page (`since` = last offset seen)."""
    messages: list[dict] = []
    since = 0
    for _ in range(100):
        r = srv.rest.get(f"/api/rooms/{room}/history", params={"since": since, "limit": 1000})
        assert r.status_code == 200, f"history since {since} -> {r.status_code} {r.text}"
        page = r.json()
        if not page["messages"]:
            return page, messages
        messages += page["messages"]
        since = page["messages"][-1]["offset"]
    raise AssertionError(f"history of {room} did not end after 100 pages")


def param(room_info: dict, name: str) -> dict:
    found = [p for p in room_info["params"] if p["name"] == name]
    assert len(found) == 1, f"expected one parameter {name!r}: {room_info['params']}"
    return found[0]


# -- durable rooms ---------------------------------------------------------------------------


async def test_durable_room_survives_a_restart(server_factory, store, room):
    srv = server_factory(store=store)
    created = srv.rest.create_room(id=room, durable=True, history_size=50)
    assert created["durable"] is True and created["offset"] == 0, created
    epoch = created["epoch"]
    srv.rest.define_param(room, name="gain", value=0.25, min=0, max=2)

    n = 60  # more than history_size: the store keeps the newest 50
    sent = {
        i: {"n": i, "text": f"message {i} — ünïcødé ✓ 日本語 🎧", "nested": {"list": [i, None, True]}}
        for i in range(1, n + 1)
    }
    async with connect(srv, client_id="alice") as a:
        await join(a, room)
        offsets = [await publish(a, room, sent[i]) for i in range(1, n + 1)]
        assert offsets == list(range(1, n + 1)), "offsets of a new room are 1, 2, 3, … (§11)"
        # A parameter set over WebSocket is kept too.
        await a.request({"type": "param", "room": room, "param": "gain", "value": 1.5}, expect_type="ack")

    srv = restart(server_factory, srv, store)

    info = get_room(srv, room)
    assert info["epoch"] == epoch, "a durable room keeps its epoch across restarts (§11)"
    assert info["offset"] == n
    assert info["durable"] is True and info["history_size"] == 50
    assert param(info, "gain") == {"name": "gain", "value": 1.5, "min": 0, "max": 2}

    page, kept = full_history(srv, room)
    assert (page["epoch"], page["offset"]) == (epoch, n)
    assert [m["offset"] for m in kept] == list(range(n - 49, n + 1)), "history keeps the newest history_size"
    for m in kept:
        assert m["data"] == sent[m["offset"]], m
        assert m["from"] == "alice" and m["room"] == room, m

    async with connect(srv) as b:
        k = 20
        joined = await join(b, room, since={"offset": k, "epoch": epoch})
        assert (joined["epoch"], joined["offset"]) == (epoch, n)
        assert [m["offset"] for m in joined["recovered"]] == list(range(k + 1, n + 1))
        assert [m["data"] for m in joined["recovered"]] == [sent[i] for i in range(k + 1, n + 1)]
        assert joined["recovered_complete"] is True

        # Asking for more than history still holds: what is there, marked incomplete.
        again = await join(b, room, since={"offset": 5, "epoch": epoch})
        assert [m["offset"] for m in again["recovered"]] == list(range(n - 49, n + 1))
        assert again["recovered_complete"] is False

        h = await b.request({"type": "history", "room": room, "since": n - 3}, expect_type="history")
        assert [m["offset"] for m in h["messages"]] == [n - 2, n - 1, n]
        state = await b.request({"type": "sync", "room": room}, expect_type="state")
        assert param(state, "gain")["value"] == 1.5

        assert await publish(b, room, {"after": "restart"}) == n + 1, "offsets continue after a restart"


class Crash:
    """What a crash run saw: acked messages by offset, what a passive subscriber received
    by offset, how much was sent, and the room's epoch."""

    def __init__(self):
        self.acked: dict[int, dict] = {}
        self.seen: dict[int, dict] = {}
        self.sent = 0
        self.epoch = ""


async def crash_while_publishing(
    srv, room: str, publishers: int = 4, window: int = 16, total: int = 2000, kill_after: int = 300
) -> Crash:
    """Creates a durable room, joins a passive subscriber and `publishers` connections that
    each keep `window` publishes in flight (as fast as acks come back) until `total` are
    sent; SIGKILLs the server once `kill_after` acks arrived."""
    crash = Crash()
    crash.epoch = srv.rest.create_room(id=room, durable=True, history_size=5000)["epoch"]
    errors: list[dict] = []
    enough = asyncio.Event()

    async def publish_fast(index: int, client: Client) -> int:
        pending: dict[str, dict] = {}
        sent = 0
        quota = total // publishers
        try:
            while sent < quota or pending:
                while len(pending) < window and sent < quota:
                    rid = f"p{index}-{sent}"
                    data = {"publisher": index, "seq": sent, "pad": "x" * 40}
                    pending[rid] = data
                    await client.send(
                        {"type": "publish", "id": rid, "room": room, "data": data, "exclude_self": True}
                    )
                    sent += 1
                reply = await client.recv(timeout=10)
                if reply.get("type") == "ack":
                    offset = reply["offset"]
                    assert offset not in crash.acked, f"offset {offset} acked twice"
                    crash.acked[offset] = pending.pop(reply["id"])
                    if len(crash.acked) >= kill_after:
                        enough.set()
                elif reply.get("type") == "error":
                    errors.append(reply)
                    pending.pop(reply.get("id"), None)
        except ConnectionClosed:
            pass
        return sent

    async def subscribe(client: Client) -> None:
        try:
            while True:
                m = await client.recv(timeout=30)
                if m.get("type") == "message":
                    crash.seen[m["offset"]] = m["data"]
        except ConnectionClosed:
            pass

    subscriber = await open_client(srv, client_id="watcher")
    clients = [await open_client(srv, client_id=f"pub{i}") for i in range(publishers)]
    try:
        for c in (subscriber, *clients):
            await join(c, room)
        watching = asyncio.create_task(subscribe(subscriber))
        tasks = [asyncio.create_task(publish_fast(i, c)) for i, c in enumerate(clients)]
        waiting = asyncio.create_task(enough.wait())
        await asyncio.wait_for(asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED), 30)
        assert enough.is_set(), f"only {len(crash.acked)} acks before a publisher stopped; errors: {errors[:3]}"
        srv.kill()  # SIGKILL while publishes are in flight
        crash.sent = sum(await asyncio.wait_for(asyncio.gather(*tasks), 15))
        await asyncio.wait_for(watching, 15)
    finally:
        for c in (subscriber, *clients):
            await c.close()
    assert not errors, f"publishes refused before the kill: {errors[:3]}"
    assert kill_after <= len(crash.acked) < crash.sent, (
        f"the kill did not land mid-stream: {len(crash.acked)} acked of {crash.sent} sent"
    )
    return crash


async def test_acked_publishes_survive_kill_9(server_factory, store, room):
    """Every acked message is in the store after kill -9, at its offset, with its data."""
    crash = await crash_while_publishing(server_factory(store=store), room)

    srv = server_factory(store=store)
    info = get_room(srv, room)
    assert info["epoch"] == crash.epoch, "a durable room keeps its epoch after a crash"
    page, kept = full_history(srv, room)
    offsets = [m["offset"] for m in kept]
    assert all(a < b for a, b in zip(offsets, offsets[1:])), "history offsets strictly increase (no duplicates)"
    stored = {m["offset"]: m for m in kept}
    lost = sorted(set(crash.acked) - set(stored))
    assert not lost, f"{len(lost)} acked messages are missing after kill -9, e.g. offsets {lost[:10]}"
    for offset, data in crash.acked.items():
        assert stored[offset]["data"] == data, f"offset {offset}: stored {stored[offset]['data']}, acked {data}"
        assert stored[offset]["from"] == f"pub{data['publisher']}"
    highest = offsets[-1]
    assert info["offset"] == page["offset"] == highest, "the room's offset is the highest stored one"

    async with connect(srv) as c:
        await join(c, room)
        assert await publish(c, room, {"after": "kill"}) == highest + 1, "new publishes continue after the highest"


async def test_offsets_seen_before_a_crash_are_not_reused(server_factory, store, room):
    """§5/§11: an (epoch, offset) names one message. A subscriber that received a message
    just before a crash must not, after the restart, find a different message at that
    offset in the same epoch (else `since` recovery silently skips the difference)."""
    crash = await crash_while_publishing(server_factory(store=store), room)
    srv = server_factory(store=store)
    info = get_room(srv, room)
    if info["epoch"] != crash.epoch:
        return  # continuity was declared lost: allowed
    top = max(crash.seen)
    async with connect(srv) as c:
        await join(c, room)
        while (offset := await publish(c, room, {"after": "crash"})) < top:
            pass
    _, kept = full_history(srv, room)
    stored = {m["offset"]: m["data"] for m in kept}
    differ = sorted(o for o, data in crash.seen.items() if stored.get(o) != data)
    assert not differ, (
        f"{len(differ)} offsets a subscriber received before the crash now hold other messages "
        f"in the same epoch {crash.epoch}, e.g. offset {differ[0]}: received {crash.seen[differ[0]]}, "
        f"now {stored.get(differ[0])}"
    )


async def test_non_durable_rooms_do_not_survive(server_factory, store, room):
    explicit, auto, durable = f"{room}.rest", f"{room}.auto", f"{room}.durable"
    srv = server_factory(store=store)
    srv.rest.create_room(id=explicit)  # durable defaults to false
    srv.rest.create_room(id=durable, durable=True)
    async with connect(srv) as a:
        auto_epoch = (await join(a, auto))["epoch"]  # auto-created: never durable
        for r in (explicit, durable):
            await join(a, r)
        for r in (auto, explicit, durable):
            for i in range(3):
                await publish(a, r, {"i": i})

    srv = restart(server_factory, srv, store)

    for gone in (explicit, auto):
        r = srv.rest.get(f"/api/rooms/{gone}")
        assert r.status_code == 404, f"non-durable room {gone} came back: {r.status_code} {r.text}"
        assert r.json()["error"]["code"] == "NOT_FOUND"
    listed = {x["id"] for x in srv.rest.get("/api/rooms").json()["rooms"]}
    assert durable in listed and explicit not in listed and auto not in listed, listed
    assert get_room(srv, durable)["offset"] == 3

    async with connect(srv) as b:
        joined = await join(b, auto, since={"offset": 2, "epoch": auto_epoch})
        assert joined["epoch"] != auto_epoch, "a re-created room has a new epoch (§11)"
        assert joined["offset"] == 0 and joined["recovered"] == []
        assert joined["recovered_complete"] is False


# -- playback sessions -----------------------------------------------------------------------

PLAYLIST = [
    {"title": "Für Elise", "artist": "Ludwig van Beethoven", "url": "file:///música/für-elise.flac"},
    {"title": "夜に駆ける", "artist": "YOASOBI", "duration": 261.5, "tags": ["j-pop", "2019"]},
    {"title": "🎶 Ça plane pour moi", "meta": {"year": 1977, "nested": {"ok": True, "none": None}}},
    {"title": "tab\there, \"quotes\", back\\slash and \u2028 survive", "rating": -1},
]


def only(items: list[dict], key: str, value) -> dict:
    found = [i for i in items if i.get(key) == value]
    assert len(found) == 1, f"expected one item with {key}={value!r} in {items}"
    return found[0]


async def no_message(client: Client, type: str) -> None:
    got = [m for m in await client.barrier() if m.get("type") == type]
    assert not got, f"unexpected {type}: {got}"


async def test_sessions_survive_a_restart(server_factory, store):
    srv = server_factory(store=store)
    async with (
        connect(srv, profile="home") as home1,
        connect(srv, profile="home") as home2,
        connect(srv, profile="work") as work,
    ):
        players = [{"name": "Küchenlautsprecher", "type": "local"}, {"name": "客厅 🔊", "type": "chromecast"}]
        await home1.request(
            {"type": "register_connection", "connection": {"name": "Raspberry π", "players": players}},
            expect_type="ack",
        )
        registered = only((await home2.expect("connections"))["connections"], "connection_id", home1.connection_id)
        player_ids = {p["name"]: p["player_id"] for p in registered["players"]}
        assert sorted(player_ids) == sorted(p["name"] for p in players)

        await home1.request(
            {"type": "create_audio_zone", "audio_zone": {"name": "Erdgeschoß", "players": [player_ids["客厅 🔊"]]}},
            expect_type="ack",
        )
        zone = only((await home2.expect("audio_zone_with_sessions"))["audio_zones"], "name", "Erdgeschoß")

        await home1.request({"type": "create_session", "session": {"name": "Küche ☕"}}, expect_type="ack")
        session = only((await home2.expect("sessions"))["sessions"], "name", "Küche ☕")
        sid = session["session_id"]
        await no_message(work, "sessions")

        changes = [
            {
                "name": "Küche ☕ – Abend",
                "active": True,
                "playing": True,
                "volume": 0.35,
                "playlist": PLAYLIST,
                "position": 2,
                "audio_zone_id": zone["audio_zone_id"],
                "active_players": [player_ids["Küchenlautsprecher"], player_ids["客厅 🔊"]],
            },
            {"seek": 73.25},
            {"volume": 0.6, "playing": False},
        ]
        expected = dict(session)
        for change in changes:
            await home1.request({"type": "update_session", "session_id": sid, **change}, expect_type="ack")
            update = await home2.expect("session_updated", session_id=sid)
            assert {k: v for k, v in update.items() if k not in ("type", "session_id")} == change
            expected.update(change)
        await home1.request({"type": "set_seek", "session_id": sid, "seek": 81.5}, expect_type="ack")
        assert (await home2.expect("set_seek", session_id=sid))["seek"] == 81.5
        expected["seek"] = 81.5
        await no_message(home1, "session_updated")
        await no_message(work, "session_updated")

        before = await home2.request({"type": "get_sessions"}, expect_type="sessions")
        assert before["sessions"] == [expected], "the server itself lost a change (before any restart)"

    srv = restart(server_factory, srv, store)

    async with connect(srv, profile="home") as home, connect(srv, profile="work") as work:
        after = await home.request({"type": "get_sessions"}, expect_type="sessions")
        assert after["sessions"] == [expected], "sessions after a restart must be exactly as last set"
        assert (await work.request({"type": "get_sessions"}, expect_type="sessions"))["sessions"] == []

    r = srv.rest.get("/api/sessions", params={"profile": "home"})
    assert r.status_code == 200 and r.json()["sessions"] == [expected], r.text
    r = srv.rest.get("/api/sessions", params={"profile": "work"})
    assert r.status_code == 200 and r.json()["sessions"] == [], r.text
    r = srv.rest.get("/api/players", params={"profile": "home"})
    assert r.status_code == 200, r.text
    assert sorted((p["player_id"], p["name"]) for p in r.json()["players"]) == sorted(
        (pid, name) for name, pid in player_ids.items()
    ), "registered players keep their ids across a restart"
