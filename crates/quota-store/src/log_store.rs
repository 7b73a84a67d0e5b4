//! The Raft log and its metadata (vote, committed and last purged log ids) on sled.
//!
//! Durability rule: sled by itself only fsyncs every 500 ms, so everything openraft is told
//! is stored (an appended batch, a vote, a truncation, a purge) is flushed first. A batch of
//! entries is written with one sled `Batch` and made durable with one flush, because the
//! flush, not the write, is what costs (about 0.3 ms for one entry, 1 ms for 64).

use crate::codec::{
    MAX_BYTES_PER_READ, MAX_ENTRIES_PER_READ, MAX_LOG_ENTRY_BYTES, MAX_META_BYTES, decode, encode,
    log_index, log_key,
};
use crate::error::StoreError;
use crate::{LogEntry, LogId, NodeId, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::ops::{Bound, RangeBounds};

/// Keys of the metadata tree.
const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const LAST_PURGED_KEY: &[u8] = b"last_purged";

/// The Raft log store. Cloning is cheap (sled handles are reference counted); a clone is
/// what [`RaftLogStorage::get_log_reader`] hands out.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    /// Entries keyed by big-endian index, values bincode.
    logs: sled::Tree,
    /// Vote, committed and last purged log id.
    meta: sled::Tree,
    flusher: Flusher,
}

/// Appends waiting for the group flush, at most; more wait to be queued (backpressure).
const FLUSH_QUEUE_DEPTH: usize = 1024;

/// Group commit. An append writes its batch into sled and hands its durability callback
/// here; this thread flushes once for every callback queued meanwhile and only then tells
/// openraft the entries are durable. So openraft's core is not blocked by the fsync (the
/// leader replicates to followers while its own flush runs), and appends that arrive during
/// a flush share the next one. Out-of-order completion cannot lie: a flush makes durable
/// everything written before it started, which includes every batch whose callback it holds.
/// The thread holds no database handle while idle (each request brings one), so dropping the
/// store releases sled's file lock at once, as a reopen needs; it ends when the last store
/// clone is dropped.
///
/// A dedicated thread calling sled's blocking `flush`, not a task awaiting `flush_async`:
/// `flush_async` hands the flush to sled's IO thread pool, whose every job wakes all seven of
/// its idle threads (a `notify_all`), and that pool already gets one job per flush for the
/// write itself. Measured on the three-node bench (BENCHMARKS.md): ~7 fewer context
/// switches per flush on every node.
#[derive(Clone)]
struct Flusher {
    tx: tokio::sync::mpsc::Sender<(sled::Db, LogFlushed<TypeConfig>)>,
}

impl Flusher {
    fn start() -> Result<Flusher, StoreError> {
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<(sled::Db, LogFlushed<TypeConfig>)>(FLUSH_QUEUE_DEPTH);
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || {
                while let Some((db, first)) = rx.blocking_recv() {
                    let mut waiting = vec![first];
                    while let Ok((_, more)) = rx.try_recv() {
                        waiting.push(more);
                    }
                    let flushed = db.flush();
                    drop(db);
                    if let Err(e) = &flushed {
                        tracing::error!(error = %e, "flushing the Raft log failed");
                    }
                    for callback in waiting {
                        let result = match &flushed {
                            Ok(_) => Ok(()),
                            Err(e) => Err(std::io::Error::other(e.to_string())),
                        };
                        callback.log_io_completed(result);
                    }
                }
            })
            .map_err(StoreError::Thread)?;
        Ok(Flusher { tx })
    }
}

impl fmt::Debug for LogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the entry count: sled's `Tree::len` walks the whole tree.
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

/// The half-open index range `[start, end)` a `RangeBounds` names; `end` is `None` for
/// "to the end of the log". `None` overall when the range is empty.
fn index_range(range: &impl RangeBounds<u64>) -> Option<(u64, Option<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&i) => i.checked_add(1),
        Bound::Excluded(&i) => Some(i),
        Bound::Unbounded => None,
    };
    match end {
        Some(end) if start >= end => None,
        _ => Some((start, end)),
    }
}

impl LogStore {
    /// Starts the group-flush thread.
    pub(crate) fn new(
        db: sled::Db,
        logs: sled::Tree,
        meta: sled::Tree,
    ) -> Result<LogStore, StoreError> {
        let flusher = Flusher::start()?;
        Ok(LogStore {
            db,
            logs,
            meta,
            flusher,
        })
    }

