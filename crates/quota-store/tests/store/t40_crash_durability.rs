//! Durability across a process crash. The parent test runs this same test binary again as
//! a child that writes through the store and then aborts (no destructors, so sled gets no
//! chance to flush on drop, and its 500 ms background flush has not run yet); the parent
//! then reopens the directory.

use crate::fixture::{self, blank, log_id};
use openraft::RaftLogReader;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use quota_store::{LogEntry, Vote};
use std::process::{Command, Stdio};
use tempfile::TempDir;

const CHILD_DIR_ENV: &str = "QUOTA_STORE_CRASH_CHILD_DIR";
const CHILD_TEST: &str = "t40_crash_durability::child_writes_then_aborts";
const BATCHES: u64 = 20;
const PER_BATCH: u64 = 5;

fn expected_entries() -> Vec<LogEntry> {
    (1..=BATCHES * PER_BATCH).map(|i| blank(1, i)).collect()
}

fn expected_vote() -> Vote {
    Vote::new_committed(1, 1)
}

// Not a test on its own: when the parent sets `QUOTA_STORE_CRASH_CHILD_DIR`, this writes
// 20 batches of 5 entries, a vote, truncates after entry 90 and purges up to entry 10, then
// aborts the process. Without the variable it does nothing and passes.
#[tokio::test]
async fn child_writes_then_aborts() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let (mut log, _sm) = fixture::open(std::path::Path::new(&dir)).await;
    let entries = expected_entries();
    for batch in entries.chunks(PER_BATCH as usize) {
        log.blocking_append(batch.to_vec()).await.expect("append");
    }
    log.save_vote(&expected_vote()).await.expect("vote");
    log.truncate(log_id(1, 91)).await.expect("truncate");
    log.purge(log_id(1, 10)).await.expect("purge");
    std::process::abort();
}

// Property: whatever the store acknowledged (appended batches once the callback fired,
// votes, truncations and purges once they returned) survives the process dying right after.
// Set-up: a child process writes through the store and aborts at once (see above); the
// parent reopens the directory.
// Pass: the child died abnormally; the reopened log holds exactly entries 11..=90, the
// purge mark is entry 10, and the vote is there.
#[tokio::test]
async fn acknowledged_writes_survive_abort() {
    let dir = TempDir::new().expect("temp dir");
    let exe = std::env::current_exe().expect("test binary path");
    let status = Command::new(exe)
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::null())
        .status()
        .expect("run the child");
    assert!(!status.success(), "the child must abort, got {status}");

    let (mut log, _sm) = fixture::open(dir.path()).await;
    assert_eq!(log.read_vote().await.expect("vote"), Some(expected_vote()));
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 10)));
    assert_eq!(state.last_log_id, Some(log_id(1, 90)));
    let read = log.try_get_log_entries(..).await.expect("read");
    assert_eq!(read, expected_entries()[10..90].to_vec());
}
