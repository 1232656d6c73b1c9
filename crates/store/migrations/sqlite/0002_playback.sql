-- Playback state (PROTOCOL §4, §11): sessions, registered connections with their
-- players, and audio zones with theirs. Everything is scoped by profile.
--
-- Ids are assigned here. AUTOINCREMENT means an id is never reused, even after its row
-- is deleted: a client holding a stale session or player id can never reach another
-- object through it. Lists (`playlist`, `active_players`) that are always read and
-- written whole are JSON text; players, which keep their ids across re-registrations,
-- are rows of their own. Timestamps are unix milliseconds.
CREATE TABLE playback_sessions (
    id             INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    profile        TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    active         INTEGER NOT NULL,
    playing        INTEGER NOT NULL,
    -- Index of the current track in `playlist`; NULL before one was chosen.
    position       INTEGER,
    seek           REAL    NOT NULL,
    volume         REAL    NOT NULL,
    -- JSON array of tracks (objects the application defines).
    playlist       TEXT    NOT NULL,
    -- No foreign key: the hub checks references when they are set, as with players.
    audio_zone_id  INTEGER,
    -- JSON array of player ids.
    active_players TEXT    NOT NULL
);
CREATE INDEX playback_sessions_by_profile ON playback_sessions (profile, id);

-- One row per connection that registered, alive or gone (`mark_gone` keeps it listed).
CREATE TABLE playback_connections (
    connection_id TEXT    NOT NULL PRIMARY KEY,
    profile       TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    alive         INTEGER NOT NULL,
    registered_at INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX playback_connections_by_profile ON playback_connections (profile, connection_id);

-- A connection's players, in the order it listed them (`ord`).
CREATE TABLE playback_players (
    id            INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    connection_id TEXT    NOT NULL
                  REFERENCES playback_connections (connection_id) ON DELETE CASCADE,
    ord           INTEGER NOT NULL,
    name          TEXT    NOT NULL,
    kind          TEXT    NOT NULL
);
CREATE INDEX playback_players_by_connection ON playback_players (connection_id, ord);

CREATE TABLE playback_audio_zones (
    id      INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    profile TEXT    NOT NULL,
    name    TEXT    NOT NULL
);
CREATE INDEX playback_audio_zones_by_profile ON playback_audio_zones (profile, id);

-- A zone's players, in the order given. `player_id` has no foreign key: a zone keeps
-- naming a player whose device re-registered without it, as the in-memory store does.
CREATE TABLE playback_audio_zone_players (
    audio_zone_id INTEGER NOT NULL REFERENCES playback_audio_zones (id) ON DELETE CASCADE,
    ord           INTEGER NOT NULL,
    player_id     INTEGER NOT NULL,
    PRIMARY KEY (audio_zone_id, ord)
);
