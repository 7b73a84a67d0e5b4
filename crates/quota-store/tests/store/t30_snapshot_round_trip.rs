use crate::fixture::{self, membership, normal};
use openraft::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use quota_store::LogEntry;
use std::io::Cursor;
use tempfile::TempDir;

// Property: a snapshot built on one node and installed on another reproduces the state
// machine exactly: the quota state, the last applied log id and the membership.
// Set-up: store A applies a membership entry and a plan, a key, an attachment and five
// increments (one a retry); A builds a snapshot; a fresh store B receives its bytes and
// installs it.
// Pass: B's state equals A's (and the usage shows the increments); B's applied state and
// current snapshot meta equal A's; B's current snapshot bytes are A's.
#[tokio::test]
async fn snapshot_installs_into_a_fresh_store() {
    let dir_a = TempDir::new().expect("temp dir");
    let dir_b = TempDir::new().expect("temp dir");
    let (_log_a, mut sm_a) = fixture::open(dir_a.path()).await;
    let (_log_b, mut sm_b) = fixture::open(dir_b.path()).await;

    let (commands, ids) = fixture::commands(5);
    let mut entries: Vec<LogEntry> = vec![membership(1, 1, &[1])];
    for (i, c) in commands.iter().enumerate() {
        entries.push(normal(1, 2 + i as u64, c.clone()));
    }
    let responses = sm_a.apply(entries).await.expect("apply");
    assert!(responses.iter().all(|r| r.is_ok()), "{responses:?}");

    let snapshot = sm_a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot");
    let meta = snapshot.meta.clone();
    let bytes = snapshot.snapshot.into_inner();

    let mut receiving = sm_b.begin_receiving_snapshot().await.expect("begin");
    receiving.get_mut().extend_from_slice(&bytes);
    sm_b.install_snapshot(&meta, receiving)
        .await
        .expect("install");

    let state_a = sm_a.reader().read(Clone::clone).expect("read A");
    let state_b = sm_b.reader().read(Clone::clone).expect("read B");
    assert_eq!(state_a, state_b);
    assert_eq!(state_b, fixture::state_after(&commands));
    let usage = state_b
        .usage(ids.plan, ids.key, fixture::NOON)
        .expect("usage of an attached key");
    // Five increments of 3, the last a retry of the fourth: 12 used of 100.
    assert_eq!((usage.used, usage.remaining), (12, Some(88)));

    assert_eq!(
        sm_a.applied_state().await.expect("A"),
        sm_b.applied_state().await.expect("B")
    );
    let current_b = sm_b
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("B stores the installed snapshot");
    assert_eq!(current_b.meta, meta);
    assert_eq!(current_b.snapshot.into_inner(), bytes);
}

// Property: a snapshot that is not a quotad snapshot is refused and changes nothing.
// Set-up: a store applies a few commands, then is asked to install garbage bytes under a
// plausible meta.
// Pass: install fails; the state, applied state and current snapshot are unchanged.
#[tokio::test]
async fn corrupt_snapshot_is_refused() {
    let dir = TempDir::new().expect("temp dir");
    let (_log, mut sm) = fixture::open(dir.path()).await;
    let (commands, _) = fixture::commands(2);
    let entries: Vec<LogEntry> = commands
        .iter()
        .enumerate()
        .map(|(i, c)| normal(1, 1 + i as u64, c.clone()))
        .collect();
    sm.apply(entries).await.expect("apply");
    let before = sm.reader().read(Clone::clone).expect("read");
    let applied_before = sm.applied_state().await.expect("applied");

    let mut meta = quota_store::SnapshotMeta {
        last_log_id: Some(fixture::log_id(9, 100)),
        snapshot_id: "forged".into(),
        ..Default::default()
    };
    meta.last_membership = applied_before.1.clone();
    let garbage = Box::new(Cursor::new(b"not a snapshot at all".to_vec()));
    assert!(sm.install_snapshot(&meta, garbage).await.is_err());

    assert!(sm.reader().read(|s| *s == before).expect("read"));
    assert_eq!(sm.applied_state().await.expect("applied"), applied_before);
    assert!(sm.get_current_snapshot().await.expect("current").is_none());
}
