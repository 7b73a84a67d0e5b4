//! quota-client: the gateway library of quotad.
//!
//! A gateway asks [`Client::check`] "may this key call this route now, at this cost?" and
//! gets an answer from local state: a key cache fed by the cluster's watch stream, and
//! allowances leased from the cluster and renewed in the background. The cluster's
//! invariant (admitted cost <= limit, per plan, key and period) holds because every token
//! spent here was reserved by a lease first, and no lease is spent after its deadline on
//! this machine's monotonic clock.
//!
//! # Layout
//! - [`config`]: [`ClientConfig`], every field documented with its default.
//! - [`decision`]: [`Decision`], [`Permit`] (commit or refund), [`Deny`], [`RateInfo`].
//! - `registry`: plans, keys and the secret cache (secret bytes -> key, no SHA-256 on the
//!   hot path).
//! - `allowance`: lease slots and buckets taken with atomics.
//! - `throttle`: throttle pools (tokens of the leader's token buckets, expiring soon) and
//!   a local GCRA (safe rate; throttle fallback).
//! - `refill`: the background task that renews and settles leases in batches.
//! - `throttle_refill`: the background task that fetches throttle tokens in batches.
//! - `offline`: the background task that reports what was admitted at the safe rate.
//! - `watch`: the background task that follows the cluster's changes.
//! - `transport`: channels, the bearer token, retries on the next node.
//! - `clock`: the exact monotonic clock, and the hot path's cheap upper bound of it.
//! - [`metrics`]: counters to export.
//!
//! # The hot path
//! `check` with a cached secret and live allowances does, in order: one read of the coarse
//! monotonic clock (an upper bound of now: deadlines end early, never late; see `clock`),
//! a keyed foldhash of the secret and a lookup in a copy-on-write shard
//! (`ArcSwap::load`, no lock), a constant-time comparison of the full bytes (8 bytes per
//! step), three atomic loads (deleted, enabled, expiry), an `ArcSwap::load` of the key's
//! plans, and per covering plan one CAS on the lease slot (and one on the throttle pool,
//! if any). Nothing allocates (up to 4 covering plans are held inline by the permit);
//! counters go to a per-thread stripe.
//!
//! # Throttles
//! Throttles (rate and burst) are enforced across all gateways together. The leader holds
//! a token bucket per (plan, key) and per (plan, key, route) where the plan has a route
//! throttle (`Gateway.Throttle`, soft state in its memory). A request takes `cost` tokens
//! from the pool of the route's throttle when the plan has one for it (the route
//! `METHOD /path` equal to a key of `route_throttles`, or `* /path`), else from the plan's
//! throttle; a route throttle overrides the plan's, as the plan format says. Each pool
//! holds chunks of about `rate x throttle_chunk` tokens (at least 1), fetched by a
//! background task in one batched RPC per round when a pool runs low or a request found
//! it empty, and spent with one CAS. A chunk expires `throttle_pool_ttl` (250 ms) after
//! the request that fetched it was **sent**, by this machine's monotonic clock, so no
//! token is spent more than `throttle_pool_ttl` after the leader gave it out.
//!
//! **Bound.** With a stable leader, across all gateways, the cost admitted by one throttle
//! in any window of `T` seconds is at most `burst + rate x (T + throttle_pool_ttl)`
//! (every unit was granted by the leader's bucket within `T + throttle_pool_ttl` seconds,
//! and the bucket grants at most `burst + rate x` that). With the defaults and `T` = 1 s:
//! `burst + 1.25 x rate`. A new leader starts with full buckets: each leader change may
//! add up to one `burst`. Measured in `tests/cluster.rs` (8 gateways, rate 40/s, burst 10,
//! 5 s): see the test's comment for the per-second accuracy.
//!
//! **Empty pool.** When a request finds its pool empty: if the leader last said "no token
//! before t", the request is denied `Throttled { retry_after: t - now }` at once (at least
//! one token's time); otherwise the pool was merely not filled yet (a first request, or
//! an idle key whose chunk expired), and `check` waits for the fetch (up to `max_wait`)
//! while `try_check` answers `None`. Throttle tokens and quota tokens are taken together,
//! all or nothing: a request refused by any plan or throttle returns every token it took.
//! A refunded permit returns its quota tokens, not its throttle tokens (the request did
//! happen).
//!
//! **Cluster unreachable.** When no node answers a throttle request within
//! `throttle_retry_deadline`, pools run dry (within `throttle_pool_ttl`) and requests are
//! denied `Throttled`, unless the client is in safe-rate mode (`safe_rate` > 0): then each
//! throttle falls back to a local token bucket at `rate x throttle_share` with a burst of
//! `burst x throttle_share` at this gateway, so N gateways with `throttle_share` = 1/N
//! stay within the plan's throttle together. Quotas keep their own rule (held leases, then
//! `safe_rate`; see below).
//!
//! # Cluster unreachable
//! When no node acknowledges a lease batch (or an offline report) within
//! `batch_retry_deadline`, the client counts the cluster unreachable. It keeps spending the
//! leases it holds until their deadlines; after that, a plan admits at its **safe rate**
//! (`safe_rate`, requests per second per key at this gateway, set by the operator on the
//! plan; the client's `ClientConfig::safe_rate` for plans that leave it at 0), and denies
//! (`Unavailable`) when that is 0, the default. Admissions at the safe rate were not
//! reserved, so they are the one deliberate exception to the quota invariant; the cluster
//! must still learn about them:
//!
//! - **Counted** per (plan, key), in cost units, by one atomic add on the bucket when the
//!   request is admitted (nothing on the hot path while leases are live). The permit holds
//!   a charge for it: a refund takes it off the count, another plan's refusal returns the
//!   safe rate's capacity.
//! - **Reported** when the cluster answers again (at once when a lease batch succeeds, and
//!   every second while anything is pending, which also detects the cluster's return
//!   without any demand): `Gateway.ReportOfflineUsage`, at most 1024 (plan, key)s per
//!   report, each under a random request id that the report keeps, items unchanged, until
//!   it is answered; a retry after a lost answer is therefore counted once by the cluster.
//! - **Subtracted** only as acknowledged: the cluster answers per item; what it added to the
//!   key's usage (even past the limit) and what it refused for good (a plan, key or
//!   association that no longer exists) leave the count; anything unanswered stays.
//! - **Observed** in [`MetricsSnapshot`]: `admitted_unreachable` (requests),
//!   `offline_pending`, `offline_reported`, `offline_refused` (cost units),
//!   `offline_reports` and `offline_report_failures`. [`Client::shutdown`] sends what is
//!   pending and says what it could not (`ShutdownReport::offline_unreported`).
//!
//! The cluster adds reported usage to the period current when the report arrives; a
//! report sent again only after the cluster has seen 65,536 other request ids, or a refund
//! that arrives after its admission was reported, is counted (more, never less).

