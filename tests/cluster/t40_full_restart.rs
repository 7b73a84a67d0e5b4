//! Full restart: every node stops (SIGTERM) and starts again; nothing is lost.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, ensure};
use quota_blackbox::ops::{self, increment_acked, request_id};
use quota_blackbox::{Cluster, ClusterOpts, NodeClient};
use quota_proto::v1::{GetKeyRequest, ListKeysRequest, ListPlansRequest, StatusRequest};
use tonic::Code;

/// How long each step may take.
const STEP: Duration = Duration::from_secs(30);

// Property: a cluster stopped as a whole and started again keeps its keys, plans,
// associations and counters, and still recognises a retried write.
// Set-up: 3 nodes with an admin token; plans gold (1,000) and silver (500); keys a, b, c;
// a and b in gold, b and c in silver; 30 / 12 / 7 / 5 increments on (gold, a) / (gold, b) /
// (silver, b) / (silver, c). Every node gets SIGTERM, all exit, all start again.
// Pass: without the token Cluster.Status is refused (UNAUTHENTICATED or PERMISSION_DENIED);
// after the restart a leader is elected, every node applies the leader's index, ListKeys
// and ListPlans return the same ids and names, GetKey(b) lists both plans, and every counter
// reads the same through every node; resending the last increment of (gold, a) with its
// request id answers the same `used` and counts nothing; a fresh increment counts one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn everything_survives_a_full_restart() {
    let opts = ClusterOpts {
        admin_token: Some(hex_token()),
        ..ClusterOpts::default()
    };
    let mut cluster = Cluster::start(3, opts).await.expect("cluster starts");
    let result = scenario(&mut cluster).await;
    cluster.finish(result);
}

/// A random 32-character token.
fn hex_token() -> String {
    request_id().iter().map(|b| format!("{b:02x}")).collect()
}