    fn get_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        match self.meta.get(key)? {
            Some(bytes) => Ok(Some(decode::<T, MAX_META_BYTES>(what, &bytes)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: Serialize>(
        &self,
        key: &[u8],
        what: &'static str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = encode(what, value, MAX_META_BYTES)?;
        self.meta.insert(key, bytes)?;
        Ok(())
    }

    /// Make every write so far durable. sled flushes the whole database (all trees), on its
    /// own thread pool, so this does not block the async runtime.
    async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Read the entries in `range`, stopping early after `max_entries` entries or once
    /// `max_bytes` encoded bytes were read (but always returning the first entry found).
    fn read_entries(
        &self,
        range: &impl RangeBounds<u64>,
        max_entries: u64,
        max_bytes: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let Some((start, end)) = index_range(range) else {
            return Ok(Vec::new());
        };
        let iter = match end {
            Some(end) => self.logs.range(log_key(start)..log_key(end)),
            None => self.logs.range(log_key(start)..),
        };
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        for item in iter {
            let (key, value) = item?;
            entries.push(decode_entry(&key, &value)?);
            bytes = bytes.saturating_add(value.len());
            if entries.len() as u64 >= max_entries || bytes >= max_bytes {
                break;
            }
        }
        Ok(entries)
    }

    fn last_log_id(&self) -> Result<Option<LogId>, StoreError> {
        match self.logs.last()? {
            Some((key, value)) => Ok(Some(decode_entry(&key, &value)?.log_id)),
            None => Ok(None),
        }
    }

    /// Write a batch of entries with one atomic sled batch and flush once.
    /// Write a batch of entries into sled (not yet durable: see [`Flusher`]).
    fn append_written<I>(&self, entries: I) -> Result<(), StoreError>
    where
        I: IntoIterator<Item = LogEntry>,
    {
        let mut batch = sled::Batch::default();
        let mut previous: Option<u64> = None;
        for entry in entries {
            let index = entry.log_id.index;
            // openraft appends consecutive entries; anything else would leave a hole.
            if let Some(p) = previous
                && p.checked_add(1) != Some(index)
            {
                return Err(StoreError::Corrupt(format!(
                    "appended batch is not consecutive: entry {index} follows {p}"
                )));
            }
            previous = Some(index);
            batch.insert(
                &log_key(index)[..],
                encode("log entry", &entry, MAX_LOG_ENTRY_BYTES)?,
            );
        }
        self.logs.apply_batch(batch)?;
        Ok(())
    }

    /// Remove entries `[index, end of log)` and flush.
    async fn truncate_durably(&self, index: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for key in self.logs.range(log_key(index)..).keys() {
            batch.remove(key?);
        }
        self.logs.apply_batch(batch)?;
        self.flush().await
    }

    /// Record `log_id` as the last purged id and remove entries `[0, log_id.index]`, in one
    /// transaction over both trees (so a crash cannot leave a purged id without its removal
    /// or the reverse), then flush.
    async fn purge_durably(&self, log_id: LogId) -> Result<(), StoreError> {
        use sled::Transactional;
        use sled::transaction::ConflictableTransactionError;

        if let Some(last) = self.get_meta::<LogId>(LAST_PURGED_KEY, "last purged log id")?
            && last >= log_id
        {
            // Already purged this far: nothing to do, and never move the mark back.
            return Ok(());
        }
        let purged = encode("last purged log id", &log_id, MAX_META_BYTES)?;
        let keys = self
            .logs
            .range(..=log_key(log_id.index))
            .keys()
            .collect::<Result<Vec<_>, _>>()?;
        (&self.logs, &self.meta).transaction(|(logs, meta)| {
            meta.insert(LAST_PURGED_KEY, purged.as_slice())?;
            for key in &keys {
                logs.remove(key)?;
            }
            Ok::<(), ConflictableTransactionError<StoreError>>(())
        })?;
        self.flush().await
    }
}

/// Decode one stored entry and check that it sits under its own index.
fn decode_entry(key: &[u8], value: &[u8]) -> Result<LogEntry, StoreError> {
    let index = log_index(key)?;
    let entry: LogEntry = decode::<LogEntry, MAX_LOG_ENTRY_BYTES>("log entry", value)?;
    if entry.log_id.index != index {
        return Err(StoreError::Corrupt(format!(
            "log key {index} holds entry {}",
            entry.log_id
        )));
    }
    Ok(entry)
}

fn read_logs_err(e: StoreError) -> StorageError<NodeId> {
    e.into_storage_error(ErrorSubject::Logs, ErrorVerb::Read)
}

fn write_logs_err(e: StoreError) -> StorageError<NodeId> {
    e.into_storage_error(ErrorSubject::Logs, ErrorVerb::Write)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, StorageError<NodeId>> {
        self.read_entries(&range, u64::MAX, usize::MAX)
            .map_err(read_logs_err)
    }

    /// Replication reads through this; the limits keep one read bounded in memory.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<LogEntry>, StorageError<NodeId>> {
        self.read_entries(&(start..end), MAX_ENTRIES_PER_READ, MAX_BYTES_PER_READ)
            .map_err(read_logs_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id = self
            .get_meta::<LogId>(LAST_PURGED_KEY, "last purged log id")
            .map_err(read_logs_err)?;
        let last_log_id = self.last_log_id().map_err(read_logs_err)?;
        Ok(LogState {
            last_purged_log_id,
            // An empty log after a purge ends where the purge did.
            last_log_id: last_log_id.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError<NodeId>> {
        let write_vote = |e: StoreError| e.into_storage_error(ErrorSubject::Vote, ErrorVerb::Write);
        self.put_meta(VOTE_KEY, "vote", vote).map_err(write_vote)?;
        // A vote must be durable before it is answered, or a restarted node could vote
        // twice in one term.
        self.flush().await.map_err(write_vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError<NodeId>> {
        self.get_meta(VOTE_KEY, "vote")
            .map_err(|e| e.into_storage_error(ErrorSubject::Vote, ErrorVerb::Read))
    }

    /// Not flushed on purpose: openraft calls this on every commit, and a committed id that
    /// is lost in a crash only means fewer entries are re-applied at start-up (the rest are
    /// applied when the leader next reports its commit index). It is never ahead of the
    /// durable log, because entries are flushed before openraft may count them as
    /// committed, and sled's next flush (the next append, or its 500 ms timer) persists it.
    async fn save_committed(
        &mut self,
        committed: Option<LogId>,
    ) -> Result<(), StorageError<NodeId>> {
        self.put_meta(COMMITTED_KEY, "committed log id", &committed)
            .map_err(|e| e.into_storage_error(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        let committed: Option<Option<LogId>> = self
            .get_meta(COMMITTED_KEY, "committed log id")
            .map_err(|e| e.into_storage_error(ErrorSubject::Store, ErrorVerb::Read))?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = LogEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // The callback tells openraft the entries are durable, so the flusher calls it only
        // after a flush that started after this write. Returning an error stops the node.
        match self.append_written(entries) {
            Ok(()) => {
                if let Err(returned) = self.flusher.tx.send((self.db.clone(), callback)).await {
                    // The flusher is gone (shutting down): report the entries as not durable.
                    let (_, callback) = returned.0;
                    callback
                        .log_io_completed(Err(std::io::Error::other("the log flusher stopped")));
                    return Err(write_logs_err(StoreError::Corrupt(
                        "the log flusher stopped".into(),
                    )));
                }
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_logs_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(%log_id, "truncating the log from this entry on");
        self.truncate_durably(log_id.index)
            .await
            .map_err(write_logs_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(%log_id, "purging the log up to this entry");
        self.purge_durably(log_id).await.map_err(write_logs_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Property: `index_range` turns every kind of bound into the right half-open range and
    // reports empty ranges as empty, including ones that would overflow.
    // Set-up: ranges of each bound kind.
    // Pass: the expected (start, end) pairs.
    #[test]
    fn index_range_handles_all_bounds() {
        assert_eq!(index_range(&(3..7)), Some((3, Some(7))));
        assert_eq!(index_range(&(3..=7)), Some((3, Some(8))));
        assert_eq!(index_range(&(3..)), Some((3, None)));
        assert_eq!(index_range(&(..7)), Some((0, Some(7))));
        assert_eq!(index_range(&(3..3)), None);
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 7..3;
        assert_eq!(index_range(&reversed), None);
        assert_eq!(index_range(&(5..=u64::MAX)), Some((5, None)));
        assert_eq!(
            index_range(&(Bound::Excluded(u64::MAX), Bound::Unbounded)),
            None
        );
    }
}