pub mod config;
pub mod decision;
pub mod error;
pub mod metrics;

mod allowance;
mod clock;
mod offline;
mod refill;
mod registry;
mod throttle;
mod throttle_refill;
mod transport;
mod watch;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use quota_core::SecretHash;
use quota_core::limits::MAX_COST;
use quota_proto::v1;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use config::ClientConfig;
pub use decision::{Decision, Deny, DenyKind, DenyReason, Permit, RateInfo};
pub use error::{ClientError, ConfigError};
pub use metrics::MetricsSnapshot;

use allowance::{Refusal, SAFE_RATE_SLOT, Take, UNLIMITED};
use clock::Clock;
use decision::{Charge, Charges};
use registry::{Binding, Registry, SecretCache};
use smallvec::SmallVec;
use throttle::{Gcra, Pool};

/// State shared by the client handles and its background tasks.
pub(crate) struct Inner {
    config: ClientConfig,
    clock: Clock,
    secrets: SecretCache,
    registry: Mutex<Registry>,
    metrics: metrics::Metrics,
    /// Wakes the refill task (a bucket ran low or dry).
    refill_signal: Notify,
    /// Wakes the throttle refill task (a throttle pool ran low or dry).
    throttle_signal: Notify,
    /// Wakes callers waiting for a lookup, a lease or throttle tokens.
    changed: Notify,
    transport: Option<transport::Transport>,
    /// The last lease batch was acknowledged.
    reachable: AtomicBool,
    /// The last throttle request was answered.
    throttle_reachable: AtomicBool,
    /// Reports of usage admitted at the safe rate.
    offline: offline::Reporter,
}