async fn scenario(cluster: &mut Cluster) -> anyhow::Result<()> {
    let clients = cluster.clients();

    // The token is required (so the fixture's clients do send it).
    let anonymous = NodeClient::new(1, cluster.addr(1), None, STEP)?;
    let refused = anonymous.cluster.clone().status(StatusRequest {}).await;
    match refused {
        Err(s) if matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied) => {}
        other => anyhow::bail!("Cluster.Status without the admin token answered {other:?}"),
    }

    let gold = ops::create_plan(&clients, "t40-gold", 1_000, STEP).await?;
    let silver = ops::create_plan(&clients, "t40-silver", 500, STEP).await?;
    let a = ops::create_key(&clients, "t40-a", STEP).await?;
    let b = ops::create_key(&clients, "t40-b", STEP).await?;
    let c = ops::create_key(&clients, "t40-c", STEP).await?;
    ops::attach(&clients, &gold, &a, STEP).await?;
    ops::attach(&clients, &gold, &b, STEP).await?;
    ops::attach(&clients, &silver, &b, STEP).await?;
    ops::attach(&clients, &silver, &c, STEP).await?;
    let counters: Vec<(&str, &str, u64)> = vec![
        (&gold, &a, 30),
        (&gold, &b, 12),
        (&silver, &b, 7),
        (&silver, &c, 5),
    ];
    for &(plan, key, n) in &counters {
        ops::increments_admitted(&clients, plan, key, n - 1, STEP).await?;
    }
    // The last increment of each counter goes separately, keeping (gold, a)'s request id.
    let mut node = 0;
    let mut last_gold_a = None;
    for &(plan, key, _) in &counters {
        let rid = request_id();
        let reply = increment_acked(&clients, &mut node, plan, key, rid.clone(), STEP).await?;
        ensure!(reply.allowed, "increment denied: {reply:?}");
        if plan == gold && key == a {
            last_gold_a = Some((rid, reply));
        }
    }
    let (last_rid, last_reply) = last_gold_a.context("(gold, a) was incremented")?;

    let keys_before = list_keys(&clients).await?;
    let plans_before = list_plans(&clients).await?;

    // Stop everything: SIGTERM to all first, so that no node sees the others leave one by one.
    let ids = cluster.ids();
    cluster.stop_all().await.context("stopping every node")?;
    for &id in &ids {
        cluster.restart(id)?;
    }
    let leader = cluster
        .wait_for_leader(STEP)
        .await
        .context("no leader after the restart")?;
    let target = cluster.applied(leader).await?;
    for &id in &ids {
        cluster.wait_applied(id, target, STEP).await?;
    }
    eprintln!("t40: restarted; leader {leader}, every node applied {target}");

    let keys_after = list_keys(&clients).await?;
    ensure!(
        keys_after == keys_before,
        "keys before {keys_before:?}, after {keys_after:?}"
    );
    let plans_after = list_plans(&clients).await?;
    ensure!(
        plans_after == plans_before,
        "plans before {plans_before:?}, after {plans_after:?}"
    );

    let req = GetKeyRequest {
        key: Some(ops::key(&b)),
        allow_stale: false,
    };
    let got = ops::retry(&clients, 0, STEP, |mut c| {
        let req = req.clone();
        async move { c.admin.get_key(req).await }
    })
    .await?;
    let mut plans_of_b: Vec<&str> = got.plans.iter().map(|a| a.plan_id.as_str()).collect();
    plans_of_b.sort_unstable();
    let mut expected = vec![gold.as_str(), silver.as_str()];
    expected.sort_unstable();
    ensure!(
        plans_of_b == expected,
        "key b is in plans {plans_of_b:?}, expected {expected:?}"
    );

    for &id in &ids {
        let via = cluster.client(id);
        for &(plan, key, n) in &counters {
            let usage = ops::usage_via(&via, plan, key, false, STEP).await?;
            ensure!(
                usage.used == n,
                "after the restart, node {id} reads used {} of ({plan}, {key}), expected {n}",
                usage.used
            );
        }
    }

    // A retry of a write acknowledged before the restart is recognised.
    let again = increment_acked(&clients, &mut node, &gold, &a, last_rid, STEP).await?;
    ensure!(
        again.used == last_reply.used && again.allowed,
        "a retry of an increment acknowledged before the restart answered {again:?}, first answer {last_reply:?}"
    );
    let usage = ops::usage(&clients, &gold, &a, false, STEP).await?;
    ensure!(
        usage.used == 30,
        "the retry after the restart counted again: used {}",
        usage.used
    );

    // And the cluster takes new writes.
    let fresh = increment_acked(&clients, &mut node, &gold, &a, request_id(), STEP).await?;
    ensure!(
        fresh.allowed && fresh.used == 31,
        "a fresh increment after the restart answered {fresh:?}"
    );
    Ok(())
}

/// Every key, id -> name, read linearizably.
async fn list_keys(clients: &[NodeClient]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let req = ListKeysRequest {
            page_token: page_token.clone(),
            page_size: 1000,
            ..Default::default()
        };
        let page = ops::retry(clients, 0, STEP, |mut c| {
            let req = req.clone();
            async move { c.admin.list_keys(req).await }
        })
        .await?;
        out.extend(page.keys.into_iter().map(|k| (k.id, k.name)));
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = page.next_page_token;
    }
}

/// Every plan, id -> (name, quota limit), read linearizably.
async fn list_plans(clients: &[NodeClient]) -> anyhow::Result<BTreeMap<String, (String, u64)>> {
    let mut out = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let req = ListPlansRequest {
            page_token: page_token.clone(),
            page_size: 1000,
            ..Default::default()
        };
        let page = ops::retry(clients, 0, STEP, |mut c| {
            let req = req.clone();
            async move { c.admin.list_plans(req).await }
        })
        .await?;
        for p in page.plans {
            let spec = p.spec.unwrap_or_default();
            let limit = spec.quota.map_or(0, |q| q.limit);
            out.insert(p.id, (spec.name, limit));
        }
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = page.next_page_token;
    }
}
