//! Errors of a node, and their one mapping to gRPC status codes. "Try again / the leader is
//! elsewhere" (retryable) is kept apart from "this request is wrong" and "this node is
//! broken". No error carries a secret.

use quota_proto::ToStatus;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The request is malformed or invalid; nothing changed.
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Invalid(#[from] quota_core::ValidationError),
    /// The state machine refused the command; nothing changed.
    #[error(transparent)]
    Refused(#[from] quota_core::ApplyError),
    #[error("{0}")]
    NotFound(String),
    /// No leader could be reached in time (an election, or this node is cut off).
    #[error("no leader available: {0}; retry, with the same request id")]
    NoLeader(String),
    /// This node is not the leader; the caller may retry there.
    #[error("not the leader; the leader is node {leader_id:?} at {leader_addr:?}")]
    NotLeader {
        leader_id: Option<u64>,
        leader_addr: Option<String>,
    },
    /// The write may or may not have been applied; retrying with the same request id is safe.
    #[error("the outcome is unknown ({0}); retry with the same request id")]
    Unknown(String),
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
    #[error("storage error: {0}")]
    Store(#[from] quota_store::StoreError),
}

impl From<NodeError> for tonic::Status {
    fn from(e: NodeError) -> tonic::Status {
        match e {
            NodeError::BadRequest(m) => tonic::Status::invalid_argument(m),
            NodeError::Invalid(v) => v.to_status(),
            NodeError::Refused(r) => r.to_status(),
            NodeError::NotFound(m) => tonic::Status::not_found(m),
            e
            @ (NodeError::NoLeader(_) | NodeError::NotLeader { .. } | NodeError::ShuttingDown) => {
                tonic::Status::unavailable(e.to_string())
            }
            e @ NodeError::Unknown(_) => tonic::Status::unavailable(e.to_string()),
            e @ (NodeError::Internal(_) | NodeError::Store(_)) => {
                tonic::Status::internal(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quota_core::{ApplyError, Entity};

    // Property: every error maps to the code its callers act on. Set-up: one of each.
    // Pass: the codes below.
    #[test]
    fn status_codes() {
        let code = |e: NodeError| tonic::Status::from(e).code();
        assert_eq!(
            code(NodeError::BadRequest("x".into())),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(NodeError::Refused(ApplyError::not_found(Entity::Key, "k1"))),
            tonic::Code::NotFound
        );
        assert_eq!(
            code(NodeError::Refused(ApplyError::conflict(
                Entity::Plan,
                "dup"
            ))),
            tonic::Code::AlreadyExists
        );
        assert_eq!(
            code(NodeError::NoLeader("election".into())),
            tonic::Code::Unavailable
        );
        assert_eq!(code(NodeError::Internal("x".into())), tonic::Code::Internal);
    }
}
