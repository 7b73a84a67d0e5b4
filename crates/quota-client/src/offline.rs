//! The offline report task: usage admitted at the plans' safe rates while the cluster was
//! unreachable, reported to the cluster when it answers again (`Gateway.ReportOfflineUsage`).
//!
//! Each bucket counts what it admitted that way (`Bucket::offline`, cost units, one atomic
//! add per admitted request). A report is a snapshot of the non-zero counts (at most
//! [`MAX_OFFLINE_ITEMS_PER_REPORT`] buckets, each at most [`MAX_OFFLINE_USAGE_PER_ITEM`])
//! under a fresh random request id. It is kept, id and items unchanged, until the cluster
//! answers it: a report whose answer was lost (a timeout, a leader change, the cluster going
//! away again) is sent again as it was, so the state machine's deduplication counts it once.
//! Only what an answer acknowledges (or refuses for good) is subtracted from the counts;
//! what was admitted meanwhile waits for the next report.
//!
//! When: at once when the cluster becomes reachable again (a lease batch is acknowledged),
//! and every [`REPORT_INTERVAL`] while anything is pending, also while the cluster seems
//! unreachable, so that a gateway without demand (hence without lease batches) still
//! notices the cluster is back. An answered report marks the cluster reachable.
//!
//! Limits, all on the safe side (counted more, never less):
//! - the cluster remembers the last 65,536 request ids (`DEDUP_TABLE_CAPACITY`): a report
//!   whose answer was lost and which is sent again only after that many other writes is
//!   counted twice;
//! - a permit refunded after its admission was reported is counted anyway.
//!
//! The cluster records such usage whichever rate admitted it (the plan's `safe_rate` or the
//! client's default for plans without one), so counts stay exact; it refuses only items
//! whose plan, key or association no longer exists (metric `offline_refused`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use quota_core::limits::{MAX_OFFLINE_ITEMS_PER_REPORT, MAX_OFFLINE_USAGE_PER_ITEM};
use quota_proto::v1;
use tokio::sync::{Notify, watch};

use crate::Inner;
use crate::allowance::Bucket;
use crate::error::ClientError;

/// How often pending usage is reported (or the cluster probed with it) when nothing else
/// wakes the task.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// After the cluster refused a whole report for a reason no retry on another node fixes
/// (an older cluster without the call, a bad token), wait this long before sending it again.
const REFUSED_RETRY: Duration = Duration::from_secs(30);
/// Most reports sent in one pass; the rest goes in the next pass.
const MAX_REPORTS_PER_PASS: usize = 64;

/// A report sent and not answered yet.
#[derive(Clone)]
struct Report {
    request_id: Vec<u8>,
    /// Buckets and the cost units reported for each.
    items: Vec<(Arc<Bucket>, u64)>,
}

/// The task's state, shared with [`crate::Client::shutdown`].
#[derive(Default)]
pub(crate) struct Reporter {
    /// Wakes the task: the cluster became reachable again.
    pub(crate) wake: Notify,
    /// The report to send again (same id, same items) until it is answered.
    in_flight: Mutex<Option<Report>>,
    /// After a refused report: send nothing before this monotonic ns.
    retry_at_ns: AtomicU64,
}

