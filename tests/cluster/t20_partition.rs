//! Partition: a node cut off from the other two acknowledges nothing, the majority keeps
//! serving, and the node catches up after the partition heals.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use quota_blackbox::ops::{self, increment, request_id};
use quota_blackbox::{Cluster, ClusterOpts, LinkMode, NodeClient};

/// The plan's quota: far above what the test spends.
const LIMIT: u64 = 1_000_000;
/// Increments acknowledged before any partition.
const BASELINE: u64 = 20;
/// Increments sent to the isolated node in each round (all must fail).
const WRITES_TO_ISOLATED: usize = 10;
/// How long a write to the isolated node may wait for an answer before it counts as failed.
const ISOLATED_WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// Increments sent to the majority in each round (all must be acknowledged).
const WRITES_TO_MAJORITY: u64 = 50;
/// How long one write to the majority is retried; covers a re-election.
const MAJORITY_WRITE_DEADLINE: Duration = Duration::from_secs(20);
/// How long the healed node gets to catch up.
const CATCH_UP: Duration = Duration::from_secs(30);

// Property: a node cut off from the other two acknowledges no write, and none of the
// writes sent to it takes effect later; the majority keeps serving; after the partition
// heals, the node catches up and serves the majority's writes.
// Set-up: 3 nodes; one plan (quota 1,000,000) with two keys: `main` takes writes through
// the majority, `iso` only writes sent to the isolated node. Two rounds: first the leader
// is isolated (its writes could sit uncommitted in its log) with its links refusing
// connections, then a follower of the new leader (its writes can only be forwarded into the
// cut) with its links blackholed (connections hang silently). In each round: isolate, send 10
// increments of `iso` to the isolated node (3 s each), 50 increments of `main` to the
// others (retried across them), heal.
// Pass: no write to the isolated node is answered OK; every majority write is
// acknowledged and the majority agrees on a leader other than the isolated node; a
// linearizable read through the isolated node during the cut fails or is up to date;
// after healing, the node's last_applied reaches the leader's, and reads through it (both
// linearizable and from its own state) show `main` = every acknowledged increment and
// `iso` = 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn isolated_node_acknowledges_nothing_and_catches_up() {
    let mut cluster = Cluster::start(3, ClusterOpts::default())
        .await
        .expect("cluster starts");
    let result = scenario(&mut cluster).await;
    cluster.finish(result);
}

async fn scenario(cluster: &mut Cluster) -> anyhow::Result<()> {
    let clients = cluster.clients();
    let setup = Duration::from_secs(30);
    let (plan_id, main_key) = ops::plan_with_key(&clients, "t20", LIMIT, setup).await?;
    let iso_key = ops::create_key(&clients, "t20-iso", setup).await?;
    ops::attach(&clients, &plan_id, &iso_key, setup).await?;
    ops::increments_admitted(&clients, &plan_id, &main_key, BASELINE, setup).await?;
    let mut main_acked = BASELINE;

    let leader = cluster.leader().await.context("no leader before round 1")?;
    let ids = Ids {
        plan: &plan_id,
        main: &main_key,
        iso: &iso_key,
    };
    round(
        cluster,
        "leader",
        leader,
        LinkMode::Refuse,
        &ids,
        &mut main_acked,
    )
    .await?;

    let leader = cluster.wait_for_leader(setup).await?;
    let follower = cluster
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .context("a follower")?;
    round(
        cluster,
        "follower",
        follower,
        LinkMode::Blackhole,
        &ids,
        &mut main_acked,
    )
    .await?;
    Ok(())
}

/// The plan and the two keys.
struct Ids<'a> {
    plan: &'a str,
    main: &'a str,
    iso: &'a str,
}

