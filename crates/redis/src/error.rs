//! Errors of the Redis cluster engine.

/// Why the cluster engine could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The Redis URL does not parse.
    #[error("invalid Redis URL: {0}")]
    Url(#[source] redis::RedisError),
    /// Redis could not be reached or refused a command.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Something read from Redis is not what this engine wrote.
    #[error("unexpected data in Redis: {0}")]
    Data(String),
}

impl From<ClusterError> for switchboard_hub::BrokerError {
    fn from(e: ClusterError) -> Self {
        switchboard_hub::BrokerError::Unavailable(e.to_string())
    }
}