impl Inner {
    fn lock_registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves maps that are still consistent (every
        // update is one insert or one store), so a poisoned lock is used as is.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_reachable(&self, up: bool) {
        let was = self.reachable.swap(up, Ordering::AcqRel);
        if up && !was {
            tracing::info!(
                "cluster reachable again; reporting what was admitted at the safe rate meanwhile"
            );
            self.offline.wake.notify_one();
        } else if !up && was {
            tracing::warn!("cluster unreachable; spending held leases, then the safe rate");
        }
    }

    /// Looks `hash` up; installs a hit (with `secret`, when given) or remembers a miss.
    async fn lookup(&self, hash: SecretHash, secret: Option<&[u8]>) -> Result<bool, ClientError> {
        let Some(transport) = &self.transport else {
            return Err(ClientError::Unavailable("no transport".into()));
        };
        // An event about the key between our read and our install would be lost: then read
        // again (a few times at most; the last answer is installed regardless).
        for attempt in 0..3 {
            let seq = self.lock_registry().touch_seq();
            self.metrics.lookups.fetch_add(1, Ordering::Relaxed);
            let req = v1::LookupKeyRequest {
                secret_hash: hash.0.to_vec(),
                allow_stale: false,
            };
            let reply = transport
                .call(self.config.max_wait, |mut c| {
                    let req = req.clone();
                    async move { c.lookup_key(req).await }
                })
                .await?;
            let mut reg = self.lock_registry();
            let now = self.clock.now_ns();
            let Some(key) = reply.key else {
                self.metrics.lookup_misses.fetch_add(1, Ordering::Relaxed);
                let until = now.saturating_add(
                    u64::try_from(self.config.miss_ttl.as_nanos()).unwrap_or(u64::MAX),
                );
                reg.remember_miss(hash, now, until);
                reg.revoke_hash(&hash, now);
                return Ok(false);
            };
            let id = key.key.as_ref().and_then(|k| k.id.parse().ok());
            if attempt < 2 && id.is_some_and(|id| reg.touched_since(id, seq)) {
                continue;
            }
            let installed = reg.install_key(&key, hash, secret, &self.clock, &self.secrets);
            return Ok(installed.is_some());
        }
        Ok(false)
    }
}

/// Stops the background tasks when the last handle is dropped.
struct StopOnDrop(tokio::sync::watch::Sender<bool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// A connected gateway client. Cheap to clone; all clones share the same state.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    stop: Arc<StopOnDrop>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("gateway_id", &self.inner.config.gateway_id)
            .finish_non_exhaustive()
    }
}

/// What the local state alone can answer.
enum Local {
    Done(Decision),
    /// The secret is not cached: look it up.
    NeedKey,
    /// A covering plan has no live tokens: wait for the refill.
    NeedLease,
    /// A throttle pool was not filled yet: wait for the throttle refill.
    NeedThrottle,
}

/// Throttle tokens a request took, given back if a later plan refuses it.
enum ThrottleTaken<'a> {
    Pool(&'a Pool, u8, u16),
    Fallback(&'a Gcra),
}

impl ThrottleTaken<'_> {
    fn give_back(&self, cost: u64) {
        match self {
            ThrottleTaken::Pool(p, slot, generation) => p.give_back(*slot, *generation, cost),
            ThrottleTaken::Fallback(g) => g.give_back(cost),
        }
    }
}

type Throttled<'a> = SmallVec<[ThrottleTaken<'a>; 4]>;

/// What [`Client::shutdown`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Unused tokens returned to the cluster.
    pub returned_tokens: u64,
    /// Cost units admitted at the safe rate that the cluster did not acknowledge before the
    /// shutdown (it could not be reached): never counted by the cluster.
    pub offline_unreported: u64,
}

