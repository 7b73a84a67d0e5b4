//! Request builders and retry loops shared by the tests.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail};
use quota_proto::v1::{
    self, AttachRequest, CreateKeyRequest, CreatePlanRequest, GetUsageRequest, IncrementRequest,
    IncrementResponse, KeySelector, KeySpec, PlanSelector, PlanSpec, Quota, Usage,
};

use crate::client::NodeClient;

/// Pause between two attempts of a retried call; it doubles up to RETRY_PAUSE_MAX.
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(25);
/// Longest pause between two attempts.
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(400);

/// A fresh 16-byte request id.
pub fn request_id() -> Vec<u8> {
    let mut id = vec![0u8; 16];
    getrandom::fill(&mut id).expect("the OS random source works");
    id
}

/// Today's date in UTC, "YYYY-MM-DD", by this machine's clock (the nodes run here too).
pub fn today_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let (y, m, d) = civil_from_days(i64::try_from(secs / 86_400).expect("days fit i64"));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Selects a plan by id.
pub fn plan(id: &str) -> PlanSelector {
    PlanSelector {
        by: Some(v1::plan_selector::By::Id(id.to_owned())),
    }
}

/// Selects a key by id.
pub fn key(id: &str) -> KeySelector {
    KeySelector {
        by: Some(v1::key_selector::By::Id(id.to_owned())),
    }
}

/// `Data.Increment` of cost 1 for (plan, key), by ids.
pub fn increment(plan_id: &str, key_id: &str, request_id: Vec<u8>) -> IncrementRequest {
    IncrementRequest {
        key: Some(v1::increment_request::Key::KeyId(key_id.to_owned())),
        target: Some(v1::increment_request::Target::Plan(plan(plan_id))),
        cost: 1,
        request_id,
    }
}

/// A plan with a monthly quota of `limit` covering api "orders", stage "prod". Monthly, not
/// daily, so that a test running across midnight UTC does not see its counter reset.
pub fn plan_spec(name: &str, limit: u64) -> PlanSpec {
    PlanSpec {
        name: name.to_owned(),
        description: "quota-blackbox".to_owned(),
        quota: Some(Quota {
            limit,
            period: v1::Period::Month.into(),
            ..Default::default()
        }),
        stages: vec![v1::ApiStage {
            api: "orders".to_owned(),
            stage: "prod".to_owned(),
        }],
        ..Default::default()
    }
}

pub use quota_proto::status::is_permanent;

/// Calls `op` against `clients[start]`, then the next node after every retryable failure,
/// round-robin, until it succeeds, fails permanently or `deadline` passes. A write passed
/// here must carry its request id inside `op`'s captured request, so every attempt reuses it.
pub async fn retry<T, F, Fut>(
    clients: &[NodeClient],
    start: usize,
    deadline: Duration,
    op: F,
) -> anyhow::Result<T>
where
    F: FnMut(NodeClient) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut start = start;
    retry_sticky(clients, &mut start, deadline, op).await
}

/// [`retry`], leaving in `next` the index of the node that answered (or was tried last),
/// so that a caller with many requests sticks to a node that works.
pub async fn retry_sticky<T, F, Fut>(
    clients: &[NodeClient],
    next: &mut usize,
    deadline: Duration,
    mut op: F,
) -> anyhow::Result<T>
where
    F: FnMut(NodeClient) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    assert!(!clients.is_empty(), "retry needs at least one node");
    let until = Instant::now() + deadline;
    let mut pause = RETRY_PAUSE_MIN;
    loop {
        *next %= clients.len();
        let client = clients[*next].clone();
        let node = client.id;
        match op(client).await {
            Ok(reply) => return Ok(reply.into_inner()),
            Err(status) if is_permanent(status.code()) => {
                bail!("node {node} refused: {status:?}")
            }
            Err(status) => {
                if Instant::now() + pause > until {
                    bail!(
                        "no success within {deadline:?}; last error from node {node}: {status:?}"
                    );
                }
            }
        }
        *next += 1;
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_PAUSE_MAX);
    }
}

/// One `Data.Increment` of cost 1 for (plan, key) with `request_id`, retried with the same
/// id across `clients` (starting at, and sticking to, `next`) until acknowledged.
pub async fn increment_acked(
    clients: &[NodeClient],
    next: &mut usize,
    plan_id: &str,
    key_id: &str,
    request_id: Vec<u8>,
    deadline: Duration,
) -> anyhow::Result<IncrementResponse> {
    let req = increment(plan_id, key_id, request_id);
    retry_sticky(clients, next, deadline, |mut c| {
        let req = req.clone();
        async move { c.data.increment(req).await }
    })
    .await
}

/// `n` increments of (plan, key), one after the other, each with its own request id and
/// retried until acknowledged; fails unless every one is admitted.
pub async fn increments_admitted(
    clients: &[NodeClient],
    plan_id: &str,
    key_id: &str,
    n: u64,
    deadline_each: Duration,
) -> anyhow::Result<()> {
    let mut next = 0;
    for i in 0..n {
        let reply = increment_acked(
            clients,
            &mut next,
            plan_id,
            key_id,
            request_id(),
            deadline_each,
        )
        .await?;
        if !reply.allowed {
            bail!("increment {i} of {key_id} on {plan_id} was denied: {reply:?}");
        }
    }
    Ok(())
}