impl Reporter {
    fn in_flight(&self) -> MutexGuard<'_, Option<Report>> {
        // A std Mutex (no await while held): a poisoned one still holds a whole report.
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reports until `stop` turns true. A report cut off by the stop is kept (shutdown sends it).
pub(crate) async fn run(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = report(&inner) => {}
            _ = stop.changed() => return,
        }
        tokio::select! {
            _ = inner.offline.wake.notified() => {}
            _ = tokio::time::sleep(REPORT_INTERVAL) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Cost units admitted at the safe rate and not acknowledged yet, over every bucket.
pub(crate) fn pending(inner: &Inner) -> u64 {
    inner
        .lock_registry()
        .buckets
        .values()
        .map(|b| b.offline.load(Ordering::Acquire))
        .sum()
}

/// Sends what is pending: the report in flight first, then new ones, up to
/// [`MAX_REPORTS_PER_PASS`]. Stops at the first failure (the report stays in flight).
pub(crate) async fn report(inner: &Inner) -> Result<(), ClientError> {
    if inner.clock.now_ns() < inner.offline.retry_at_ns.load(Ordering::Acquire) {
        return Ok(());
    }
    for _ in 0..MAX_REPORTS_PER_PASS {
        let in_flight = inner.offline.in_flight().clone();
        let report = match in_flight {
            Some(r) => r,
            None => match next_report(inner) {
                Some(r) => {
                    *inner.offline.in_flight() = Some(r.clone());
                    r
                }
                None => return Ok(()),
            },
        };
        send(inner, report).await?;
    }
    Ok(())
}

/// A new report of every bucket with usage pending (up to the limits), or `None`.
fn next_report(inner: &Inner) -> Option<Report> {
    let buckets = inner.lock_registry().all_buckets();
    let items: Vec<(Arc<Bucket>, u64)> = buckets
        .into_iter()
        .filter_map(|b| {
            let n = b.offline.load(Ordering::Acquire);
            (n > 0).then(|| (b, n.min(MAX_OFFLINE_USAGE_PER_ITEM)))
        })
        .take(MAX_OFFLINE_ITEMS_PER_REPORT)
        .collect();
    if items.is_empty() {
        return None;
    }
    let mut id = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut id) {
        // Without an id a lost answer could not be told from a lost report: wait.
        tracing::warn!(error = %e, "no random request id for the offline report; retrying later");
        return None;
    }
    Some(Report {
        request_id: id.to_vec(),
        items,
    })
}

/// Sends `report` (retried on other nodes with the same id) and settles what the answer
/// acknowledges or refuses. On failure the report stays in flight, to be sent again as is.
async fn send(inner: &Inner, report: Report) -> Result<(), ClientError> {
    let cfg = &inner.config;
    let req = v1::ReportOfflineUsageRequest {
        request_id: report.request_id.clone(),
        gateway_id: cfg.gateway_id.clone(),
        usage: report
            .items
            .iter()
            .map(|(b, n)| v1::OfflineUsage {
                plan_id: b.plan.to_string(),
                key_id: b.key.to_string(),
                used: *n,
            })
            .collect(),
    };
    inner
        .metrics
        .offline_reports
        .fetch_add(1, Ordering::Relaxed);
    let result = match &inner.transport {
        Some(t) => {
            t.call(cfg.batch_retry_deadline, |mut c| {
                let req = req.clone();
                async move { c.report_offline_usage(req).await }
            })
            .await
        }
        None => Err(ClientError::Unavailable("no transport".into())),
    };
    let reply = match result {
        Ok(r) => r,
        Err(e) => {
            inner
                .metrics
                .offline_report_failures
                .fetch_add(1, Ordering::Relaxed);
            if matches!(e, ClientError::Unavailable(_)) {
                inner.set_reachable(false);
            } else {
                let retry_at = inner
                    .clock
                    .now_ns()
                    .saturating_add(u64::try_from(REFUSED_RETRY.as_nanos()).unwrap_or(u64::MAX));
                inner.offline.retry_at_ns.store(retry_at, Ordering::Release);
            }
            tracing::warn!(
                error = %e,
                items = report.items.len(),
                "report of usage admitted at the safe rate not answered; it will be sent again as is"
            );
            return Err(e);
        }
    };
    inner.set_reachable(true);
    let (mut reported, mut refused, mut unanswered) = (0u64, 0u64, 0usize);
    let mut results = reply.results.into_iter();
    use v1::offline_usage_result::Result as R;
    for (bucket, n) in &report.items {
        match results.next().and_then(|r| r.result) {
            Some(R::Usage(_)) => {
                bucket.settle_offline(*n);
                reported += n;
            }
            Some(R::Failed(f)) => {
                bucket.settle_offline(*n);
                refused += n;
                tracing::warn!(
                    plan = %bucket.plan,
                    key = %bucket.key,
                    used = n,
                    code = f.code,
                    message = %f.message,
                    "the cluster refused usage admitted at the safe rate; it is not counted"
                );
            }
            // A malformed answer: keep the count (a later report may count it twice; never
            // less than what was admitted).
            None => unanswered += 1,
        }
    }
    *inner.offline.in_flight() = None;
    inner
        .metrics
        .offline_reported
        .fetch_add(reported, Ordering::Relaxed);
    inner
        .metrics
        .offline_refused
        .fetch_add(refused, Ordering::Relaxed);
    if unanswered > 0 {
        tracing::error!(
            unanswered,
            "the cluster's answer to an offline report has fewer results than items"
        );
    }
    tracing::info!(
        reported,
        refused,
        buckets = report.items.len(),
        "reported usage admitted at the safe rate while the cluster was unreachable"
    );
    Ok(())
}
