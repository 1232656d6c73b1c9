-- Durable rooms and their history (SQLite).
--
-- `rooms.info` is the hub's `RoomInfo` as JSON; `epoch`, `last_offset` and `history_size`
-- are copied out of it so that appends can trim and track offsets without parsing JSON.
-- `last_offset` only grows within an epoch: it keeps offsets continuing after a restart
-- even when trimming (or `history_size = 0`) left no message behind.
-- Timestamps are unix milliseconds, like every timestamp in the protocol.
CREATE TABLE rooms (
    id           TEXT    NOT NULL PRIMARY KEY,
    info         TEXT    NOT NULL,
    epoch        TEXT    NOT NULL,
    last_offset  INTEGER NOT NULL DEFAULT 0,
    history_size INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

-- One row per kept message. `data` is the message's JSON text. No foreign key to
-- `rooms`: the hub may append before (or without) saving the room, as `MemoryStore` allows.
CREATE TABLE messages (
    room          TEXT    NOT NULL,
    "offset"      INTEGER NOT NULL,
    data          TEXT    NOT NULL,
    "from"        TEXT    NOT NULL,
    connection_id TEXT,
    ts            INTEGER NOT NULL,
    PRIMARY KEY (room, "offset")
);
