//! What can go wrong for a request or a connection attempt.

use std::time::Duration;

use switchboard_protocol::ErrorCode;

/// A request failed, or the client could not (or no longer) talk to the server.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The server answered the request with an `error`.
    #[error("server refused the request ({code}): {message}")]
    Server {
        /// The server's error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// No reply came within the request timeout (counted from when the request was written).
    #[error("no reply to `{request}` within {timeout:?}")]
    Timeout {
        /// The request type.
        request: &'static str,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// The connection dropped after the request was written and before its reply came. The
    /// server may or may not have carried it out. Requests that are safe to repeat are never
    /// failed this way: they are sent again after the reconnect.
    #[error("the connection dropped before the reply to `{request}`")]
    Disconnected {
        /// The request type.
        request: &'static str,
    },
    /// The client is disconnected and `queue_limit` requests already wait for the reconnect.
    #[error("disconnected, and {limit} requests already wait for the reconnect")]
    QueueFull {
        /// The configured bound.
        limit: usize,
    },
    /// The client was closed, or gave up reconnecting.
    #[error("the client is closed: {reason}")]
    Closed {
        /// Why.
        reason: String,
    },
    /// The server sent a reply of an unexpected type.
    #[error("unexpected reply to `{request}`: `{got}`")]
    UnexpectedReply {
        /// The request type.
        request: &'static str,
        /// The reply type that came.
        got: String,
    },
    /// The URL or an option is unusable.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// What is wrong (`url`, `options`, …).
        what: &'static str,
        /// Details.
        message: String,
    },
    /// A value could not be encoded (e.g. NaN in JSON).
    #[error("cannot encode `{request}`: {message}")]
    Encode {
        /// The request type.
        request: &'static str,
        /// The encoder's message.
        message: String,
    },
}

impl ClientError {
    /// The server's error code, when the server refused the request.
    pub fn server_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}
