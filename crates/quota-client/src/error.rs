//! The errors of the client crate. None of them ever holds a secret.

/// A configuration value is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("no endpoints: give at least one node address")]
    NoEndpoints,
    #[error("endpoint `{endpoint}` is not a valid URI: {reason}")]
    BadEndpoint { endpoint: String, reason: String },
    #[error("gateway_id must be 1 to 128 bytes without control characters")]
    BadGatewayId,
    #[error("the gateway token is not valid header text")]
    BadToken,
    #[error("{field} is {value}; it must be {rule}")]
    OutOfRange {
        field: &'static str,
        value: String,
        rule: &'static str,
    },
}

/// What can go wrong talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// No node answered in time (all endpoints down, or the deadline passed). Retryable.
    #[error("the cluster is unreachable: {0}")]
    Unavailable(String),
    /// A node refused the call for a reason no retry fixes (bad token, bad request).
    #[error("the cluster refused the call: {0}")]
    Refused(String),
    /// The client was shut down.
    #[error("the client is shut down")]
    Shutdown,
}
