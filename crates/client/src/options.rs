//! How a [`crate::Client`] connects, retries and keeps the link alive.

use std::path::PathBuf;
use std::time::Duration;

use switchboard_protocol::Encoding;

use crate::ClientError;

/// Options of a [`crate::Client`]. Start from `ClientOptions::default()` and change fields.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `name` query parameter: the display name shown in presence.
    pub name: Option<String>,
    /// `client_id` query parameter. Reuse one per user or device so that direct messages
    /// reach all its connections; without it the server uses the connection id.
    pub client_id: Option<String>,
    /// `profile` query parameter (playback sessions).
    pub profile: Option<String>,
    /// `token` query parameter (JWT).
    pub token: Option<String>,
    /// JSON (text frames) or MessagePack (binary frames).
    pub encoding: Encoding,
    /// How long a request waits for its reply once written to the socket.
    pub request_timeout: Duration,
    /// From opening the TCP connection to the server's `welcome`.
    pub connect_timeout: Duration,
    /// Base of the reconnect backoff.
    pub retry_delay: Duration,
    /// Cap of the reconnect backoff.
    pub max_delay: Duration,
    /// Consecutive failed attempts before giving up (`Status::Failed`); `None` = never.
    pub max_retries: Option<u32>,
    /// `false`: never reconnect; the first disconnect is final.
    pub reconnect: bool,
    /// Requests that may wait while disconnected; more fail with `QueueFull`.
    pub queue_limit: usize,
    /// Interval between `ping`s (liveness and clock samples).
    pub ping_interval: Duration,
    /// A connection from which nothing at all arrived for this long is dead: it is
    /// dropped and reconnected, whether the server closed it or the network swallowed it
    /// (half-open sockets). Must be larger than `ping_interval`.
    pub liveness_timeout: Duration,
    /// How many clock samples the median is taken over.
    pub clock_samples: usize,
    /// Close codes after which the client does not reconnect (bad token, forbidden).
    pub terminal_close_codes: Vec<u16>,
    /// Room events buffered for the application before the client stops reading the socket
    /// (backpressure) until the application catches up.
    pub event_buffer: usize,
    /// Largest frame accepted from the server.
    pub max_message_size: usize,
    /// A file where the URL of the last server that accepted this client is written, so
    /// that the next start can try it first (see [`crate::locate`]).
    pub remember: Option<PathBuf>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            name: None,
            client_id: None,
            profile: None,
            token: None,
            encoding: Encoding::Json,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            retry_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retries: None,
            reconnect: true,
            queue_limit: 1000,
            ping_interval: Duration::from_secs(10),
            liveness_timeout: Duration::from_secs(25),
            clock_samples: 8,
            terminal_close_codes: vec![4001, 4003],
            event_buffer: 1024,
            max_message_size: 16 << 20,
            remember: None,
        }
    }
}

impl ClientOptions {
    /// Checks values that would make the client misbehave.
    pub(crate) fn validate(&self) -> Result<(), ClientError> {
        let bad = |message: &str| {
            Err(ClientError::Invalid {
                what: "options",
                message: message.to_owned(),
            })
        };
        if self.ping_interval.is_zero() {
            return bad("ping_interval must be positive");
        }
        if self.liveness_timeout <= self.ping_interval {
            return bad("liveness_timeout must be larger than ping_interval");
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return bad("request_timeout and connect_timeout must be positive");
        }
        if self.clock_samples == 0 || self.event_buffer == 0 {
            return bad("clock_samples and event_buffer must be at least 1");
        }
        if self.max_delay < self.retry_delay {
            return bad("max_delay must be at least retry_delay");
        }
        Ok(())
    }
}
