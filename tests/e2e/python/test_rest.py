"""The REST API beyond what other modules already use: listings, history, presence, joins
and leaves on behalf of a connection, connection management, metrics, OpenAPI, the API token.

PROTOCOL §8 (routes and bodies), §11 (status codes, API joins send `joined` and
`presence_join`, `GET /api/connections/{id}/rooms` lists room objects, the token guards
`/api/*` only).
"""

import pytest
from sbtest.wsclient import connect

CONNECTION_FIELDS = (
    "connection_id",
    "client_id",
    "name",
    "path",
    "remote_addr",
    "meta",
    "rooms",
    "created_at",
    "last_seen",
)
ROOM_FIELDS = (
    "id",
    "name",
    "description",
    "max_connections",
    "meta",
    "created_at",
    "members_count",
    "history_size",
    "durable",
    "params",
)


def ok(response, status: int = 200) -> dict:
    assert response.status_code == status, (
        f"{response.request.method} {response.url} -> {response.status_code} {response.text}"
    )
    return response.json() if response.content else {}


def error_code(response) -> str:
    return response.json()["error"]["code"]


def test_room_listing_and_generated_id(rest, room):
    created = rest.create_room(id=room, name="Lobby", description="for tests", history_size=10)
    for field in ROOM_FIELDS:
        assert field in created, f"room lacks {field!r}: {created}"
    assert (created["name"], created["description"], created["history_size"]) == ("Lobby", "for tests", 10)

    anonymous = rest.create_room()
    assert isinstance(anonymous["id"], str) and anonymous["id"]

    listing = ok(rest.get("/api/rooms"))
    ids = [r["id"] for r in listing["rooms"]]
    assert room in ids and anonymous["id"] in ids
    assert listing["count"] == len(listing["rooms"])


def test_unknown_room_is_404_not_found(rest, room):
    for method, path in [
        ("GET", f"/api/rooms/{room}"),
        ("DELETE", f"/api/rooms/{room}"),
        ("GET", f"/api/rooms/{room}/history"),
        ("GET", f"/api/rooms/{room}/presence"),
    ]:
        r = rest.request(method, path)
        assert r.status_code == 404, f"{method} {path} -> {r.status_code}"
        assert error_code(r) == "NOT_FOUND"


def test_malformed_room_id_is_400(rest):
    r = rest.post("/api/rooms", json={"id": "bad room!"})
    assert r.status_code == 400 and error_code(r) == "BAD_REQUEST", r.text


async def test_history_and_presence(server, rest, room):
    async with connect(server, client_id="hist") as a:
        await a.request({"type": "join", "room": room}, expect_type="joined")
        for i in range(5):
            await a.request({"type": "publish", "room": room, "data": i}, expect_type="ack")
        h = ok(rest.get(f"/api/rooms/{room}/history", params={"since": 2, "limit": 2}))
        assert h["offset"] == 5 and isinstance(h["epoch"], str)
        assert [m["offset"] for m in h["messages"]] == [3, 4]
        assert [m["data"] for m in ok(rest.get(f"/api/rooms/{room}/history"))["messages"]] == [0, 1, 2, 3, 4]

        members = ok(rest.get(f"/api/rooms/{room}/presence"))["members"]
        assert [(m["connection_id"], m["client_id"]) for m in members] == [(a.connection_id, "hist")]


async def test_join_and_leave_on_behalf_of_a_connection(server, rest, room):
    async with connect(server) as a, connect(server) as b:
        await a.request({"type": "join", "room": room}, expect_type="joined")
        assert ok(rest.post(f"/api/rooms/{room}/join", json={"connection_id": b.connection_id})) == {"joined": True}
        joined = await b.expect("joined", room=room)
        assert sorted(m["connection_id"] for m in joined["members"]) == sorted([a.connection_id, b.connection_id])
        assert (await a.expect("presence_join", room=room))["member"]["connection_id"] == b.connection_id

        rooms = ok(rest.get(f"/api/connections/{b.connection_id}/rooms"))
        assert [r["id"] for r in rooms["rooms"]] == [room] and rooms["count"] == 1

        await b.request({"type": "publish", "room": room, "data": "member now"}, expect_type="ack")
        assert ok(rest.post(f"/api/rooms/{room}/leave", json={"connection_id": b.connection_id})) == {"left": True}
        assert (await a.expect("presence_leave", room=room))["member"]["connection_id"] == b.connection_id
        await b.request_error({"type": "publish", "room": room, "data": 1}, "NOT_IN_ROOM")


