//! Error codes carried by `error` messages and REST error bodies, and the WebSocket close
//! codes the server uses (PROTOCOL §5, §6).

use serde::{Deserialize, Serialize};

/// The `code` of an `error` message. An error never closes the connection by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// Malformed frame, unknown `type`, missing or mistyped field, value out of range.
    BadRequest,
    /// No such room, or a wrong room code.
    InvalidRoom,
    /// The room is at its `max_connections`.
    RoomFull,
    /// A room-scoped request on a room the connection has not joined.
    NotInRoom,
    /// An unknown id (connection, session, …).
    NotFound,
    /// Not allowed: disabled message type, too many rooms, a hook said no.
    Forbidden,
    /// Missing, invalid or expired credentials.
    Unauthorized,
    /// Too many requests; slow down.
    RateLimited,
    /// The server failed; the request may be retried.
    Internal,
}

impl ErrorCode {
    /// The wire spelling, e.g. `"BAD_REQUEST"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::InvalidRoom => "INVALID_ROOM",
            ErrorCode::RoomFull => "ROOM_FULL",
            ErrorCode::NotInRoom => "NOT_IN_ROOM",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// The HTTP status the REST API answers this code with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidRoom => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound | ErrorCode::NotInRoom => 404,
            ErrorCode::RoomFull => 409,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes (RFC 6455 §7.4 plus Switchboard's 4xxx application codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// Normal closure: the client sent `leave` without a room, or asked for it.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// The server is shutting down.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// A WebSocket protocol violation.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// A text frame that is not valid UTF-8.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// Policy violation: origin refused, error flood, heartbeat timeout.
    pub const POLICY: CloseCode = CloseCode(1008);
    /// A frame or message over `max_message_size`.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// The server failed.
    pub const INTERNAL: CloseCode = CloseCode(1011);
    /// Bad or expired token.
    pub const UNAUTHORIZED: CloseCode = CloseCode(4001);
    /// Forbidden.
    pub const FORBIDDEN: CloseCode = CloseCode(4003);
    /// The outbound queue stayed over its bound (slow consumer).
    pub const SLOW_CONSUMER: CloseCode = CloseCode(4008);
    /// Rate limited for too long.
    pub const RATE_LIMITED: CloseCode = CloseCode(4029);
}
