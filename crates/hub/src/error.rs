//! The hub's error type: every failure a request can meet, with the wire code it maps to.

use switchboard_protocol::ErrorCode;

/// Why the hub refused or failed a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct HubError {
    /// The wire error code.
    pub code: ErrorCode,
    /// A human-readable reason, safe to show to the client.
    pub message: String,
}

impl HubError {
    /// An error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HubError {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub(crate) fn invalid_room(room: &str) -> Self {
        Self::new(ErrorCode::InvalidRoom, format!("no such room `{room}`"))
    }

    pub(crate) fn not_in_room(room: &str) -> Self {
        Self::new(
            ErrorCode::NotInRoom,
            format!("this connection has not joined `{room}`"),
        )
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, what)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
}

/// Shorthand for results whose error is a [`HubError`].
pub type HubResult<T> = Result<T, HubError>;