async def test_connections(server, rest, room):
    async with connect(server, client_id="listed", name="Lister") as a:
        await a.request({"type": "join", "room": room}, expect_type="joined")
        listing = ok(rest.get("/api/connections"))
        assert a.connection_id in [c["connection_id"] for c in listing["connections"]]
        assert listing["count"] == len(listing["connections"])

        conn = ok(rest.get(f"/api/connections/{a.connection_id}"))["connection"]
        for field in CONNECTION_FIELDS:
            assert field in conn, f"connection lacks {field!r}: {conn}"
        assert (conn["client_id"], conn["name"], conn["path"]) == ("listed", "Lister", "/ws")
        assert conn["remote_addr"].startswith("127.0.0.1")
        assert room in [r if isinstance(r, str) else r.get("id") for r in conn["rooms"]]

        r = rest.get("/api/connections/no-such-connection")
        assert r.status_code == 404 and error_code(r) == "NOT_FOUND"


async def test_delete_connection_closes_it_with_1000(server, rest):
    async with connect(server) as a:
        r = rest.delete(f"/api/connections/{a.connection_id}")
        assert r.status_code == 204, r.text
        code, _ = await a.expect_close()
        assert code == 1000


def test_metrics_are_prometheus_text(rest):
    r = rest.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in r.text and "# HELP" in r.text


def test_readyz_and_openapi(rest):
    assert rest.get("/readyz").status_code == 200
    doc = ok(rest.get("/api/openapi.json"))
    assert str(doc["openapi"]).startswith("3")
    for path in ("/api/rooms", "/api/rooms/{id}", "/api/connections", "/api/broadcast"):
        assert path in doc["paths"], f"OpenAPI lacks {path}"


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "e2e-api-token"], ids=["none", "wrong", "no-bearer"])
def test_api_token_guards_api(server_factory, auth):
    srv = server_factory("api_token.toml")
    headers = {"Authorization": auth} if auth else {}
    r = srv.rest.get("/api/rooms", headers=headers)
    assert r.status_code == 401 and error_code(r) == "UNAUTHORIZED", f"{auth!r} -> {r.status_code} {r.text}"
    assert srv.rest.get("/api/rooms", headers={"Authorization": "Bearer e2e-api-token"}).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_open_routes_need_no_token(server_factory, path):
    srv = server_factory("api_token.toml")
    assert srv.rest.get(path).status_code == 200, f"{path} must stay open when an API token is set"


def test_openapi_is_guarded_like_the_rest_of_the_api(server_factory):
    srv = server_factory("api_token.toml")
    r = srv.rest.get("/api/openapi.json")
    assert r.status_code == 401 and error_code(r) == "UNAUTHORIZED", r.text
    doc = ok(srv.rest.get("/api/openapi.json", headers={"Authorization": "Bearer e2e-api-token"}))
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    patch = doc["paths"]["/api/sessions/{id}"]["patch"]
    assert {"200", "400", "401", "403", "404", "415"} <= set(patch["responses"])


def test_existing_room_id_is_409(rest, room):
    rest.create_room(id=room)
    r = rest.post("/api/rooms", json={"id": room})
    assert r.status_code == 409 and error_code(r) == "BAD_REQUEST", r.text
    assert "already exists" in r.json()["error"]["message"]


def test_bodies_are_json_objects_read_as_the_document_says(rest, room):
    # An array is not read field by field into an object.
    r = rest.post("/api/rooms", json=[room, "name"])
    assert r.status_code == 400 and error_code(r) == "BAD_REQUEST", r.text
    # `data` is required (null is a value, absence is an error).
    r = rest.post("/api/broadcast", json={"name": "x"})
    assert r.status_code == 400 and "data" in r.json()["error"]["message"], r.text
    assert ok(rest.post("/api/broadcast", json={"data": None}))["sent"] >= 0
    # The wrong field is named.
    r = rest.post("/api/rooms", json={"id": room, "params": [{"name": "p", "value": "high"}]})
    assert r.status_code == 400 and "params[0].value" in r.json()["error"]["message"], r.text
    # A whole number written as 5.0 is an integer (JSON Schema).
    created = ok(rest.post("/api/rooms", json={"id": room, "max_connections": 5.0}), 201)["room"]
    assert created["max_connections"] == 5
    # Not JSON at all.
    r = rest.post("/api/rooms", data="id=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and error_code(r) == "BAD_REQUEST", r.text


def test_session_update_names_known_fields_with_values(rest):
    session = ok(rest.post("/api/sessions", json={"name": "s"}), 201)["session"]
    path = f"/api/sessions/{session['session_id']}"
    for body, words in [
        ({}, "nothing to change"),
        ({"volum": 0.5}, "unknown field `volum`"),
        ({"name": None}, "`name` must not be null"),
        ({"volume": 2}, "volume"),
    ]:
        r = rest.request("PATCH", path, json=body)
        assert r.status_code == 400 and error_code(r) == "BAD_REQUEST", f"{body} -> {r.status_code} {r.text}"
        assert words in r.json()["error"]["message"], r.text
    updated = ok(rest.request("PATCH", path, json={"volume": 0.25, "position": 1.0}))["session"]
    assert (updated["volume"], updated["position"]) == (0.25, 1)
    assert rest.get("/api/sessions/not-a-number").status_code == 404