impl Client {
    /// Connects to the cluster: opens the watch stream and waits (up to
    /// `connect_timeout`) for its initial state, then starts the refill task.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        config.validate()?;
        let transport = transport::Transport::new(&config)?;
        debug_assert!(transport.len() > 0);
        let client = Client::build(config, Some(transport));
        let (tx, rx) = (client.stop.0.clone(), client.stop.0.subscribe());
        drop(tx);
        let watch = tokio::spawn(watch::run(client.inner.clone(), rx.clone()));
        let refill = tokio::spawn(refill::run(client.inner.clone(), rx.clone()));
        let throttles = tokio::spawn(throttle_refill::run(client.inner.clone(), rx.clone()));
        let reports = tokio::spawn(offline::run(client.inner.clone(), rx));
        client
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([watch, refill, throttles, reports]);
        let deadline = tokio::time::Instant::now() + client.inner.config.connect_timeout;
        let inner = client.inner.clone();
        loop {
            let notified = inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if inner.lock_registry().synced {
                return Ok(client);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let _ = client.stop.0.send(true);
                return Err(ClientError::Unavailable(format!(
                    "no node sent the initial state within {:?}",
                    inner.config.connect_timeout
                )));
            }
        }
    }

    fn build(config: ClientConfig, transport: Option<transport::Transport>) -> Client {
        let (stop, _) = tokio::sync::watch::channel(false);
        let inner = Inner {
            secrets: SecretCache::new(config.key_cache_capacity),
            registry: Mutex::new(Registry::new(
                config.key_cache_capacity,
                config.safe_rate,
                config.throttle_share,
                config.throttle_chunk.as_secs_f64(),
            )),
            clock: Clock::new(),
            metrics: metrics::Metrics::new(),
            refill_signal: Notify::new(),
            throttle_signal: Notify::new(),
            changed: Notify::new(),
            transport,
            reachable: AtomicBool::new(true),
            throttle_reachable: AtomicBool::new(true),
            offline: offline::Reporter::default(),
            config,
        };
        Client {
            inner: Arc::new(inner),
            stop: Arc::new(StopOnDrop(stop)),
            tasks: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// May `secret` call `route` ("METHOD /path") of (`api`, `stage`) now, at `cost`?
    ///
    /// Answers from local state when it can (the hot path); otherwise looks the key up or
    /// waits for a lease, for at most `max_wait`, and then denies with `Unavailable`.
    pub async fn check(
        &self,
        secret: &[u8],
        api: &str,
        stage: &str,
        route: &str,
        cost: u64,
    ) -> Decision {
        let deadline = tokio::time::Instant::now() + self.inner.config.max_wait;
        let mut looked_up = false;
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.check_local(secret, api, stage, route, cost) {
                Local::Done(d) => return d,
                Local::NeedKey if looked_up => {
                    // Found, but evicted at once (a tiny cache): deny rather than loop.
                    return self.deny(DenyReason::Unavailable, RateInfo::default());
                }
                Local::NeedKey => {
                    let hash = SecretHash::of(secret);
                    let now = self.inner.clock.now_ns();
                    if self.inner.lock_registry().is_miss(&hash, now) {
                        return self.deny(DenyReason::InvalidKey, RateInfo::default());
                    }
                    match self.inner.lookup(hash, Some(secret)).await {
                        Ok(true) => looked_up = true,
                        Ok(false) => {
                            return self.deny(DenyReason::InvalidKey, RateInfo::default());
                        }
                        Err(_) => return self.deny(DenyReason::Unavailable, RateInfo::default()),
                    }
                }
                Local::NeedLease | Local::NeedThrottle => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return self.deny(DenyReason::Unavailable, RateInfo::default());
                    }
                }
            }
        }
    }

    /// [`Client::check`] from local state only: `None` when the answer needs the
    /// cluster (an unknown secret, or no live tokens yet); then call `check`.
    #[inline]
    pub fn try_check(
        &self,
        secret: &[u8],
        api: &str,
        stage: &str,
        route: &str,
        cost: u64,
    ) -> Option<Decision> {
        match self.check_local(secret, api, stage, route, cost) {
            Local::Done(d) => Some(d),
            Local::NeedKey => {
                self.inner.refill_signal.notify_one();
                None
            }
            Local::NeedLease | Local::NeedThrottle => None,
        }
    }

    fn deny(&self, reason: DenyReason, info: RateInfo) -> Decision {
        self.inner.metrics.denied(reason.kind());
        Decision::Deny(Deny { reason, info })
    }

    #[inline]
    fn check_local(&self, secret: &[u8], api: &str, stage: &str, route: &str, cost: u64) -> Local {
        if cost == 0 || cost > MAX_COST {
            return Local::Done(self.deny(DenyReason::InvalidCost, RateInfo::default()));
        }
        if secret.is_empty() {
            return Local::Done(self.deny(DenyReason::MissingKey, RateInfo::default()));
        }
        let inner = &*self.inner;
        let now = inner.clock.hot_now_ns();
        inner
            .secrets
            .with(secret, |entry| {
                let key = &entry.key;
                let reason = if now >= entry.valid_until_ns.load(Ordering::Acquire)
                    || key.deleted.load(Ordering::Acquire)
                {
                    Some(DenyReason::InvalidKey)
                } else if !key.enabled.load(Ordering::Acquire) {
                    Some(DenyReason::Disabled)
                } else if now >= key.expires_ns.load(Ordering::Acquire) {
                    Some(DenyReason::Expired)
                } else {
                    None
                };
                if let Some(reason) = reason {
                    return Local::Done(self.deny(reason, RateInfo::default()));
                }
                let bindings = key.bindings.load();
                self.admit(&bindings, api, stage, route, cost, now)
            })
            .unwrap_or(Local::NeedKey)
    }

    /// Takes `cost` from every binding covering (api, stage), and from its throttle for
    /// `route`, all or nothing. `now` is the hot clock's upper bound of now.
    #[inline]
    fn admit(
        &self,
        bindings: &[Binding],
        api: &str,
        stage: &str,
        route: &str,
        cost: u64,
        now: u64,
    ) -> Local {
        let inner = &*self.inner;
        let mut charges = Charges::new();
        let mut throttled = Throttled::new();
        let mut info = RateInfo::default();
        let mut covered = false;
        // Some plan admitted at the safe rate (the cluster is unreachable).
        let mut offline = false;
        // Returns every token taken so far.
        let undo = |charges: &mut Charges, throttled: &mut Throttled| {
            decision::undo(charges, cost);
            for t in throttled.drain(..) {
                t.give_back(cost);
            }
        };
        for b in bindings {
            if !b.plan.covers(api, stage) {
                continue;
            }
            covered = true;
            let bucket = &b.bucket;
            match bucket.take(cost, now) {
                Take::Taken {
                    slot,
                    generation,
                    left,
                } => {
                    charges.push(Charge {
                        bucket: bucket.clone(),
                        slot,
                        generation,
                    });
                    if left < bucket.low_water.load(Ordering::Relaxed)
                        && !bucket.refill_wanted.load(Ordering::Relaxed)
                        && !bucket.refill_wanted.swap(true, Ordering::AcqRel)
                    {
                        inner.refill_signal.notify_one();
                    }
                    if b.plan.has_quota {
                        let remaining = bucket
                            .cluster_remaining
                            .load(Ordering::Relaxed)
                            .saturating_add(left);
                        if info.remaining.is_none_or(|r| remaining < r) {
                            let limit = bucket.limit.load(Ordering::Relaxed);
                            info = RateInfo {
                                limit: (limit != UNLIMITED).then_some(limit),
                                remaining: (limit != UNLIMITED).then_some(remaining),
                                reset_at_ms: Some(bucket.reset_at_ms.load(Ordering::Relaxed))
                                    .filter(|r| *r != 0),
                            };
                        }
                    }
                }
                Take::Refused(refusal) => {
                    undo(&mut charges, &mut throttled);
                    let reset_at_ms = bucket.reset_at_ms.load(Ordering::Relaxed);
                    let reason = match refusal {
                        Refusal::QuotaExceeded => DenyReason::QuotaExceeded {
                            plan: b.plan.id,
                            reset_at_ms,
                        },
                        Refusal::Disabled => DenyReason::Disabled,
                        Refusal::Expired => DenyReason::Expired,
                        Refusal::UnknownKey => DenyReason::InvalidKey,
                        Refusal::NotCovered => DenyReason::NotCovered,
                    };
                    let limit = bucket.limit.load(Ordering::Relaxed);
                    let info = RateInfo {
                        limit: (limit != UNLIMITED).then_some(limit),
                        remaining: (limit != UNLIMITED).then_some(0),
                        reset_at_ms: Some(reset_at_ms).filter(|r| *r != 0),
                    };
                    return Local::Done(self.deny(reason, info));
                }
                Take::Empty => {
                    if inner.reachable.load(Ordering::Relaxed) {
                        undo(&mut charges, &mut throttled);
                        inner.refill_signal.notify_one();
                        // Fetch the throttle's first chunk in the same wait.
                        if let Some(pool) = b.throttle_for(route)
                            && pool.live_tokens(now) < cost
                            && pool.want(cost)
                        {
                            inner.throttle_signal.notify_one();
                        }
                        return Local::NeedLease;
                    }
                    // Unreachable and out of leases: the safe rate, if any. Counted per
                    // (plan, key) for the report on reconnect; the charge lets a refund or
                    // another plan's refusal take it back.
                    if !bucket.take_safe(cost, now) {
                        undo(&mut charges, &mut throttled);
                        return Local::Done(
                            self.deny(DenyReason::Unavailable, RateInfo::default()),
                        );
                    }
                    charges.push(Charge {
                        bucket: bucket.clone(),
                        slot: SAFE_RATE_SLOT,
                        generation: 0,
                    });
                    offline = true;
                }
            }
            if let Some(pool) = b.throttle_for(route) {
                if let Some((slot, generation, left)) = pool.take(cost, now) {
                    throttled.push(ThrottleTaken::Pool(pool, slot, generation));
                    if left < pool.low_water && pool.want(cost) {
                        inner.throttle_signal.notify_one();
                    }
                } else {
                    let wait_ns = match self.throttle_empty(pool, cost, now) {
                        Ok(Some(g)) => {
                            throttled.push(ThrottleTaken::Fallback(g));
                            None
                        }
                        Ok(None) => {
                            undo(&mut charges, &mut throttled);
                            return Local::NeedThrottle;
                        }
                        Err(wait_ns) => Some(wait_ns),
                    };
                    if let Some(wait_ns) = wait_ns {
                        undo(&mut charges, &mut throttled);
                        let reason = DenyReason::Throttled {
                            plan: b.plan.id,
                            retry_after: Duration::from_nanos(wait_ns),
                        };
                        return Local::Done(self.deny(reason, info));
                    }
                }
            }
        }
        if !covered {
            return Local::Done(self.deny(DenyReason::NotCovered, RateInfo::default()));
        }
        if offline {
            self.count_offline(&charges, cost);
        }
        inner.metrics.allowed();
        Local::Done(Decision::Allow(Permit::new(info, cost, charges)))
    }

    /// A request admitted by every plan, some at the safe rate: count it for the report.
    #[cold]
    fn count_offline(&self, charges: &Charges, cost: u64) {
        for c in charges.iter().filter(|c| c.slot == SAFE_RATE_SLOT) {
            c.bucket.count_offline(cost);
        }
        self.inner
            .metrics
            .admitted_unreachable
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A request found `pool` without `cost` live tokens. Answers `Ok(Some(gcra))` when the
    /// local fallback admitted it (cluster unreachable, safe-rate mode), `Ok(None)` when
    /// the pool was just not filled yet (wait for the fetch), or `Err(ns)`: throttled,
    /// retry after that long.
    #[cold]
    fn throttle_empty<'p>(
        &self,
        pool: &'p Pool,
        cost: u64,
        now: u64,
    ) -> Result<Option<&'p Gcra>, u64> {
        let inner = &*self.inner;
        if pool.want(cost) {
            inner.throttle_signal.notify_one();
        }
        let retry_at = pool.retry_at_ns.load(Ordering::Acquire);
        if !inner.throttle_reachable.load(Ordering::Relaxed) {
            return match &pool.fallback {
                Some(g) => g.try_take(cost, now).map(|()| Some(g)),
                None => Err(retry_at.saturating_sub(now).max(pool.ns_per_token)),
            };
        }
        if retry_at > now {
            return Err(retry_at - now);
        }
        Ok(None)
    }

    /// The client's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        let (held, refunded, offline_pending) = {
            let reg = self.inner.lock_registry();
            let now = self.inner.clock.now_ns();
            let mut held = 0u64;
            let mut refunded = 0u64;
            let mut offline_pending = 0u64;
            for b in reg.buckets.values() {
                held += b.slots.iter().filter(|s| s.live(now)).count() as u64;
                refunded += b.refunded.load(Ordering::Relaxed);
                offline_pending += b.offline.load(Ordering::Relaxed);
            }
            (held, refunded, offline_pending)
        };
        self.inner.metrics.snapshot(held, refunded, offline_pending)
    }

    /// Whether the last lease batch was acknowledged by the cluster.
    pub fn cluster_reachable(&self) -> bool {
        self.inner.reachable.load(Ordering::Relaxed)
    }

    /// Stops the background tasks, returns every unused token to the cluster (one batch),
    /// and reports what was admitted at the safe rate and not reported yet. Checks after
    /// this answer from what is left locally, which is nothing.
    pub async fn shutdown(&self) -> ShutdownReport {
        let _ = self.stop.0.send(true);
        let tasks: Vec<_> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
        let returned_tokens = refill::round(&self.inner, true).await;
        let _ = offline::report(&self.inner).await;
        let offline_unreported = offline::pending(&self.inner);
        if offline_unreported > 0 {
            tracing::warn!(
                offline_unreported,
                "shut down with usage admitted at the safe rate that the cluster never acknowledged"
            );
        }
        ShutdownReport {
            returned_tokens,
            offline_unreported,
        }
    }
}

