//! The state machine: `quota_core::State` in memory, plus the last applied log id and
//! membership, and the latest snapshot persisted in sled.
//!
//! The state itself is not written to disk on every apply. openraft 0.9 supports this
//! "persistent snapshot" mode: on start-up the state machine is rebuilt from the last
//! persisted snapshot, `applied_state()` reports that snapshot's last log id, and openraft
//! re-applies the log entries after it (at once, up to the committed id the log store
//! saved; later ones once the leader reports them committed). Every snapshot is therefore
//! flushed before openraft hears of it, because openraft may then purge the log up to it.

use crate::codec::{MAX_META_BYTES, MAX_SNAPSHOT_BYTES, decode, encode};
use crate::error::StoreError;
use crate::{LogEntry, LogId, NodeId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership};
use crate::{StateReader, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, StorageError,
};
use quota_core::{Outcome, Response, State};
use std::fmt;
use std::io::Cursor;
use std::sync::{Arc, Mutex, RwLock};

/// Keys of the snapshot tree. Meta and data are written in one sled batch, so they always
/// belong to the same snapshot.
const SNAPSHOT_META_KEY: &[u8] = b"meta";
const SNAPSHOT_DATA_KEY: &[u8] = b"data";

/// Everything `apply` changes, behind one lock so that a snapshot sees a state and the log
/// id it corresponds to together.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub(crate) state: State,
    pub(crate) last_applied: Option<LogId>,
    pub(crate) membership: StoredMembership,
}

/// The shared, in-memory state machine. A `std` lock, not a tokio one: nothing awaits while
/// holding it, critical sections are short (one batch of applies, or one read), and readers
/// on the hot path should not pay for an async lock.
pub(crate) type SharedApplied = Arc<RwLock<Applied>>;

/// How many applied entries a slow watcher may fall behind before it is told to start over.
pub const APPLIED_FEED_CAPACITY: usize = 4096;

/// What the state machine tells watchers (the server's change streams) as it applies.
// Always sent behind an `Arc`, so the variants' sizes cost one allocation either way.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum AppliedEvent {
    /// A client entry was applied at log `index` and answered `response`.
    Entry {
        index: u64,
        entry: quota_core::Entry,
        response: Response,
    },
    /// A snapshot replaced the whole state at log `index`: watchers must start over.
    Reset { index: u64 },
}

/// The feed of applied events. Sending costs nothing when nobody subscribes.
pub(crate) type AppliedFeed = tokio::sync::broadcast::Sender<Arc<AppliedEvent>>;

/// The persisted latest snapshot.
#[derive(Clone)]
struct SnapshotStore {
    db: sled::Db,
    tree: sled::Tree,
    /// Serialises "is this snapshot newer than the stored one? then store it", because a
    /// snapshot build (its own task) can race an install.
    replace: Arc<Mutex<()>>,
}

