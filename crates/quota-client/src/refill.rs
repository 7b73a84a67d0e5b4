//! The refill task: one batched `Leases` RPC per round for every bucket that needs it.
//!
//! Each round, for every bucket: measure demand since the last round (tokens taken plus
//! starved requests), settle slots that are spent, near their deadline or idle (reporting
//! what was really spent, less late refunds), and ask for a new lease when what is held
//! covers less than `refill_ahead` of demand. A lease asks for `rate x lease_horizon`
//! (at least what starved), capped by `max_lease`; the cluster caps it further at a fair
//! share of what remains, which shrinks leases to 1 near the end of a quota. Rounds run
//! every `refill_interval`, and at once when the hot path signals a bucket running low.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use quota_proto::v1;
use tokio::sync::watch;

use crate::Inner;
use crate::allowance::{Bucket, Refusal, SlotBook, UNLIMITED};
use crate::clock::{NS_PER_MS, wall_ms};
use crate::error::ClientError;

/// A lease untouched for this long is settled, so its tokens go back to the cluster.
const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// What one operation of a batch was for.
enum Action {
    Grant { bucket: Arc<Bucket>, slot: usize },
    Settle,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs rounds until `stop` turns true.
pub(crate) async fn run(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        round(&inner, false).await;
        tokio::select! {
            _ = inner.refill_signal.notified() => {}
            _ = tokio::time::sleep(inner.config.refill_interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One round. `closing`: settle everything and ask for nothing (shutdown). Answers the
/// tokens returned by settlements.
pub(crate) async fn round(inner: &Inner, closing: bool) -> u64 {
    let cfg = &inner.config;
    let now = inner.clock.now_ns();
    let buckets = match inner.registry.lock() {
        Ok(r) => r.all_buckets(),
        Err(p) => p.into_inner().all_buckets(),
    };
    let ttl_ms = millis(cfg.lease_ttl);
    let mut ops = Vec::new();
    let mut actions = Vec::new();
    let mut returned = 0u64;
    for b in &buckets {
        let mut book = b.book.lock().unwrap_or_else(|p| p.into_inner());
        b.refill_wanted.store(false, Ordering::Relaxed);
        // Demand since the last round.
        let mut consumed = 0u64;
        for (i, s) in book.slots.iter().enumerate() {
            if matches!(s, SlotBook::Held { .. }) {
                consumed += book.last_tokens[i].saturating_sub(b.slots[i].tokens());
            }
        }
        let starved_total = b.starved.load(Ordering::Relaxed);
        let starved = starved_total.saturating_sub(book.last_starved);
        book.last_starved = starved_total;
        let dt = now.saturating_sub(book.last_round_ns).max(NS_PER_MS) as f64 / 1e9;
        let instant = (consumed + starved) as f64 / dt;
        book.rate = if instant > book.rate {
            instant
        } else {
            0.7 * book.rate + 0.3 * instant
        };
        book.last_round_ns = now;
        if consumed + starved > 0 {
            book.last_demand_ns = now;
        }
        let idle = now.saturating_sub(book.last_demand_ns) >= ns(IDLE_RELEASE);

        // Settle what is spent, near its deadline, idle, or everything when closing.
        for i in 0..2 {
            if let SlotBook::Held {
                lease,
                granted,
                deadline_ns,
            } = book.slots[i]
            {
                let tokens = b.slots[i].tokens();
                let due = now.saturating_add(ns(cfg.renew_before)) >= deadline_ns;
                if closing || tokens == 0 || due || idle {
                    let left = b.slots[i].drain();
                    returned += left;
                    let spent = granted.saturating_sub(left);
                    let spent = spent - b.take_credit(spent);
                    ops.push(v1::LeaseOp {
                        op: Some(v1::lease_op::Op::Settle(v1::LeaseSettle {
                            lease_id: lease.to_string(),
                            spent,
                            renew: None,
                            ttl_ms,
                        })),
                    });
                    actions.push(Action::Settle);
                    book.slots[i] = SlotBook::Free;
                }
            }
        }
        for i in 0..2 {
            book.last_tokens[i] = if matches!(book.slots[i], SlotBook::Held { .. }) {
                b.slots[i].tokens()
            } else {
                0
            };
        }
        if closing {
            continue;
        }
        let ahead = book.rate * cfg.refill_ahead.as_secs_f64();
        b.low_water.store(ahead.ceil() as u64, Ordering::Relaxed);
        let live = b.live_tokens(now);
        let refused = b.take_refusal_pending(now);
        let wants =
            !refused && (starved > 0 || (book.rate > 0.0 && !idle && (live as f64) <= ahead));
        if !wants {
            continue;
        }
        let Some(free) = book.slots.iter().position(|s| *s == SlotBook::Free) else {
            continue;
        };
        let want = (book.rate * cfg.lease_horizon.as_secs_f64()).ceil() as u64;
        let want = want.max(starved).clamp(1, cfg.max_lease);
        book.slots[free] = SlotBook::Pending;
        ops.push(v1::LeaseOp {
            op: Some(v1::lease_op::Op::Grant(v1::LeaseGrant {
                plan_id: b.plan.to_string(),
                key_id: b.key.to_string(),
                want,
                ttl_ms,
            })),
        });
        actions.push(Action::Grant {
            bucket: b.clone(),
            slot: free,
        });
    }
    if ops.is_empty() {
        return returned;
    }
    let limit = quota_core::limits::MAX_LEASE_OPS_PER_BATCH;
    let mut actions = actions.into_iter();
    for chunk in ops.chunks(limit) {
        let chunk_actions: Vec<Action> = actions.by_ref().take(chunk.len()).collect();
        send(inner, chunk.to_vec(), chunk_actions).await;
    }
    inner.changed.notify_waiters();
    returned
}

/// Sends one batch (retried with the same request id) and applies its results.
async fn send(inner: &Inner, ops: Vec<v1::LeaseOp>, actions: Vec<Action>) {
    let cfg = &inner.config;
    let mut id = vec![0u8; 16];
    if getrandom::fill(&mut id).is_err() {
        // No randomness: an empty id makes the server pick one (a retry is then not
        // recognised, so send once).
        id.clear();
    }
    let req = v1::LeasesRequest {
        request_id: id,
        gateway_id: cfg.gateway_id.clone(),
        ops,
    };
    let send_ns = inner.clock.now_ns();
    let send_wall = wall_ms();
    let started = Instant::now();
    inner.metrics.refill_rpcs.fetch_add(1, Ordering::Relaxed);
    let result = match &inner.transport {
        Some(t) => {
            t.call(cfg.batch_retry_deadline, |mut c| {
                let req = req.clone();
                async move { c.leases(req).await }
            })
            .await
        }
        None => Err(ClientError::Unavailable("no transport".into())),
    };
    let reply = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, ops = req.ops.len(), "lease batch failed");
            inner
                .metrics
                .refill_failures
                .fetch_add(1, Ordering::Relaxed);
            inner.set_reachable(false);
            for a in actions {
                if let Action::Grant { bucket, slot } = a {
                    let mut book = bucket.book.lock().unwrap_or_else(|p| p.into_inner());
                    book.slots[slot] = SlotBook::Free;
                }
            }
            return;
        }
    };
    inner
        .metrics
        .refill_latency(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
    inner.set_reachable(true);
    let ttl_ns = ns(cfg.lease_ttl);
    let margin_ns = ns(cfg.lease_safety_margin);
    let now = inner.clock.now_ns();
    let mut results = reply.results.into_iter();
    for action in actions {
        let result = results.next().and_then(|r| r.result);
        use v1::lease_result::Result as R;
        match action {
            Action::Settle => {
                if let Some(R::Settled(s)) = result {
                    inner.metrics.leases_settled.fetch_add(1, Ordering::Relaxed);
                    let _ = s;
                }
            }
            Action::Grant { bucket, slot } => {
                let mut book = bucket.book.lock().unwrap_or_else(|p| p.into_inner());
                book.slots[slot] = SlotBook::Free;
                match result {
                    Some(R::Granted(g)) => {
                        let (Some(lease), usage) = (g.lease, g.usage) else {
                            continue;
                        };
                        let Ok(lease_id) = lease.lease_id.parse() else {
                            continue;
                        };
                        // Stop spending at our own send time + ttl - margin, and before
                        // the period's end (the cluster caps expires_at there).
                        let mut deadline = (send_ns + ttl_ns).saturating_sub(margin_ns);
                        if lease.expires_at != 0 {
                            let cap = send_ns
                                .saturating_add(
                                    lease.expires_at.saturating_sub(send_wall) * NS_PER_MS,
                                )
                                .saturating_sub(margin_ns);
                            deadline = deadline.min(cap);
                        }
                        bucket.slots[slot].install(lease.granted, deadline);
                        book.slots[slot] = SlotBook::Held {
                            lease: lease_id,
                            granted: lease.granted,
                            deadline_ns: deadline,
                        };
                        book.last_tokens[slot] = lease.granted;
                        bucket.clear_refusal();
                        bucket.reset_at_ms.store(lease.reset_at, Ordering::Relaxed);
                        if let Some(u) = usage {
                            bucket
                                .limit
                                .store(u.limit.unwrap_or(UNLIMITED), Ordering::Relaxed);
                            bucket
                                .cluster_remaining
                                .store(u.remaining.unwrap_or(UNLIMITED), Ordering::Relaxed);
                        }
                        inner.metrics.leases_granted.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(R::Denied(d)) => {
                        let refusal = match v1::DenialReason::try_from(d.reason) {
                            Ok(v1::DenialReason::Disabled) => Refusal::Disabled,
                            Ok(v1::DenialReason::Expired) => Refusal::Expired,
                            Ok(v1::DenialReason::UnknownKey) => Refusal::UnknownKey,
                            Ok(v1::DenialReason::NotCovered) => Refusal::NotCovered,
                            _ => Refusal::QuotaExceeded,
                        };
                        if d.reset_at != 0 {
                            bucket.reset_at_ms.store(d.reset_at, Ordering::Relaxed);
                        }
                        if refusal == Refusal::QuotaExceeded {
                            bucket.cluster_remaining.store(0, Ordering::Relaxed);
                        }
                        bucket.refuse(refusal, now + ns(cfg.denial_recheck));
                    }
                    Some(R::Failed(f)) => {
                        tracing::warn!(code = f.code, message = %f.message, plan = %bucket.plan, key = %bucket.key, "lease grant failed");
                    }
                    _ => {}
                }
            }
        }
    }
}
