-- Durable rooms and their history (PostgreSQL).
--
-- `rooms.info` is the hub's `RoomInfo`; `epoch`, `last_offset` and `history_size` are
-- copied out of it so that appends can trim and track offsets without parsing JSON.
-- `last_offset` only grows within an epoch: it keeps offsets continuing after a restart
-- even when trimming (or `history_size = 0`) left no message behind.
--
-- JSON columns are `json`, not `jsonb`: the store never queries inside them, `json` keeps
-- the text as sent (no re-encoding on write) and accepts every string JSON allows,
-- including `\u0000`, which `jsonb` rejects — a client's message must never fail to store
-- because of its content. Timestamps are unix milliseconds, like every timestamp in the
-- protocol.
CREATE TABLE rooms (
    id           TEXT   NOT NULL PRIMARY KEY,
    info         JSON   NOT NULL,
    epoch        TEXT   NOT NULL,
    last_offset  BIGINT NOT NULL DEFAULT 0,
    history_size BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

-- One row per kept message. No foreign key to `rooms`: the hub may append before (or
-- without) saving the room, as `MemoryStore` allows.
CREATE TABLE messages (
    room          TEXT   NOT NULL,
    "offset"      BIGINT NOT NULL,
    data          JSON   NOT NULL,
    "from"        TEXT   NOT NULL,
    connection_id TEXT,
    ts            BIGINT NOT NULL,
    PRIMARY KEY (room, "offset")
);