impl SnapshotStore {
    fn load(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StoreError> {
        let Some(meta) = self.tree.get(SNAPSHOT_META_KEY)? else {
            return Ok(None);
        };
        let meta: SnapshotMeta = decode::<SnapshotMeta, MAX_META_BYTES>("snapshot meta", &meta)?;
        let data = self.tree.get(SNAPSHOT_DATA_KEY)?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "snapshot {} has meta but no data",
                meta.snapshot_id
            ))
        })?;
        check_snapshot_len(data.len())?;
        Ok(Some((meta, data.to_vec())))
    }

    /// Store `meta` and `data` as the current snapshot unless a newer one is stored, and
    /// make it durable.
    async fn save(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StoreError> {
        let meta_bytes = encode("snapshot meta", meta, MAX_META_BYTES)?;
        let replaced = {
            // No await while this guard lives; see `SharedApplied` for why std locks.
            let _guard = self.replace.lock().map_err(|_| StoreError::Poisoned)?;
            let newer_stored = match self.tree.get(SNAPSHOT_META_KEY)? {
                Some(bytes) => {
                    let stored: SnapshotMeta =
                        decode::<SnapshotMeta, MAX_META_BYTES>("snapshot meta", &bytes)?;
                    stored.last_log_id > meta.last_log_id
                }
                None => false,
            };
            if !newer_stored {
                let mut batch = sled::Batch::default();
                batch.insert(SNAPSHOT_META_KEY, meta_bytes);
                batch.insert(SNAPSHOT_DATA_KEY, data);
                self.tree.apply_batch(batch)?;
            }
            !newer_stored
        };
        if replaced {
            self.db.flush_async().await?;
        } else {
            tracing::info!(
                snapshot = %meta.snapshot_id,
                "not storing a snapshot older than the stored one"
            );
        }
        Ok(())
    }

    /// A snapshot id unique across restarts: the last log id it covers and a sled-generated
    /// sequence number (sled persists its id counter).
    fn next_id(&self, last: Option<LogId>) -> Result<String, StoreError> {
        let seq = self.db.generate_id()?;
        Ok(match last {
            Some(id) => format!("{}-{}-{seq}", id.leader_id, id.index),
            None => format!("none-{seq}"),
        })
    }
}

fn check_snapshot_len(len: usize) -> Result<(), StoreError> {
    let len = len as u64;
    if len > MAX_SNAPSHOT_BYTES {
        return Err(StoreError::TooLarge {
            what: "snapshot",
            len,
            max: MAX_SNAPSHOT_BYTES,
        });
    }
    Ok(())
}

fn sm_err(verb: ErrorVerb) -> impl Fn(StoreError) -> StorageError<NodeId> {
    move |e| e.into_storage_error(ErrorSubject::StateMachine, verb)
}

fn snapshot_err(
    meta: Option<&SnapshotMeta>,
    verb: ErrorVerb,
) -> impl Fn(StoreError) -> StorageError<NodeId> {
    let signature = meta.map(SnapshotMeta::signature);
    move |e| e.into_storage_error(ErrorSubject::Snapshot(signature.clone()), verb)
}

/// The Raft state machine store. Hand it to `openraft::Raft::new`; keep a
/// [`StateReader`] (from [`StateMachineStore::reader`]) to read the state.
pub struct StateMachineStore {
    applied: SharedApplied,
    snapshots: SnapshotStore,
    feed: AppliedFeed,
}

impl fmt::Debug for StateMachineStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateMachineStore").finish_non_exhaustive()
    }
}

impl StateMachineStore {
    /// Open the state machine over `tree`, restoring it from the persisted snapshot if any.
    pub(crate) fn load(db: sled::Db, tree: sled::Tree) -> Result<StateMachineStore, StoreError> {
        let snapshots = SnapshotStore {
            db,
            tree,
            replace: Arc::new(Mutex::new(())),
        };
        let applied = match snapshots.load()? {
            Some((meta, data)) => {
                let state = quota_core::snapshot::decode(&data)?;
                tracing::info!(
                    snapshot = %meta.snapshot_id,
                    bytes = data.len(),
                    "restored the state machine from the persisted snapshot"
                );
                Applied {
                    state,
                    last_applied: meta.last_log_id,
                    membership: meta.last_membership,
                }
            }
            None => Applied::default(),
        };
        Ok(StateMachineStore {
            applied: Arc::new(RwLock::new(applied)),
            snapshots,
            feed: tokio::sync::broadcast::channel(APPLIED_FEED_CAPACITY).0,
        })
    }

    /// A cheap, cloneable read handle on the state, for the server's read paths.
    pub fn reader(&self) -> StateReader {
        StateReader::new(self.applied.clone(), self.feed.clone())
    }

