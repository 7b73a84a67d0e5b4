use crate::fixture::{self, blank, log_id, membership, normal};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{RaftLogReader, RaftSnapshotBuilder, StorageHelper};
use quota_store::{LogEntry, Vote};
use tempfile::TempDir;

// Property: everything acknowledged to openraft survives closing and reopening the store:
// log entries, vote, committed id, purge mark and the latest snapshot, and the state
// machine comes back at the snapshot, from where openraft 0.9's start-up re-applies the
// committed entries after it.
// Set-up: append 12 entries (blank, membership, 10 quota commands) in two batches, save a
// vote and the committed id, apply 7 entries, build a snapshot, purge the log up to entry
// 3; drop everything; reopen the same directory.
// Pass: the vote, committed id, log state and entries 4..=12 read back equal; the snapshot
// meta and bytes are the ones built; `applied_state()` is the snapshot's; and after
// `StorageHelper::get_initial_state` (what `Raft::new` runs) the state equals the state of
// applying all 10 commands, with last applied at entry 12.
#[tokio::test]
async fn reopen_keeps_log_vote_and_snapshot() {
    let dir = TempDir::new().expect("temp dir");
    let (commands, ids) = fixture::commands(7);
    assert_eq!(commands.len(), 10);
    let mut entries: Vec<LogEntry> = vec![blank(1, 1), membership(1, 2, &[1, 2, 3])];
    for (i, c) in commands.iter().enumerate() {
        entries.push(normal(2, 3 + i as u64, c.clone()));
    }
    let vote = Vote::new_committed(2, 1);

    let built_meta;
    let built_data;
    {
        let (mut log, mut sm) = fixture::open(dir.path()).await;
        log.blocking_append(entries[..5].to_vec())
            .await
            .expect("append");
        log.blocking_append(entries[5..].to_vec())
            .await
            .expect("append");
        log.save_vote(&vote).await.expect("save vote");
        log.save_committed(Some(log_id(2, 12)))
            .await
            .expect("save committed");

        let responses = sm.apply(entries[..7].to_vec()).await.expect("apply");
        assert_eq!(responses.len(), 7);
        assert!(responses.iter().all(|r| r.is_ok()), "{responses:?}");

        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build snapshot");
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(2, 7)));
        built_meta = snapshot.meta.clone();
        built_data = snapshot.snapshot.into_inner();

        log.purge(log_id(2, 3)).await.expect("purge");
    }

    let (mut log, mut sm) = fixture::open(dir.path()).await;
    assert_eq!(log.read_vote().await.expect("read vote"), Some(vote));
    assert_eq!(
        log.read_committed().await.expect("read committed"),
        Some(log_id(2, 12))
    );
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 3)));
    assert_eq!(state.last_log_id, Some(log_id(2, 12)));
    let read = log.try_get_log_entries(0..100).await.expect("read log");
    assert_eq!(read, entries[3..].to_vec());

    let current = sm
        .get_current_snapshot()
        .await
        .expect("current snapshot")
        .expect("a snapshot is stored");
    assert_eq!(current.meta, built_meta);
    assert_eq!(current.snapshot.into_inner(), built_data);

    let (applied, stored_membership) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(log_id(2, 7)));
    assert_eq!(stored_membership.log_id(), &Some(log_id(1, 2)));
    let reader = sm.reader();
    let expected_at_snapshot = fixture::state_after(&commands[..5]);
    assert!(reader.read(|s| *s == expected_at_snapshot).expect("read"));

    // What `Raft::new` does first: it re-applies committed entries after the snapshot.
    let initial = StorageHelper::new(&mut log, &mut sm)
        .get_initial_state()
        .await
        .expect("initial state");
    assert_eq!(initial.committed, Some(log_id(2, 12)));
    assert_eq!(initial.snapshot_meta, built_meta);
    assert_eq!(reader.last_applied().expect("read"), Some(log_id(2, 12)));
    let expected = fixture::state_after(&commands);
    assert!(reader.read(|s| *s == expected).expect("read"));
    let usage = reader
        .read(|s| s.usage(ids.plan, ids.key, fixture::NOON))
        .expect("read")
        .expect("usage of an attached key");
    // Seven increments of 3, the last one a retry of the sixth: 18 used.
    assert_eq!(usage.used, 18);
}