#[doc(hidden)]
/// For benchmarks and tests: a client without a cluster, with one key holding one lease.
pub mod testkit {
    use super::*;

    /// A client (no network, no background tasks) whose secret `secret` opens key k1 in
    /// plan p1 covering (`api`, `stage`), with `tokens` tokens leased for an hour. Keys
    /// `k2..` can be added with [`add_key`].
    pub fn local_client(secret: &[u8], api: &str, stage: &str, tokens: u64) -> Client {
        let config = ClientConfig::new(vec!["http://127.0.0.1:1".into()], "testkit");
        let client = Client::build(config, None);
        {
            let mut reg = client.inner.lock_registry();
            reg.replace_plans(vec![v1::UsagePlan {
                id: "p1".into(),
                spec: Some(v1::PlanSpec {
                    name: "testkit".into(),
                    stages: vec![v1::ApiStage {
                        api: api.into(),
                        stage: stage.into(),
                    }],
                    quota: Some(v1::Quota {
                        limit: 1 << 40,
                        period: v1::Period::Month.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]);
        }
        add_key(&client, 1, secret, tokens);
        client
    }

    /// Adds key `k{id}` in plan p1 with `tokens` tokens.
    pub fn add_key(client: &Client, id: u64, secret: &[u8], tokens: u64) {
        let inner = &client.inner;
        let mut reg = inner.lock_registry();
        let answer = v1::GatewayKey {
            key: Some(v1::ApiKey {
                id: format!("k{id}"),
                enabled: true,
                ..Default::default()
            }),
            hash_valid_until: 0,
            plans: vec![v1::Association {
                plan_id: "p1".into(),
                key_id: format!("k{id}"),
                ..Default::default()
            }],
        };
        reg.install_key(
            &answer,
            SecretHash::of(secret),
            Some(secret),
            &inner.clock,
            &inner.secrets,
        );
        let now = inner.clock.now_ns();
        for b in reg.buckets.values() {
            if b.key.0 == id {
                b.slots[0].install(tokens, now + 3_600 * 1_000_000_000);
            }
        }
    }
}