    /// Apply a batch under one write lock. Synchronous, so the guard never crosses an await.
    fn apply_entries<I>(&self, entries: I) -> Result<Vec<Response>, StoreError>
    where
        I: IntoIterator<Item = LogEntry>,
    {
        let mut guard = self.applied.write().map_err(|_| StoreError::Poisoned)?;
        let applied = &mut *guard;
        let entries = entries.into_iter();
        let mut responses = Vec::with_capacity(entries.size_hint().0);
        for entry in entries {
            // Applying out of order or twice would corrupt the counters.
            if let Some(last) = applied.last_applied
                && entry.log_id.index <= last.index
            {
                return Err(StoreError::Corrupt(format!(
                    "entry {} applied after {last}",
                    entry.log_id
                )));
            }
            let response = match entry.payload {
                EntryPayload::Blank => Ok(Outcome::Done),
                EntryPayload::Normal(ref command) => {
                    let response = applied.state.apply(command);
                    if self.feed.receiver_count() > 0 {
                        // No receiver is not an error: watchers come and go.
                        let _ = self.feed.send(Arc::new(AppliedEvent::Entry {
                            index: entry.log_id.index,
                            entry: command.clone(),
                            response: response.clone(),
                        }));
                    }
                    response
                }
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Ok(Outcome::Done)
                }
            };
            applied.last_applied = Some(entry.log_id);
            responses.push(response);
        }
        Ok(responses)
    }
}

/// Builds snapshots in openraft's snapshot task, while applies continue.
pub struct SnapshotBuilder {
    applied: SharedApplied,
    snapshots: SnapshotStore,
}

impl fmt::Debug for SnapshotBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotBuilder").finish_non_exhaustive()
    }
}

impl SnapshotBuilder {
    /// Encode the state with the log id and membership it corresponds to. The read lock is
    /// held while encoding, which stalls applies (not readers) for that long; the
    /// alternative, cloning the state, would double its memory instead.
    fn encode_current(&self) -> Result<(Vec<u8>, Option<LogId>, StoredMembership), StoreError> {
        let applied = self.applied.read().map_err(|_| StoreError::Poisoned)?;
        let data = quota_core::snapshot::encode(&applied.state)?;
        Ok((data, applied.last_applied, applied.membership.clone()))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError<NodeId>> {
        let (data, last_log_id, last_membership) = self
            .encode_current()
            .map_err(snapshot_err(None, ErrorVerb::Read))?;
        check_snapshot_len(data.len()).map_err(snapshot_err(None, ErrorVerb::Write))?;
        let snapshot_id = self
            .snapshots
            .next_id(last_log_id)
            .map_err(snapshot_err(None, ErrorVerb::Write))?;
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        self.snapshots
            .save(&meta, &data)
            .await
            .map_err(snapshot_err(Some(&meta), ErrorVerb::Write))?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "built a snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), StorageError<NodeId>> {
        let applied = self
            .applied
            .read()
            .map_err(|_| sm_err(ErrorVerb::Read)(StoreError::Poisoned))?;
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = LogEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.apply_entries(entries)
            .map_err(sm_err(ErrorVerb::Write))
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            applied: self.applied.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<SnapshotData>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let read_err = snapshot_err(Some(meta), ErrorVerb::Read);
        check_snapshot_len(data.len()).map_err(&read_err)?;
        let state = quota_core::snapshot::decode(&data)
            .map_err(StoreError::from)
            .map_err(&read_err)?;
        // Durable first: once this returns, openraft may purge the log the snapshot covers.
        self.snapshots
            .save(meta, &data)
            .await
            .map_err(snapshot_err(Some(meta), ErrorVerb::Write))?;
        let mut applied = self
            .applied
            .write()
            .map_err(|_| sm_err(ErrorVerb::Write)(StoreError::Poisoned))?;
        *applied = Applied {
            state,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        drop(applied);
        let _ = self.feed.send(Arc::new(AppliedEvent::Reset {
            index: meta.last_log_id.map_or(0, |l| l.index),
        }));
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "installed a snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError<NodeId>> {
        let stored = self
            .snapshots
            .load()
            .map_err(snapshot_err(None, ErrorVerb::Read))?;
        Ok(stored.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