/// Creates a plan (monthly quota `limit`), a key and attaches the key to it, each write
/// retried across `clients`. Returns (plan id, key id).
pub async fn plan_with_key(
    clients: &[NodeClient],
    name: &str,
    limit: u64,
    deadline: Duration,
) -> anyhow::Result<(String, String)> {
    let plan_id = create_plan(clients, name, limit, deadline).await?;
    let key_id = create_key(clients, &format!("{name}-key"), deadline).await?;
    attach(clients, &plan_id, &key_id, deadline).await?;
    Ok((plan_id, key_id))
}

/// Creates a plan; returns its id.
pub async fn create_plan(
    clients: &[NodeClient],
    name: &str,
    limit: u64,
    deadline: Duration,
) -> anyhow::Result<String> {
    let req = CreatePlanRequest {
        request_id: request_id(),
        spec: Some(plan_spec(name, limit)),
    };
    let reply = retry(clients, 0, deadline, |mut c| {
        let req = req.clone();
        async move { c.admin.create_plan(req).await }
    })
    .await?;
    reply
        .plan
        .map(|p| p.id)
        .ok_or_else(|| anyhow!("CreatePlan answered no plan"))
}

/// Creates a key with a generated secret; returns its id.
pub async fn create_key(
    clients: &[NodeClient],
    name: &str,
    deadline: Duration,
) -> anyhow::Result<String> {
    let req = CreateKeyRequest {
        request_id: request_id(),
        spec: Some(KeySpec {
            name: name.to_owned(),
            ..Default::default()
        }),
    };
    let reply = retry(clients, 0, deadline, |mut c| {
        let req = req.clone();
        async move { c.admin.create_key(req).await }
    })
    .await?;
    reply
        .key
        .map(|k| k.id)
        .ok_or_else(|| anyhow!("CreateKey answered no key"))
}

/// Attaches a key to a plan.
pub async fn attach(
    clients: &[NodeClient],
    plan_id: &str,
    key_id: &str,
    deadline: Duration,
) -> anyhow::Result<()> {
    let req = AttachRequest {
        request_id: request_id(),
        plan: Some(plan(plan_id)),
        key: Some(key(key_id)),
        extra_per_period: 0,
    };
    retry(clients, 0, deadline, |mut c| {
        let req = req.clone();
        async move { c.admin.attach(req).await }
    })
    .await?;
    Ok(())
}

/// The current period's usage of (plan, key), read through `client`'s node only (retried
/// there, never on another node: the tests use this to check what one node serves).
/// `stale` skips the read-index barrier, so the answer is that node's own state machine.
pub async fn usage_via(
    client: &NodeClient,
    plan_id: &str,
    key_id: &str,
    stale: bool,
    deadline: Duration,
) -> anyhow::Result<Usage> {
    usage(
        std::slice::from_ref(client),
        plan_id,
        key_id,
        stale,
        deadline,
    )
    .await
}

/// The current period's usage of (plan, key), through any of `clients`.
pub async fn usage(
    clients: &[NodeClient],
    plan_id: &str,
    key_id: &str,
    stale: bool,
    deadline: Duration,
) -> anyhow::Result<Usage> {
    let today = today_utc();
    let req = GetUsageRequest {
        plan: Some(plan(plan_id)),
        key: Some(key(key_id)),
        start_date: today.clone(),
        end_date: today,
        allow_stale: stale,
        ..Default::default()
    };
    let reply = retry(clients, 0, deadline, |mut c| {
        let req = req.clone();
        async move { c.admin.get_usage(req).await }
    })
    .await?;
    let report = reply
        .keys
        .into_iter()
        .find(|k| k.key_id == key_id)
        .ok_or_else(|| anyhow!("GetUsage has no report for {key_id}"))?;
    report
        .current
        .ok_or_else(|| anyhow!("GetUsage has no current usage for {key_id}"))
}

/// Waits until `counter` reaches `at_least` (a load's acknowledgements, say), failing after
/// `deadline` or when every task of the load has ended first.
pub async fn wait_for_count(
    counter: &std::sync::atomic::AtomicU64,
    at_least: u64,
    tasks: &tokio::task::JoinSet<()>,
    deadline: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let now = counter.load(std::sync::atomic::Ordering::Relaxed);
        if now >= at_least {
            return Ok(());
        }
        if started.elapsed() > deadline || tasks.is_empty() {
            bail!("only {now} of {at_least} counted before the deadline or the load's end");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for every task of a load to end, failing if one panicked or `deadline` passes.
pub async fn join_all_within(
    tasks: &mut tokio::task::JoinSet<()>,
    deadline: Duration,
) -> anyhow::Result<()> {
    let joined = tokio::time::timeout(deadline, async {
        while let Some(joined) = tasks.join_next().await {
            joined.map_err(|e| anyhow!("a load task failed: {e}"))?;
        }
        anyhow::Ok(())
    })
    .await;
    match joined {
        Ok(r) => r,
        Err(_) => bail!("the load did not finish within {deadline:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Property: the day-count to date conversion is right around known dates.
    // Set-up: day numbers of 1970-01-01, 2000-02-29, 2024-12-31 and 2026-03-01.
    // Pass: each converts to its date.
    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_088), (2024, 12, 31));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
    }
}
