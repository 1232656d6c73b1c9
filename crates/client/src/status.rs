//! Connection status and the events delivered to the application.

use std::time::Duration;

use switchboard_protocol::{ErrorCode, RoomMessage, ServerMessage};

/// Where the connection stands. Observe it with [`crate::Client::status`] (a `watch`, latest
/// value) or as [`Event::Status`] in the event stream (every change, in order).
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// A connection attempt is under way (`attempt` 0 is the first).
    Connecting {
        /// Consecutive failed attempts before this one.
        attempt: u32,
    },
    /// The server's `welcome` arrived.
    Connected {
        /// This connection's id.
        connection_id: String,
        /// The client id the server assigned or accepted.
        client_id: String,
    },
    /// The connection ended (or an attempt failed).
    Disconnected {
        /// Why, in words.
        reason: String,
        /// The WebSocket close code, when the server sent one.
        code: Option<u16>,
    },
    /// The next attempt is scheduled after `delay`.
    Reconnecting {
        /// The number of the next attempt (1 for the first retry).
        attempt: u32,
        /// How long the client waits before it.
        delay: Duration,
    },
    /// The client gave up: `max_retries` reached, a terminal close code or HTTP status, or
    /// reconnecting is off. Requests fail with `Closed`; [`crate::Client::retry_now`] starts again.
    Failed {
        /// Why.
        reason: String,
    },
    /// [`crate::Client::close`] was called.
    Closed,
}

/// Something the application should see, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The status changed.
    Status(Status),
    /// A room message, live or recovered after a reconnect: each offset of a room exactly
    /// once and in order within an epoch.
    Message(RoomMessage),
    /// A rejoin after a reconnect could not recover everything since the last message seen:
    /// the room's history no longer reaches back, or the room was re-created (`epoch`
    /// differs from `previous_epoch`). The application should reload from `history`.
    RecoveryIncomplete {
        room: String,
        /// The epoch the client knew.
        previous_epoch: String,
        /// The last offset the client had seen in `previous_epoch`.
        since: u64,
        /// The room's epoch now.
        epoch: String,
        /// The room's latest offset now; live messages continue after it.
        offset: u64,
        /// How many messages could be recovered (and were delivered as `Message`).
        recovered: usize,
    },
    /// A room could not be joined again after a reconnect (deleted, code changed, …); the
    /// client no longer counts itself in it.
    RejoinFailed {
        room: String,
        code: ErrorCode,
        message: String,
    },
    /// Any other server message: `joined` (with `recovered` emptied, since those messages
    /// come as `Message` events), `left`, presence events, `direct`, `update`, `trigger`,
    /// `gap`, `closed`, `event`, session pushes, and errors that answer no request.
    Server(ServerMessage),
}
