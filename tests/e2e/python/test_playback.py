"""Playback: sessions, players, audio zones and seek sync, scoped by profile, over WebSocket
and REST.

PROTOCOL §4 (session requests; "every connection of the profile" vs "every other"),
§11 (playback objects, replies: `sessions` for `get_sessions`, `ack` otherwise; REST
playback: bare bodies, wrapped answers, 400 for out-of-range values, REST changes pushed).
"""

import uuid

import pytest
from sbtest.wsclient import connect

SESSION_FIELDS = (
    "session_id",
    "profile",
    "name",
    "active",
    "playing",
    "position",
    "seek",
    "volume",
    "playlist",
    "audio_zone_id",
    "active_players",
)


@pytest.fixture
def profile() -> str:
    return f"profile-{uuid.uuid4().hex[:8]}"


def only(items: list[dict], key: str, value) -> dict:
    found = [i for i in items if i.get(key) == value]
    assert len(found) == 1, f"expected one item with {key}={value!r} in {items}"
    return found[0]


async def create_session(client, **session) -> dict:
    """create_session; returns the new session from the `sessions` push to the creator."""
    await client.request({"type": "create_session", "session": session}, expect_type="ack")
    pushed = await client.expect("sessions")
    return only(pushed["sessions"], "name", session["name"])


async def test_get_sessions_of_a_new_profile_is_empty(server, profile):
    async with connect(server, profile=profile) as a:
        reply = await a.request({"type": "get_sessions"}, expect_type="sessions")
        assert reply["sessions"] == []


async def test_create_session_is_pushed_to_the_profile_only(server, profile):
    async with (
        connect(server, profile=profile) as a,
        connect(server, profile=profile) as b,
        connect(server, profile=profile + "-other") as other,
        connect(server) as default,
    ):
        playlist = [{"title": "One", "url": "file:///1.flac"}, {"title": "Two"}]
        session = await create_session(a, name="Kitchen", volume=0.5, playlist=playlist)
        for field in SESSION_FIELDS:
            assert field in session, f"session lacks {field!r}: {session}"
        assert session["profile"] == profile
        assert session["volume"] == 0.5
        assert session["playlist"] == playlist
        assert isinstance(session["active"], bool) and isinstance(session["playing"], bool)
        assert isinstance(session["active_players"], list)

        pushed = await b.expect("sessions")
        assert only(pushed["sessions"], "name", "Kitchen")["session_id"] == session["session_id"]
        for outsider in (other, default):
            assert not [m for m in await outsider.barrier() if m.get("type") == "sessions"]

        listed = await b.request({"type": "get_sessions"}, expect_type="sessions")
        assert [s["session_id"] for s in listed["sessions"]] == [session["session_id"]]


async def test_update_session_goes_to_other_connections_as_partial_update(server, profile):
    async with connect(server, profile=profile) as a, connect(server, profile=profile) as b:
        session = await create_session(a, name="Office")
        await b.expect("sessions")
        sid = session["session_id"]
        ack = await a.request(
            {"type": "update_session", "session_id": sid, "volume": 0.8, "playing": True}, expect_type="ack"
        )
        assert ack["id"]
        upd = await b.expect("session_updated", session_id=sid)
        assert upd["volume"] == 0.8 and upd["playing"] is True
        assert "name" not in upd, f"session_updated carries the changed fields only: {upd}"
        assert not [m for m in await a.barrier() if m.get("type") == "session_updated"], "sender got its update"
        listed = await a.request({"type": "get_sessions"}, expect_type="sessions")
        s = only(listed["sessions"], "session_id", sid)
        assert (s["volume"], s["playing"], s["name"]) == (0.8, True, "Office")


@pytest.mark.parametrize("volume", [-0.1, 1.5])
async def test_volume_out_of_range_is_bad_request(server, profile, volume):
    async with connect(server, profile=profile) as a:
        session = await create_session(a, name="Loud")
        await a.request_error(
            {"type": "update_session", "session_id": session["session_id"], "volume": volume}, "BAD_REQUEST"
        )
        await a.request_error({"type": "create_session", "session": {"name": "Bad", "volume": volume}}, "BAD_REQUEST")
        await a.barrier()


