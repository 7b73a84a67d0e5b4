//! Snapshot catch-up: a follower that missed more than the leader keeps in its log is
//! brought up to date by a snapshot.

use std::time::Duration;

use anyhow::{Context, ensure};
use quota_blackbox::ops::{self, increment_acked, request_id};
use quota_blackbox::{Cluster, ClusterOpts, NodeClient, RaftTimings};
use quota_proto::v1::GetKeyRequest;

/// A snapshot after this many applied entries (small, to force several).
const SNAPSHOT_EVERY: u64 = 100;
/// Entries kept after a snapshot; the follower misses far more than this.
const KEEP_AFTER_SNAPSHOT: u64 = 10;
/// Increments before the follower stops.
const BEFORE: u64 = 10;
/// Increments while it is down: 8 snapshots' worth, so the entries it needs are purged.
const WHILE_DOWN: u64 = 800;
/// Concurrent writers while it is down.
const WRITERS: usize = 8;
/// How long the restarted follower gets to catch up.
/// Generous: under a workspace-wide `nextest run` on 2 cores this test shares the machine
/// with other tests that start `quotad` too (59 s for the whole test was seen there, 2 s
/// alone).
const CATCH_UP: Duration = Duration::from_secs(120);

// Property: a follower whose missing entries were purged from the leader's log catches up
// by installing a snapshot, and then serves the data written while it was down.
// Set-up: 3 nodes with snapshot_every_entries = 100 and keep_logs_after_snapshot = 10; a
// plan and key, 10 increments; a follower is stopped (SIGTERM); while it is down 800 more
// increments and a new key attached to the plan are written through the other two
// (several snapshots, with the log purged up to 10 entries before the last one); the
// follower is restarted.
// Pass: the follower's last_applied reaches the leader's; reads through it (its own state,
// and linearizable) show 810 used and the new key with its plan; its log has a line that
// mentions both "snapshot" and "install" (any case, any other wording), which is how we
// tell a snapshot install from a replay of the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_follower_catches_up_by_snapshot() {
    let opts = ClusterOpts {
        raft: RaftTimings {
            snapshot_every_entries: SNAPSHOT_EVERY,
            keep_logs_after_snapshot: KEEP_AFTER_SNAPSHOT,
            ..RaftTimings::default()
        },
        ..ClusterOpts::default()
    };
    let mut cluster = Cluster::start(3, opts).await.expect("cluster starts");
    let result = scenario(&mut cluster).await;
    cluster.finish(result);
}

async fn scenario(cluster: &mut Cluster) -> anyhow::Result<()> {
    let setup = Duration::from_secs(30);
    let clients = cluster.clients();
    let (plan_id, key_id) = ops::plan_with_key(&clients, "t30", 1_000_000, setup).await?;
    ops::increments_admitted(&clients, &plan_id, &key_id, BEFORE, setup).await?;

    let leader = cluster.wait_for_leader(setup).await?;
    let follower = cluster
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .context("a follower")?;
    let down_at = cluster.applied(follower).await?;
    cluster.stop(follower).await?;
    eprintln!("t30: stopped follower {follower} at applied index {down_at}");

    let others: Vec<NodeClient> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != follower)
        .map(|id| cluster.client(id))
        .collect();
    let late_key = ops::create_key(&others, "t30-late", setup).await?;
    ops::attach(&others, &plan_id, &late_key, setup).await?;
    let writes_started = std::time::Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let others = others.clone();
        let (plan_id, key_id) = (plan_id.clone(), key_id.clone());
        let share =
            WHILE_DOWN / WRITERS as u64 + u64::from((w as u64) < WHILE_DOWN % WRITERS as u64);
        writers.spawn(async move {
            let mut node = w;
            for _ in 0..share {
                let r = increment_acked(&others, &mut node, &plan_id, &key_id, request_id(), setup)
                    .await?;
                ensure!(r.allowed, "increment denied: {r:?}");
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = writers.join_next().await {
        joined.context("writer panicked")??;
    }
    let leader = cluster.wait_for_leader(setup).await?;
    let leader_applied = cluster.applied(leader).await?;
    eprintln!(
        "t30: {WHILE_DOWN} increments took {:?}; leader {leader} applied {leader_applied}; the follower missed {} entries",
        writes_started.elapsed(),
        leader_applied - down_at
    );
    ensure!(
        leader_applied - down_at > SNAPSHOT_EVERY + KEEP_AFTER_SNAPSHOT,
        "the follower missed too few entries to need a snapshot"
    );

    cluster.restart(follower)?;
    let restarted_at = std::time::Instant::now();
    let target = cluster
        .wait_caught_up(follower, CATCH_UP)
        .await
        .with_context(|| format!("restarted follower {follower} did not catch up"))?;
    eprintln!(
        "t30: follower {follower} applied {target} {:?} after its restart",
        restarted_at.elapsed()
    );

    let via = cluster.client(follower);
    for stale in [true, false] {
        let read = if stale {
            "its own state"
        } else {
            "a linearizable read"
        };
        let usage = ops::usage_via(&via, &plan_id, &key_id, stale, setup).await?;
        ensure!(
            usage.used == BEFORE + WHILE_DOWN,
            "{read} through the caught-up follower shows used {}, expected {}",
            usage.used,
            BEFORE + WHILE_DOWN
        );
        let req = GetKeyRequest {
            key: Some(ops::key(&late_key)),
            allow_stale: stale,
        };
        let got = ops::retry(std::slice::from_ref(&via), 0, setup, |mut c| {
            let req = req.clone();
            async move { c.admin.get_key(req).await }
        })
        .await
        .with_context(|| format!("{read} of the key created while the follower was down"))?;
        ensure!(
            got.key.as_ref().is_some_and(|k| k.name == "t30-late"),
            "{read} through the follower returned the wrong key: {got:?}"
        );
        ensure!(
            got.plans.iter().any(|a| a.plan_id == plan_id),
            "{read} through the follower: the late key is not attached to {plan_id}: {got:?}"
        );
    }

    let log = cluster.log_of_last_run(follower)?.to_lowercase();
    let install = log
        .lines()
        .find(|l| l.contains("snapshot") && l.contains("install"));
    let line = install.with_context(|| {
        format!(
            "no log line of the restarted follower mentions installing a snapshot \
             (RUST_LOG of the nodes: {:?}), although it caught up",
            cluster.opts().rust_log
        )
    })?;
    eprintln!("t30: the follower logged a snapshot install: {line}");
    Ok(())
}
