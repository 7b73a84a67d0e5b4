//! The throttle refill task: one batched `Gateway.Throttle` RPC per round for every pool
//! that wants tokens.
//!
//! A pool wants tokens when the hot path took it below its low water mark or found it
//! empty ([`Pool::want`], which wakes this task). A round asks, for each such pool whose
//! `retry_at_ns` has passed, one chunk into a slot that is free (expired, or too small
//! for the largest cost that found the pool empty). A grant is installed with the deadline
//! `send time + throttle_pool_ttl`; a zero grant sets `retry_at_ns` from the leader's
//! `retry_after_ms`, and the task sleeps until the earliest such instant of a wanted pool
//! (or the next wake-up). This task is separate from the lease refill task: a throttle
//! round is a read of the leader's memory (no Raft write), and must not queue behind one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use quota_proto::v1;
use tokio::sync::watch;

use crate::Inner;
use crate::clock::NS_PER_MS;
use crate::error::ClientError;
use crate::throttle::Pool;

/// Most wants in one request (the server's limit).
const MAX_WANTS_PER_REQUEST: usize = 1024;
/// Most tokens wanted from one bucket at once (the server's limit).
const MAX_WANT: u64 = 1_000_000;
/// After a request no node answered, a pool is not asked again for this long.
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(100);
/// After the leader refused a want (an unknown plan: our view is ahead of or behind its
/// view), it is not asked again for this long.
const ERROR_BACKOFF: Duration = Duration::from_millis(200);
/// The task wakes at least this often even when nothing signals it.
const IDLE_WAKE: Duration = Duration::from_secs(1);

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Runs rounds until `stop` turns true.
pub(crate) async fn run(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        let next_due = round(&inner).await;
        let now = inner.clock.now_ns();
        let sleep = next_due
            .map_or(IDLE_WAKE, |due| {
                Duration::from_nanos(due.saturating_sub(now))
            })
            .min(IDLE_WAKE);
        tokio::select! {
            _ = inner.throttle_signal.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One round. Answers the earliest monotonic ns at which a wanted pool may be asked
/// again, if any is waiting for that.
pub(crate) async fn round(inner: &Inner) -> Option<u64> {
    let pools = inner.lock_registry().all_pools();
    let now = inner.clock.now_ns();
    // Liveness as the hot path sees it (an upper bound of now), so that a pool the hot
    // path found expired is refilled, not skipped as still live.
    let hot_now = inner.clock.hot_now_ns();
    let mut next_due: Option<u64> = None;
    let mut wants = Vec::new();
    let mut asked: Vec<(Arc<Pool>, usize)> = Vec::new();
    for p in pools.iter() {
        if !p.wanted.load(Ordering::Acquire) {
            continue;
        }
        let retry_at = p.retry_at_ns.load(Ordering::Acquire);
        if now < retry_at {
            next_due = Some(next_due.map_or(retry_at, |d| d.min(retry_at)));
            continue;
        }
        p.wanted.store(false, Ordering::Release);
        let need = p.need.swap(0, Ordering::AcqRel).max(1);
        let free = (0..2).find(|&i| !p.slots[i].live(hot_now) || p.slots[i].tokens() < need);
        let Some(slot) = free else {
            // Both chunks are live and can serve the request that asked: nothing to do
            // (the hot path asks again when one runs low).
            continue;
        };
        wants.push(v1::ThrottleWant {
            plan_id: p.plan.to_string(),
            key_id: p.key.to_string(),
            route: p.route.as_deref().unwrap_or_default().to_owned(),
            want: p.chunk.max(need).min(MAX_WANT),
        });
        asked.push((p.clone(), slot));
        if wants.len() == MAX_WANTS_PER_REQUEST {
            send(
                inner,
                std::mem::take(&mut wants),
                std::mem::take(&mut asked),
            )
            .await;
        }
    }
    if !wants.is_empty() {
        send(inner, wants, asked).await;
    }
    // Callers waiting in `check` look again (granted, or now throttled with a retry-after).
    inner.changed.notify_waiters();
    next_due
}

/// Sends one request (retried on other nodes) and installs its grants.
async fn send(inner: &Inner, wants: Vec<v1::ThrottleWant>, asked: Vec<(Arc<Pool>, usize)>) {
    let cfg = &inner.config;
    debug_assert_eq!(wants.len(), asked.len());
    let req = v1::ThrottleRequest {
        gateway_id: cfg.gateway_id.clone(),
        wants,
    };
    let send_ns = inner.clock.now_ns();
    inner.metrics.throttle_rpcs.fetch_add(1, Ordering::Relaxed);
    let result = match &inner.transport {
        Some(t) => {
            t.call(cfg.throttle_retry_deadline, |mut c| {
                let req = req.clone();
                async move { c.throttle(req).await }
            })
            .await
        }
        None => Err(ClientError::Unavailable("no transport".into())),
    };
    let now = inner.clock.now_ns();
    let reply = match result {
        Ok(r) => r,
        Err(e) => {
            inner
                .metrics
                .throttle_failures
                .fetch_add(1, Ordering::Relaxed);
            if inner.throttle_reachable.swap(false, Ordering::AcqRel) {
                tracing::warn!(error = %e, "throttle request failed; throttles run dry");
            }
            let until = now.saturating_add(ns(UNREACHABLE_BACKOFF));
            for (p, _) in &asked {
                p.retry_at_ns.store(until, Ordering::Release);
            }
            return;
        }
    };
    if !inner.throttle_reachable.swap(true, Ordering::AcqRel) {
        tracing::info!("throttle requests answered again");
    }
    // Every token of this reply was given out by the leader after `send_ns`: spending it
    // before `send_ns + ttl` keeps it within `ttl` of its grant.
    let deadline = send_ns.saturating_add(ns(cfg.throttle_pool_ttl));
    let mut grants = reply.grants.into_iter();
    for (p, slot) in asked {
        let Some(g) = grants.next() else {
            tracing::warn!("throttle reply with fewer grants than wants");
            p.retry_at_ns
                .store(now.saturating_add(ns(ERROR_BACKOFF)), Ordering::Release);
            continue;
        };
        if !g.error.is_empty() {
            tracing::warn!(plan = %p.plan, key = %p.key, route = ?p.route, error = %g.error, "throttle want refused");
            p.retry_at_ns
                .store(now.saturating_add(ns(ERROR_BACKOFF)), Ordering::Release);
            continue;
        }
        if g.granted == 0 {
            // The leader rounds its wait down to whole ms: ask 1 ms later than quoted, so
            // the token is there.
            let wait = g.retry_after_ms.saturating_add(1).saturating_mul(NS_PER_MS);
            p.retry_at_ns
                .store(now.saturating_add(wait), Ordering::Release);
            continue;
        }
        // `unlimited` (the leader's plan has no throttle here, while ours has: one of the
        // two views is stale, and the watch stream will settle it) grants what was asked,
        // spent like any chunk.
        let s = &p.slots[slot];
        s.drain();
        s.install(g.granted, deadline);
        p.retry_at_ns.store(0, Ordering::Release);
        inner
            .metrics
            .throttle_tokens
            .fetch_add(g.granted, Ordering::Relaxed);
    }
}