async def test_deleted_session_is_not_found(server, profile):
    async with connect(server, profile=profile) as a:
        session = await create_session(a, name="Ephemeral")
        sid = session["session_id"]
        await a.request({"type": "delete_session", "session_id": sid}, expect_type="ack")
        await a.request_error({"type": "update_session", "session_id": sid, "volume": 0.1}, "NOT_FOUND")
        await a.request_error({"type": "delete_session", "session_id": sid}, "NOT_FOUND")


async def test_delete_session_pushes_sessions_to_every_connection(server, profile):
    async with connect(server, profile=profile) as a, connect(server, profile=profile) as b:
        keep = await create_session(a, name="Keep")
        gone = await create_session(a, name="Gone")
        await a.request({"type": "delete_session", "session_id": gone["session_id"]}, expect_type="ack")
        for c in (a, b):
            while True:  # the last `sessions` push is the one after the delete
                pushed = await c.expect("sessions")
                ids = [s["session_id"] for s in pushed["sessions"]]
                if gone["session_id"] not in ids:
                    break
            assert ids == [keep["session_id"]]


async def test_set_seek_goes_to_other_connections(server, profile):
    async with connect(server, profile=profile) as a, connect(server, profile=profile) as b:
        session = await create_session(a, name="Seek")
        await a.request({"type": "set_seek", "session_id": session["session_id"], "seek": 42.5}, expect_type="ack")
        seek = await b.expect("set_seek")
        assert (seek["session_id"], seek["seek"]) == (session["session_id"], 42.5)
        assert not [m for m in await a.barrier() if m.get("type") == "set_seek"]


async def test_register_connection_players_and_audio_zone(server, profile):
    async with connect(server, profile=profile) as a, connect(server, profile=profile) as b:
        await a.request(
            {
                "type": "register_connection",
                "connection": {"name": "Living room", "players": [{"name": "Speaker", "type": "local"}]},
            },
            expect_type="ack",
        )
        for c in (a, b):
            conns = (await c.expect("connections"))["connections"]
            entry = only(conns, "connection_id", a.connection_id)
            assert entry["name"] == "Living room"
            assert entry["alive"] is True
            assert [(p["name"], p["type"]) for p in entry["players"]] == [("Speaker", "local")]

        await a.request(
            {
                "type": "register_players",
                "players": [{"name": "Speaker", "type": "local"}, {"name": "Sub", "type": "local"}],
            },
            expect_type="ack",
        )
        conns = (await b.expect("connections"))["connections"]
        players = only(conns, "connection_id", a.connection_id)["players"]
        assert sorted(p["name"] for p in players) == ["Speaker", "Sub"]
        player_id = only(players, "name", "Sub")["player_id"]

        await a.request(
            {"type": "create_audio_zone", "audio_zone": {"name": "Downstairs", "players": [player_id]}},
            expect_type="ack",
        )
        for c in (a, b):
            zones = (await c.expect("audio_zone_with_sessions"))["audio_zones"]
            zone = only(zones, "name", "Downstairs")
            assert zone["players"] == [player_id]
            assert zone["sessions"] == []
            assert zone["audio_zone_id"] is not None


async def test_rest_session_changes_are_pushed(server, rest, profile):
    async with connect(server, profile=profile) as a:
        r = rest.post(f"/api/sessions?profile={profile}", json={"name": "Via REST", "volume": 0.2})
        assert r.status_code == 201, r.text
        session = r.json()["session"]
        sid = session["session_id"]
        assert session["profile"] == profile
        assert only((await a.expect("sessions"))["sessions"], "session_id", sid)["name"] == "Via REST"

        r = rest.request("PATCH", f"/api/sessions/{sid}?profile={profile}", json={"volume": 0.3})
        assert r.status_code == 200, r.text
        assert r.json()["session"]["volume"] == 0.3
        assert (await a.expect("session_updated", session_id=sid))["volume"] == 0.3

        r = rest.request("PATCH", f"/api/sessions/{sid}?profile={profile}", json={"volume": 2})
        assert r.status_code == 400 and r.json()["error"]["code"] == "BAD_REQUEST", r.text

        r = rest.get(f"/api/sessions?profile={profile}")
        assert r.status_code == 200 and [s["session_id"] for s in r.json()["sessions"]] == [sid], r.text

        r = rest.delete(f"/api/sessions/{sid}?profile={profile}")
        assert r.status_code == 204, r.text
        while sid in [s["session_id"] for s in (await a.expect("sessions"))["sessions"]]:
            pass
        assert rest.get(f"/api/sessions/{sid}?profile={profile}").status_code == 404
