//! The store's one error type, and how it becomes openraft's [`openraft::StorageError`].

use crate::NodeId;
use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};

/// Something went wrong reading or writing the store. Every variant is fatal for a Raft
/// node: openraft stops the node when storage fails, because continuing could break its
/// promises (a vote or an entry it acknowledged might not be on disk).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an I/O error or a bug.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),

    /// A value could not be serialised.
    #[error("encoding {what}: {error}")]
    Encode {
        what: &'static str,
        error: bincode::error::EncodeError,
    },

    /// Stored bytes could not be deserialised.
    #[error("decoding {what}: {error}")]
    Decode {
        what: &'static str,
        error: bincode::error::DecodeError,
    },

    /// A value is larger than its limit (see the constants in [`crate::codec`]).
    #[error("{what} is {len} bytes, over the limit of {max} bytes")]
    TooLarge {
        what: &'static str,
        len: u64,
        max: u64,
    },

    /// Stored data contradicts itself (a log key that does not match its entry, say).
    #[error("storage is corrupt: {0}")]
    Corrupt(String),

    /// A snapshot of the state machine could not be encoded or decoded.
    #[error("snapshot: {0}")]
    Snapshot(#[from] quota_core::snapshot::SnapshotError),

    /// A thread panicked while it held the state machine's lock, so the state may be half
    /// updated. `State::apply` does not panic, so this means a bug.
    #[error("the state machine lock is poisoned: a thread panicked while holding it")]
    Poisoned,

    /// The group-flush thread could not be started.
    #[error("starting the log flush thread: {0}")]
    Thread(std::io::Error),
}

impl StoreError {
    /// Wrap this error for openraft, saying what was being done to what.
    pub fn into_storage_error(
        self,
        subject: ErrorSubject<NodeId>,
        verb: ErrorVerb,
    ) -> StorageError<NodeId> {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }

    /// The most likely operation behind this error, when the caller does not say.
    fn likely_verb(&self) -> ErrorVerb {
        match self {
            StoreError::Encode { .. }
            | StoreError::Sled(_)
            | StoreError::Poisoned
            | StoreError::Thread(_) => ErrorVerb::Write,
            StoreError::Decode { .. }
            | StoreError::TooLarge { .. }
            | StoreError::Corrupt(_)
            | StoreError::Snapshot(_) => ErrorVerb::Read,
        }
    }
}

/// A fallback for code outside this crate; inside it, every call site names the subject
/// and verb with [`StoreError::into_storage_error`].
impl From<StoreError> for StorageError<NodeId> {
    fn from(e: StoreError) -> Self {
        let verb = e.likely_verb();
        e.into_storage_error(ErrorSubject::Store, verb)
    }
}

impl From<sled::transaction::TransactionError<StoreError>> for StoreError {
    fn from(e: sled::transaction::TransactionError<StoreError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Property: converting to openraft's error keeps the subject, the verb and our message.
    // Set-up: a corruption error converted with an explicit subject and verb, and through
    // the `From` fallback.
    // Pass: the IO error carries the given subject and verb, and the text mentions the cause.
    #[test]
    fn conversion_keeps_subject_verb_and_message() {
        // `StorageIOError` keeps its fields private; its Display shows verb and subject.
        let e = StoreError::Corrupt("log key 7 holds entry 8".into())
            .into_storage_error(ErrorSubject::Logs, ErrorVerb::Read);
        let text = e.into_io().expect("an IO storage error").to_string();
        assert!(text.starts_with("when Read Logs:"), "{text}");
        assert!(text.contains("log key 7 holds entry 8"), "{text}");

        let e: StorageError<NodeId> = StoreError::Poisoned.into();
        let text = e.into_io().expect("an IO storage error").to_string();
        assert!(text.starts_with("when Write Store:"), "{text}");
    }
}
