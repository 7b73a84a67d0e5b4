//! quota-store: the Raft log and the state machine of quotad, for openraft 0.9 (storage v2),
//! on sled.
//!
//! [`open`] opens one sled database and returns the two halves openraft wants: a
//! [`LogStore`] (log entries, vote, committed and purged log ids) and a
//! [`StateMachineStore`] (the `quota_core::State`, applied in memory, and its snapshots).
//! The server hands both to `openraft::Raft::new` and keeps a [`StateReader`] to read the
//! state; it never touches sled.
//!
//! Durability: everything openraft is told is stored has been flushed to disk first
//! (appended entries before the `LogFlushed` callback, votes, truncations, purges and
//! snapshots before returning), because sled by itself only fsyncs every 500 ms.
//!
//! # Layout
//! - `lib.rs`: the openraft type configuration ([`TypeConfig`]), the type aliases the server
//!   uses, [`open`], and [`StateReader`].
//! - [`error`]: [`StoreError`] and its conversion into `openraft::StorageError`.
//! - [`codec`]: log keys, bincode settings and the size limits every decoder enforces.
//! - `log_store.rs`: [`LogStore`], `RaftLogStorage` and `RaftLogReader` on two sled trees.
//! - `state_machine.rs`: [`StateMachineStore`] (`RaftStateMachine`) and
//!   [`SnapshotBuilder`]; the latest snapshot is persisted in a third tree.
//!
//! # On-disk layout (one sled database)
//! - tree `logs`: big-endian `u64` index -> bincode `openraft::Entry<TypeConfig>`.
//! - tree `raft_meta`: `vote`, `committed`, `last_purged` -> bincode values.
//! - tree `snapshot`: `meta` -> bincode `SnapshotMeta`; `data` -> `quota_core::snapshot`
//!   bytes (magic number, format version, state). Both written in one batch.

pub mod codec;
pub mod error;
mod log_store;
mod state_machine;

use std::io::Cursor;
use std::path::Path;
use std::sync::{PoisonError, RwLockReadGuard};

pub use error::StoreError;
pub use log_store::LogStore;
pub use state_machine::{APPLIED_FEED_CAPACITY, AppliedEvent, SnapshotBuilder, StateMachineStore};

openraft::declare_raft_types!(
    /// openraft's type configuration for quotad: log entries carry `quota_core::Entry`,
    /// applying one answers a `quota_core::Response`.
    pub TypeConfig:
        D = quota_core::Entry,
        R = quota_core::Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A node's id in the cluster.
pub type NodeId = u64;
/// What the cluster knows about a node: its address.
pub type Node = openraft::BasicNode;
/// A running Raft node of quotad.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log position: leader term and node, and index.
pub type LogId = openraft::LogId<NodeId>;
/// A Raft log entry (named so as not to clash with `quota_core::Entry`, its payload).
pub type LogEntry = openraft::Entry<TypeConfig>;
pub type Vote = openraft::Vote<NodeId>;
pub type Membership = openraft::Membership<NodeId, Node>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// The bytes of a snapshot, whole, in memory (openraft 0.9 without `generic-snapshot-data`).
pub type SnapshotData = Cursor<Vec<u8>>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;
/// openraft's storage error, which our [`StoreError`] converts into.
pub type RaftStorageError = openraft::StorageError<NodeId>;

/// openraft's message and error types, instantiated for quotad.
pub mod typ {
    use super::{Node, NodeId, TypeConfig};

    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
    pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
    pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
    pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
    pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
    pub type SnapshotResponse = openraft::raft::SnapshotResponse<NodeId>;
    pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;

    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
    pub type RPCError<E = openraft::error::Infallible> = openraft::error::RPCError<NodeId, Node, E>;
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, Node>;
    pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, Node>;
    pub type ForwardToLeader = openraft::error::ForwardToLeader<NodeId, Node>;
    pub type InitializeError = openraft::error::InitializeError<NodeId, Node>;
    pub type InstallSnapshotError = openraft::error::InstallSnapshotError;
    pub type Fatal = openraft::error::Fatal<NodeId>;
}

/// sled tree names.
const LOGS_TREE: &[u8] = b"logs";
const RAFT_META_TREE: &[u8] = b"raft_meta";
const SNAPSHOT_TREE: &[u8] = b"snapshot";

/// Open (or create) the store in directory `path`, and restore the state machine from the
/// last persisted snapshot. Log entries after that snapshot are re-applied by openraft when
/// `Raft::new` starts.
///
/// This blocks while sled recovers its log and the snapshot is decoded, which is fine at
/// start-up. Only one process may open a directory at a time (sled locks it); within a
/// process, drop every handle of a previous `open` (including readers' sled handles, i.e.
/// the `LogStore`, `StateMachineStore` and any snapshot builder) before opening it again.
pub async fn open(path: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let db = sled::Config::new().path(path).open()?;
    let logs = db.open_tree(LOGS_TREE)?;
    let meta = db.open_tree(RAFT_META_TREE)?;
    let snapshots = db.open_tree(SNAPSHOT_TREE)?;
    let state_machine = StateMachineStore::load(db.clone(), snapshots)?;
    Ok((LogStore::new(db, logs, meta)?, state_machine))
}

/// A cheap, cloneable, read-only handle on the applied state.
///
/// Reads take a `std::sync::RwLock` read lock for the duration of the closure: keep closures
/// short and never await inside one (the closure is synchronous, so you cannot). Applies wait
/// for readers and readers for an apply batch, both briefly.
#[derive(Clone)]
pub struct StateReader {
    applied: state_machine::SharedApplied,
    feed: state_machine::AppliedFeed,
}

impl std::fmt::Debug for StateReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateReader").finish_non_exhaustive()
    }
}

impl StateReader {
    fn new(applied: state_machine::SharedApplied, feed: state_machine::AppliedFeed) -> StateReader {
        StateReader { applied, feed }
    }

    /// Follow applied entries from now on. Subscribe before reading the state, then skip
    /// events at or below the index the read saw.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<std::sync::Arc<AppliedEvent>> {
        self.feed.subscribe()
    }

    fn lock(&self) -> Result<RwLockReadGuard<'_, state_machine::Applied>, StoreError> {
        self.applied
            .read()
            .map_err(|_: PoisonError<_>| StoreError::Poisoned)
    }

    /// Run `f` on the current state.
    pub fn read<R>(&self, f: impl FnOnce(&quota_core::State) -> R) -> Result<R, StoreError> {
        Ok(f(&self.lock()?.state))
    }

    /// Run `f` on the current state and the id of the last entry applied to it (`None`
    /// before the first), seen together.
    pub fn read_with_applied<R>(
        &self,
        f: impl FnOnce(&quota_core::State, Option<LogId>) -> R,
    ) -> Result<R, StoreError> {
        let applied = self.lock()?;
        Ok(f(&applied.state, applied.last_applied))
    }

    /// The id of the last entry applied to the state.
    pub fn last_applied(&self) -> Result<Option<LogId>, StoreError> {
        Ok(self.lock()?.last_applied)
    }
}