async fn round(
    cluster: &mut Cluster,
    what: &str,
    victim: u64,
    mode: LinkMode,
    ids: &Ids<'_>,
    main_acked: &mut u64,
) -> anyhow::Result<()> {
    let (plan_id, main_key, iso_key) = (ids.plan, ids.main, ids.iso);
    eprintln!("t20: isolating node {victim} (the {what}), links {mode:?}");
    cluster.isolate_with(victim, mode);
    let cut_at = std::time::Instant::now();
    let isolated = cluster.client(victim);
    let majority: Vec<NodeClient> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != victim)
        .map(|id| cluster.client(id))
        .collect();

    // Writes to the isolated node and to the majority, at the same time.
    let to_isolated = writes_to_isolated(&isolated, plan_id, iso_key);
    let to_majority = async {
        let r = ops::increments_admitted(
            &majority,
            plan_id,
            main_key,
            WRITES_TO_MAJORITY,
            MAJORITY_WRITE_DEADLINE,
        )
        .await;
        (r, cut_at.elapsed())
    };
    let (answered, (majority_result, majority_took)) = tokio::join!(to_isolated, to_majority);
    majority_result
        .with_context(|| format!("the majority stopped serving with node {victim} cut off"))?;
    *main_acked += WRITES_TO_MAJORITY;
    eprintln!(
        "t20: the majority acknowledged {WRITES_TO_MAJORITY} writes {majority_took:?} after the cut"
    );
    ensure!(
        answered.is_empty(),
        "node {victim} ({what}), cut off from the others, answered OK to {} of {WRITES_TO_ISOLATED} writes: {answered:?}",
        answered.len()
    );

    let leader = cluster.wait_for_leader(MAJORITY_WRITE_DEADLINE).await?;
    ensure!(
        leader != victim,
        "the majority agrees on node {victim} as leader while it is cut off"
    );

    // A linearizable read through the cut-off node must not serve stale data.
    let read = tokio::time::timeout(
        ISOLATED_WRITE_TIMEOUT,
        ops::usage_via(
            &isolated,
            plan_id,
            main_key,
            false,
            Duration::from_millis(500),
        ),
    )
    .await;
    if let Ok(Ok(usage)) = read {
        ensure!(
            usage.used == *main_acked,
            "a linearizable read through cut-off node {victim} answered used {} while the majority has {main_acked}",
            usage.used
        );
    }

    cluster.heal(victim);
    let healed_at = std::time::Instant::now();
    eprintln!("t20: healed node {victim}");
    let target = cluster
        .wait_caught_up(victim, CATCH_UP)
        .await
        .with_context(|| format!("node {victim} did not catch up after healing"))?;
    eprintln!(
        "t20: node {victim} applied the leader's index {target} {:?} after the heal",
        healed_at.elapsed()
    );

    for stale in [false, true] {
        let read = if stale {
            "its own state"
        } else {
            "a linearizable read"
        };
        let main = ops::usage_via(&isolated, plan_id, main_key, stale, CATCH_UP).await?;
        ensure!(
            main.used == *main_acked,
            "after healing, {read} through node {victim} shows used {} of `main`, the majority acknowledged {main_acked}",
            main.used
        );
        let iso = ops::usage_via(&isolated, plan_id, iso_key, stale, CATCH_UP).await?;
        ensure!(
            iso.used == 0,
            "after healing, {read} through node {victim} shows used {} of `iso`: writes sent to the cut-off node took effect",
            iso.used
        );
    }
    // And through the leader, so the check does not depend on the healed node alone.
    let iso = ops::usage_via(&cluster.client(leader), plan_id, iso_key, false, CATCH_UP).await?;
    if iso.used != 0 {
        bail!(
            "the leader shows used {} of `iso`: writes sent to the cut-off node took effect",
            iso.used
        );
    }
    Ok(())
}

/// Sends WRITES_TO_ISOLATED increments of `key` to the isolated node, concurrently, one
/// attempt each; returns the answers that came back OK (there must be none).
async fn writes_to_isolated(client: &NodeClient, plan_id: &str, key: &str) -> Vec<String> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..WRITES_TO_ISOLATED {
        let mut c = client.clone();
        let req = increment(plan_id, key, request_id());
        tasks.spawn(async move {
            tokio::time::timeout(ISOLATED_WRITE_TIMEOUT, c.data.increment(req)).await
        });
    }
    let mut answered = Vec::new();
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    while let Some(joined) = tasks.join_next().await {
        let failure = match joined {
            Ok(Ok(Ok(reply))) => {
                answered.push(format!("{:?}", reply.into_inner()));
                continue;
            }
            Ok(Ok(Err(status))) => format!("{:?}", status.code()),
            Ok(Err(_)) => "no answer within the timeout".to_owned(),
            Err(e) => format!("task failed: {e}"),
        };
        *failures.entry(failure).or_default() += 1;
    }
    eprintln!("t20: writes to the cut-off node failed as: {failures:?}");
    answered
}
