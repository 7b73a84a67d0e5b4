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
//! - `throttle`: a lock-free GCRA token bucket.
//! - `refill`: the background task that renews and settles leases in batches.
//! - `watch`: the background task that follows the cluster's changes.
//! - `transport`: channels, the bearer token, retries on the next node.
//! - [`metrics`]: counters to export.
//!
//! # The hot path
//! `check` with a cached secret and live allowances does, in order: a keyed foldhash of
//! the secret and a lookup in a copy-on-write shard (`ArcSwap::load`, no lock), a
//! constant-time comparison of the full bytes, three atomic loads (deleted, enabled,
//! expiry), an `ArcSwap::load` of the key's plans, and per covering plan one CAS on the
//! lease slot (and one on the throttle, if any). Nothing allocates (up to 4 covering plans
//! are held inline by the permit); counters go to a per-thread stripe.
//!
//! # Throttles
//! Throttles are enforced at each gateway with a GCRA (exact per gateway: burst, then
//! `rate` per second). The cluster has no throttle allowances yet, so across N gateways
//! the admitted rate is at most N x `throttle_share` x rate; set `throttle_share` to 1/N
//! for a static split.

pub mod config;
pub mod decision;
pub mod error;
pub mod metrics;

mod allowance;
mod clock;
mod refill;
mod registry;
mod throttle;
mod transport;
mod watch;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

use allowance::{Refusal, Take, UNLIMITED};
use clock::Clock;
use decision::{Charge, Charges};
use registry::{Binding, Registry, SecretCache};

/// State shared by the client handles and its background tasks.
pub(crate) struct Inner {
    config: ClientConfig,
    clock: Clock,
    secrets: SecretCache,
    registry: Mutex<Registry>,
    metrics: metrics::Metrics,
    /// Wakes the refill task (a bucket ran low or dry).
    refill_signal: Notify,
    /// Wakes callers waiting for a lookup or a lease.
    changed: Notify,
    transport: Option<transport::Transport>,
    /// The last lease batch was acknowledged.
    reachable: AtomicBool,
    /// `admitted_unreachable` when the cluster was last reachable.
    admitted_before_outage: AtomicU64,
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
            let total = self.metrics.admitted_unreachable.load(Ordering::Relaxed);
            let before = self.admitted_before_outage.swap(total, Ordering::AcqRel);
            let during = total.saturating_sub(before);
            self.metrics
                .admitted_unreachable_reported
                .store(total, Ordering::Relaxed);
            tracing::info!(
                admitted_at_safe_rate = during,
                "cluster reachable again; requests admitted at the safe rate while it was not"
            );
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
}

/// What [`Client::shutdown`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Unused tokens returned to the cluster.
    pub returned_tokens: u64,
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
        let refill = tokio::spawn(refill::run(client.inner.clone(), rx));
        client
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([watch, refill]);
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
            )),
            clock: Clock::new(),
            metrics: metrics::Metrics::new(),
            refill_signal: Notify::new(),
            changed: Notify::new(),
            transport,
            reachable: AtomicBool::new(true),
            admitted_before_outage: AtomicU64::new(0),
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
                Local::NeedLease => {
                    self.inner.refill_signal.notify_one();
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
            Local::NeedKey | Local::NeedLease => {
                self.inner.refill_signal.notify_one();
                None
            }
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
        let now = inner.clock.now_ns();
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

    /// Takes `cost` from every binding covering (api, stage), all or nothing.
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
        let mut info = RateInfo::default();
        let mut covered = false;
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
                    charges.push(Charge::Lease {
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
                    decision::undo(&mut charges, cost);
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
                        decision::undo(&mut charges, cost);
                        return Local::NeedLease;
                    }
                    // Unreachable and out of leases: the safe rate, if any.
                    match &bucket.safe {
                        Some(g) if g.try_take(cost, now).is_ok() => {
                            inner
                                .metrics
                                .admitted_unreachable
                                .fetch_add(1, Ordering::Relaxed);
                            charges.push(Charge::Safe);
                        }
                        _ => {
                            decision::undo(&mut charges, cost);
                            return Local::Done(
                                self.deny(DenyReason::Unavailable, RateInfo::default()),
                            );
                        }
                    }
                }
            }
            if let Some(g) = b.throttle_for(route) {
                match g.try_take(cost, now) {
                    Ok(()) => charges.push(Charge::Throttle(g.clone())),
                    Err(wait_ns) => {
                        decision::undo(&mut charges, cost);
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
        inner.metrics.allowed();
        Local::Done(Decision::Allow(Permit::new(info, cost, charges)))
    }

    /// The client's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        let (held, refunded) = {
            let reg = self.inner.lock_registry();
            let now = self.inner.clock.now_ns();
            let mut held = 0u64;
            let mut refunded = 0u64;
            for b in reg.buckets.values() {
                held += b.slots.iter().filter(|s| s.live(now)).count() as u64;
                refunded += b.refunded.load(Ordering::Relaxed);
            }
            (held, refunded)
        };
        self.inner.metrics.snapshot(held, refunded)
    }

    /// Whether the last lease batch was acknowledged by the cluster.
    pub fn cluster_reachable(&self) -> bool {
        self.inner.reachable.load(Ordering::Relaxed)
    }

    /// Stops the background tasks and returns every unused token to the cluster (one
    /// batch). Checks after this answer from what is left locally, which is nothing.
    pub async fn shutdown(&self) -> ShutdownReport {
        let _ = self.stop.0.send(true);
        let tasks: Vec<_> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
        let returned_tokens = refill::round(&self.inner, true).await;
        ShutdownReport { returned_tokens }
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
