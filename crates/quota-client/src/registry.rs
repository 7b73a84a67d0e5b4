//! The key cache: plans (from the watch stream), keys (looked up lazily), and the map
//! from presented secret bytes to keys that keeps SHA-256 off the hot path.
//!
//! Two levels:
//! - [`SecretCache`]: read by the hot path. Shards of copy-on-write hash tables behind
//!   `ArcSwap`: a read is a keyed foldhash of the secret, an `ArcSwap::load` (thread-local
//!   bookkeeping, no shared write) and a full-bytes constant-time comparison. Writes
//!   (a newly verified secret) copy one shard, which is rare by construction.
//! - [`Registry`]: everything else, under one `std::sync::Mutex` that the hot path never
//!   takes (watch events, lookups and the refill task are its only users).
//!
//! Changes reach the hot path through atomics inside shared [`KeyState`]s (enabled,
//! deleted, expiry) and [`SecretEntry`]s (validity after a rotation), and through
//! `ArcSwap`ped binding lists (plans, buckets, throttles), so a disable takes effect at the
//! next request without rebuilding any map.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use hashbrown::HashTable;
use quota_core::{KeyId, PlanId, PlanSpec, SecretHash, Throttle};
use quota_proto::v1;

use crate::allowance::Bucket;
use crate::clock::Clock;
use crate::throttle::{Gcra, Pool};

/// Shards of the secret cache: writers copy one shard at a time.
const SECRET_SHARDS: usize = 64;

/// A plan as the hot path needs it.
#[derive(Debug)]
pub(crate) struct PlanView {
    pub(crate) id: PlanId,
    /// (api, stage) pairs the plan covers.
    pub(crate) stages: Vec<(Box<str>, Box<str>)>,
    pub(crate) has_quota: bool,
    pub(crate) throttle: Option<Throttle>,
    /// (method, path, throttle); method "*" matches every method.
    pub(crate) routes: Vec<(Box<str>, Box<str>, Throttle)>,
    /// The plan's safe rate (requests per second per key while the cluster is
    /// unreachable); 0 = the client's configured default.
    pub(crate) safe_rate: f64,
}

impl PlanView {
    pub(crate) fn from_proto(plan: v1::UsagePlan) -> Option<PlanView> {
        let id = plan.id.parse::<PlanId>().ok()?;
        let spec = PlanSpec::try_from(plan.spec?).ok()?;
        Some(PlanView {
            id,
            stages: spec
                .stages()
                .iter()
                .map(|s| (s.api().into(), s.stage().into()))
                .collect(),
            has_quota: spec.quota().is_some(),
            throttle: spec.throttle(),
            routes: spec
                .route_throttles()
                .iter()
                .map(|(r, t)| (r.method().into(), r.path().into(), *t))
                .collect(),
            safe_rate: spec.safe_rate(),
        })
    }

    #[inline]
    pub(crate) fn covers(&self, api: &str, stage: &str) -> bool {
        self.stages
            .iter()
            .any(|(a, s)| &**a == api && &**s == stage)
    }
}

/// A (plan, key) as the hot path needs it.
#[derive(Debug)]
pub(crate) struct Binding {
    pub(crate) plan: Arc<PlanView>,
    pub(crate) bucket: Arc<Bucket>,
    /// The plan's throttle pool for this key.
    pub(crate) throttle: Option<Arc<Pool>>,
    /// Per-route throttle pools: (method, path, pool), overriding `throttle`.
    pub(crate) routes: Vec<(Box<str>, Box<str>, Arc<Pool>)>,
}

impl Binding {
    /// The throttle pool that applies to `route` ("METHOD /path"): the plan's route
    /// throttle whose key is exactly the route, else one for the path with method "*",
    /// else the plan's throttle.
    #[inline]
    pub(crate) fn throttle_for(&self, route: &str) -> Option<&Pool> {
        if !self.routes.is_empty() {
            let (method, path) = route.split_once(' ').unwrap_or(("", route));
            let mut any_method = None;
            for (m, p, pool) in &self.routes {
                if &**p == path {
                    if &**m == method {
                        return Some(pool);
                    }
                    if &**m == "*" {
                        any_method = Some(&**pool);
                    }
                }
            }
            if any_method.is_some() {
                return any_method;
            }
        }
        self.throttle.as_deref()
    }
}

/// A key as the hot path sees it; shared by all of its cached secrets.
#[derive(Debug)]
pub(crate) struct KeyState {
    pub(crate) id: KeyId,
    pub(crate) enabled: AtomicBool,
    pub(crate) deleted: AtomicBool,
    /// Monotonic ns at which the key expires; `u64::MAX` = never.
    pub(crate) expires_ns: AtomicU64,
    pub(crate) bindings: ArcSwap<Vec<Binding>>,
}

/// One verified secret.
#[derive(Debug)]
pub(crate) struct SecretEntry {
    pub(crate) key: Arc<KeyState>,
    /// Monotonic ns until which this secret opens the key; `u64::MAX` = the current one.
    pub(crate) valid_until_ns: AtomicU64,
    /// Its SHA-256 (not secret), to look the key up again after a reconnect.
    pub(crate) hash: SecretHash,
}

#[derive(Clone)]
struct CacheEntry {
    hash: u64,
    secret: Box<[u8]>,
    entry: Arc<SecretEntry>,
}

struct Shard {
    table: ArcSwap<HashTable<CacheEntry>>,
    write: Mutex<()>,
}

/// Recently verified secrets -> keys.
pub(crate) struct SecretCache {
    hasher: foldhash::fast::RandomState,
    shards: Box<[Shard]>,
    per_shard: usize,
}

impl SecretCache {
    pub(crate) fn new(capacity: usize) -> SecretCache {
        SecretCache {
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..SECRET_SHARDS)
                .map(|_| Shard {
                    table: ArcSwap::from_pointee(HashTable::new()),
                    write: Mutex::new(()),
                })
                .collect(),
            per_shard: capacity.div_ceil(SECRET_SHARDS).max(1),
        }
    }

    #[inline]
    fn shard(&self, hash: u64) -> &Shard {
        // The high bits pick the shard; hashbrown uses the low bits and the top 7 as tags,
        // which stay well mixed within a shard.
        &self.shards[(hash >> 32) as usize % SECRET_SHARDS]
    }

    /// Calls `f` with the entry of `secret`, if cached. No allocation, no lock.
    #[inline]
    pub(crate) fn with<R>(&self, secret: &[u8], f: impl FnOnce(&SecretEntry) -> R) -> Option<R> {
        let hash = self.hasher.hash_one(secret);
        let table = self.shard(hash).table.load();
        table
            .find(hash, |e| {
                e.hash == hash && constant_time_eq(&e.secret, secret)
            })
            .map(|e| f(&e.entry))
    }

    /// Remembers `secret` -> `entry`, evicting an arbitrary entry of a full shard.
    pub(crate) fn insert(&self, secret: &[u8], entry: Arc<SecretEntry>) {
        let hash = self.hasher.hash_one(secret);
        let shard = self.shard(hash);
        let _w = shard.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut table = HashTable::clone(&shard.table.load());
        if let Some(old) = table.find_mut(hash, |e| e.hash == hash && *e.secret == *secret) {
            old.entry = entry;
        } else {
            if table.len() >= self.per_shard {
                let mut evicted = false;
                table.retain(|_| {
                    if evicted {
                        true
                    } else {
                        evicted = true;
                        false
                    }
                });
            }
            table.insert_unique(
                hash,
                CacheEntry {
                    hash,
                    secret: secret.into(),
                    entry,
                },
                |e| e.hash,
            );
        }
        shard.table.store(Arc::new(table));
    }

    /// Forgets every entry of `key`.
    pub(crate) fn remove_key(&self, key: KeyId) {
        for shard in self.shards.iter() {
            let _w = shard.write.lock().unwrap_or_else(|p| p.into_inner());
            let current = shard.table.load();
            if current.iter().any(|e| e.entry.key.id == key) {
                let mut table = HashTable::clone(&current);
                table.retain(|e| e.entry.key.id != key);
                shard.table.store(Arc::new(table));
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.table.load().len()).sum()
    }
}

/// Whether `a == b`, in time that depends only on their lengths: eight bytes per step
/// (quota-core's version goes byte by byte, a tenth of the hot path's budget for a 48-byte
/// secret).
#[inline]
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u64;
    let (a8, a_tail) = a.split_at(a.len() - a.len() % 8);
    let (b8, b_tail) = b.split_at(a8.len());
    for (x, y) in a8.chunks_exact(8).zip(b8.chunks_exact(8)) {
        let x = u64::from_ne_bytes(x.try_into().unwrap_or([0; 8]));
        let y = u64::from_ne_bytes(y.try_into().unwrap_or([0; 8]));
        diff |= x ^ y;
    }
    for (x, y) in a_tail.iter().zip(b_tail) {
        diff |= u64::from(x ^ y);
    }
    diff == 0
}

/// What the registry knows of a cached key.
struct KeyRecord {
    state: Arc<KeyState>,
    plans: Vec<PlanId>,
    entries: Vec<Arc<SecretEntry>>,
}

/// A throttle pool's identity: (plan, key, the plan's route key or `None`).
type PoolKey = (PlanId, KeyId, Option<Box<str>>);

/// Everything off the hot path. Guarded by one mutex in the client.
pub(crate) struct Registry {
    pub(crate) plans: HashMap<PlanId, Arc<PlanView>>,
    keys: HashMap<KeyId, KeyRecord>,
    pub(crate) buckets: HashMap<(PlanId, KeyId), Arc<Bucket>>,
    throttles: HashMap<PoolKey, Arc<Pool>>,
    /// Every pool in `throttles`, for the throttle refill task (rebuilt on change, so a
    /// round costs one `Arc` clone, not one per pool).
    pools: Arc<Vec<Arc<Pool>>>,
    pools_dirty: bool,
    /// Hashes no key has, until a monotonic ns.
    misses: HashMap<SecretHash, u64>,
    /// Counts key-changing events; `touched[k]` is the count at the last one about `k`.
    touch_seq: u64,
    touched: HashMap<KeyId, u64>,
    /// The watch stream delivered its initial state (at least once).
    pub(crate) synced: bool,
    capacity: usize,
    safe_rate: f64,
    throttle_share: f64,
    /// Seconds of a throttle's rate asked for per chunk.
    throttle_chunk_secs: f64,
}

impl Registry {
    pub(crate) fn new(
        capacity: usize,
        safe_rate: f64,
        throttle_share: f64,
        throttle_chunk_secs: f64,
    ) -> Registry {
        Registry {
            plans: HashMap::new(),
            keys: HashMap::new(),
            buckets: HashMap::new(),
            throttles: HashMap::new(),
            pools: Arc::new(Vec::new()),
            pools_dirty: false,
            misses: HashMap::new(),
            touch_seq: 0,
            touched: HashMap::new(),
            synced: false,
            capacity,
            safe_rate,
            throttle_share,
            throttle_chunk_secs,
        }
    }

    /// Whether `hash` is a remembered miss at `now_ns`.
    pub(crate) fn is_miss(&self, hash: &SecretHash, now_ns: u64) -> bool {
        self.misses.get(hash).is_some_and(|&until| now_ns < until)
    }

    /// Remember a miss until `until_ns`; drop expired ones when full.
    pub(crate) fn remember_miss(&mut self, hash: SecretHash, now_ns: u64, until_ns: u64) {
        if self.misses.len() >= self.capacity {
            self.misses.retain(|_, &mut until| until > now_ns);
            if self.misses.len() >= self.capacity {
                // Still full of live misses: forget them all rather than grow without bound.
                self.misses.clear();
            }
        }
        self.misses.insert(hash, until_ns);
    }

    /// The event counter, taken before a lookup: an event about the key after it means the
    /// answer may be stale.
    pub(crate) fn touch_seq(&self) -> u64 {
        self.touch_seq
    }

    pub(crate) fn touched_since(&self, key: KeyId, seq: u64) -> bool {
        self.touched.get(&key).is_some_and(|&s| s > seq)
    }

    fn touch(&mut self, key: KeyId) {
        self.touch_seq += 1;
        if self.touched.len() >= self.capacity {
            self.touched.clear();
        }
        self.touched.insert(key, self.touch_seq);
    }

    /// Hashes of every cached secret, to look them up again after a reconnect.
    pub(crate) fn cached_hashes(&self) -> Vec<SecretHash> {
        self.keys
            .values()
            .flat_map(|r| r.entries.iter().map(|e| e.hash))
            .collect()
    }

    /// Installs what `LookupKey` answered for `hash` (presented as `secret`).
    pub(crate) fn install_key(
        &mut self,
        answer: &v1::GatewayKey,
        hash: SecretHash,
        secret: Option<&[u8]>,
        clock: &Clock,
        cache: &SecretCache,
    ) -> Option<KeyId> {
        let key = answer.key.as_ref()?;
        let id = key.id.parse::<KeyId>().ok()?;
        let plans: Vec<PlanId> = answer
            .plans
            .iter()
            .filter_map(|a| a.plan_id.parse::<PlanId>().ok())
            .collect();
        let record = self.keys.entry(id).or_insert_with(|| KeyRecord {
            state: Arc::new(KeyState {
                id,
                enabled: AtomicBool::new(true),
                deleted: AtomicBool::new(false),
                expires_ns: AtomicU64::new(u64::MAX),
                bindings: ArcSwap::from_pointee(Vec::new()),
            }),
            plans: Vec::new(),
            entries: Vec::new(),
        });
        record.plans = plans;
        apply_key_fields(&record.state, key, clock);
        let valid_until_ns = if answer.hash_valid_until == 0 {
            u64::MAX
        } else {
            clock.deadline_of_wall(answer.hash_valid_until)
        };
        let entry = match record.entries.iter().find(|e| e.hash == hash) {
            Some(e) => {
                e.valid_until_ns.store(valid_until_ns, Ordering::Release);
                e.clone()
            }
            None => {
                let e = Arc::new(SecretEntry {
                    key: record.state.clone(),
                    valid_until_ns: AtomicU64::new(valid_until_ns),
                    hash,
                });
                record.entries.push(e.clone());
                e
            }
        };
        self.misses.remove(&hash);
        self.rebuild(id);
        if let Some(secret) = secret {
            cache.insert(secret, entry);
        }
        Some(id)
    }

    /// A re-lookup after a reconnect found no key for `hash`: revoke that secret.
    pub(crate) fn revoke_hash(&mut self, hash: &SecretHash, now_ns: u64) {
        for r in self.keys.values() {
            for e in &r.entries {
                if e.hash == *hash {
                    e.valid_until_ns.store(now_ns, Ordering::Release);
                }
            }
        }
    }

    /// Rebuilds the bindings of a cached key from its plans.
    fn rebuild(&mut self, id: KeyId) {
        let Some(record) = self.keys.get(&id) else {
            return;
        };
        let plan_ids = record.plans.clone();
        let state = record.state.clone();
        let mut bindings = Vec::with_capacity(plan_ids.len());
        for plan_id in plan_ids {
            let Some(plan) = self.plans.get(&plan_id).cloned() else {
                continue;
            };
            // The plan's own safe rate wins; the client's setting is the default. A bucket keeps
            // the rate it was made with (it holds leases); a changed rate applies to new ones.
            let safe_rate = if plan.safe_rate > 0.0 {
                plan.safe_rate
            } else {
                self.safe_rate
            };
            let bucket = self
                .buckets
                .entry((plan_id, id))
                .or_insert_with(|| {
                    Arc::new(Bucket::new(
                        plan_id,
                        id,
                        Gcra::new(safe_rate, safe_rate.max(1.0)),
                    ))
                })
                .clone();
            let throttle = plan
                .throttle
                .map(|t| self.throttle_pool(plan_id, id, None, t, safe_rate));
            let routes = plan
                .routes
                .iter()
                .map(|(m, p, t)| {
                    let route = format!("{m} {p}").into_boxed_str();
                    let pool = self.throttle_pool(plan_id, id, Some(route), *t, safe_rate);
                    (m.clone(), p.clone(), pool)
                })
                .collect();
            bindings.push(Binding {
                plan,
                bucket,
                throttle,
                routes,
            });
        }
        state.bindings.store(Arc::new(bindings));
    }

    /// The pool of (plan, key, route) under throttle `t`; a new one (empty) when the
    /// throttle changed.
    fn throttle_pool(
        &mut self,
        plan: PlanId,
        key: KeyId,
        route: Option<Box<str>>,
        t: Throttle,
        safe_rate: f64,
    ) -> Arc<Pool> {
        use std::collections::hash_map::Entry;
        let fallback = (safe_rate > 0.0).then_some(self.throttle_share);
        let make = |route| {
            Arc::new(Pool::new(
                plan,
                key,
                route,
                t,
                self.throttle_chunk_secs,
                fallback,
            ))
        };
        match self.throttles.entry((plan, key, route.clone())) {
            Entry::Occupied(o) if o.get().throttle == t => o.get().clone(),
            Entry::Occupied(mut o) => {
                let pool = make(route);
                o.insert(pool.clone());
                self.pools_dirty = true;
                pool
            }
            Entry::Vacant(v) => {
                let pool = make(route);
                v.insert(pool.clone());
                self.pools_dirty = true;
                pool
            }
        }
    }

    /// Every throttle pool, for the throttle refill task.
    pub(crate) fn all_pools(&mut self) -> Arc<Vec<Arc<Pool>>> {
        if self.pools_dirty {
            self.pools = Arc::new(self.throttles.values().cloned().collect());
            self.pools_dirty = false;
        }
        self.pools.clone()
    }

    /// Replaces every plan (a fresh initial state from the watch stream).
    pub(crate) fn replace_plans(&mut self, plans: Vec<v1::UsagePlan>) {
        self.plans = plans
            .into_iter()
            .filter_map(PlanView::from_proto)
            .map(|p| (p.id, Arc::new(p)))
            .collect();
        let ids: Vec<KeyId> = self.keys.keys().copied().collect();
        for id in ids {
            self.rebuild(id);
        }
        self.synced = true;
    }

    /// Applies one change of the watch stream.
    pub(crate) fn apply(
        &mut self,
        event: v1::watch_event::Event,
        clock: &Clock,
        cache: &SecretCache,
    ) {
        use v1::watch_event::Event;
        match event {
            Event::PlanUpserted(plan) => {
                let Some(view) = PlanView::from_proto(plan) else {
                    return;
                };
                let id = view.id;
                self.plans.insert(id, Arc::new(view));
                self.rebuild_plan(id);
            }
            Event::PlanDeleted(id) => {
                if let Ok(id) = id.parse::<PlanId>() {
                    self.plans.remove(&id);
                    for r in self.keys.values_mut() {
                        r.plans.retain(|p| *p != id);
                    }
                    self.rebuild_plan(id);
                }
            }
            Event::KeyUpserted(key) => {
                let Ok(id) = key.id.parse::<KeyId>() else {
                    return;
                };
                self.touch(id);
                if let Some(r) = self.keys.get(&id) {
                    apply_key_fields(&r.state, &key, clock);
                }
            }
            Event::KeyRotated(rot) => {
                let Ok(id) = rot.key_id.parse::<KeyId>() else {
                    return;
                };
                self.touch(id);
                if let Some(r) = self.keys.get(&id) {
                    // Every secret cached so far is now the previous one.
                    let until = if rot.previous_valid_until == 0 {
                        clock.now_ns()
                    } else {
                        clock.deadline_of_wall(rot.previous_valid_until)
                    };
                    for e in &r.entries {
                        let cur = e.valid_until_ns.load(Ordering::Acquire);
                        e.valid_until_ns.store(cur.min(until), Ordering::Release);
                    }
                }
            }
            Event::KeyDeleted(id) => {
                let Ok(id) = id.parse::<KeyId>() else {
                    return;
                };
                self.touch(id);
                if let Some(r) = self.keys.remove(&id) {
                    r.state.deleted.store(true, Ordering::Release);
                    cache.remove_key(id);
                }
            }
            Event::Attached(a) => {
                let (Ok(plan), Ok(key)) = (a.plan_id.parse::<PlanId>(), a.key_id.parse::<KeyId>())
                else {
                    return;
                };
                self.touch(key);
                if let Some(r) = self.keys.get_mut(&key) {
                    if !r.plans.contains(&plan) {
                        r.plans.push(plan);
                    }
                    self.rebuild(key);
                }
            }
            Event::Detached(d) => {
                let (Ok(plan), Ok(key)) = (d.plan_id.parse::<PlanId>(), d.key_id.parse::<KeyId>())
                else {
                    return;
                };
                self.touch(key);
                if let Some(r) = self.keys.get_mut(&key) {
                    r.plans.retain(|p| *p != plan);
                    self.rebuild(key);
                }
            }
            Event::Synced(_) => {}
        }
    }

    fn rebuild_plan(&mut self, plan: PlanId) {
        let ids: Vec<KeyId> = self
            .keys
            .iter()
            .filter(|(_, r)| r.plans.contains(&plan))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.rebuild(id);
        }
    }

    /// Every bucket, for the refill task.
    pub(crate) fn all_buckets(&self) -> Vec<Arc<Bucket>> {
        self.buckets.values().cloned().collect()
    }
}

fn apply_key_fields(state: &KeyState, key: &v1::ApiKey, clock: &Clock) {
    state.enabled.store(key.enabled, Ordering::Release);
    state
        .expires_ns
        .store(clock.deadline_of_wall(key.expires_at), Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_state(id: u64) -> Arc<KeyState> {
        Arc::new(KeyState {
            id: KeyId(id),
            enabled: AtomicBool::new(true),
            deleted: AtomicBool::new(false),
            expires_ns: AtomicU64::new(u64::MAX),
            bindings: ArcSwap::from_pointee(Vec::new()),
        })
    }

    // Property: the secret cache finds a secret by its full bytes only, survives eviction
    // bounds, and forgets a key's secrets on removal.
    // Set-up: capacity 64 (one per shard); insert 1,000 secrets; look them up; remove one key.
    // Pass: size stays bounded; a prefix or a one-byte change does not match.
    #[test]
    fn secret_cache_full_bytes_and_bounds() {
        let cache = SecretCache::new(64);
        let k = key_state(1);
        let entry = Arc::new(SecretEntry {
            key: k.clone(),
            valid_until_ns: AtomicU64::new(u64::MAX),
            hash: SecretHash::of(b"qdk_secret-number-one-0123456789"),
        });
        cache.insert(b"qdk_secret-number-one-0123456789", entry.clone());
        assert_eq!(
            cache.with(b"qdk_secret-number-one-0123456789", |e| e.key.id),
            Some(KeyId(1))
        );
        assert!(
            cache
                .with(b"qdk_secret-number-one-012345678", |_| ())
                .is_none()
        );
        assert!(
            cache
                .with(b"qdk_secret-number-one-0123456788", |_| ())
                .is_none()
        );
        for i in 0..1000 {
            cache.insert(format!("secret-{i}").as_bytes(), entry.clone());
        }
        assert!(cache.len() <= 64, "{}", cache.len());
        cache.insert(b"qdk_secret-number-one-0123456789", entry);
        cache.remove_key(KeyId(1));
        assert_eq!(cache.len(), 0);
    }

    fn plan_proto(id: &str, api: &str) -> v1::UsagePlan {
        v1::UsagePlan {
            id: id.into(),
            spec: Some(v1::PlanSpec {
                name: format!("plan-{id}"),
                stages: vec![v1::ApiStage {
                    api: api.into(),
                    stage: "prod".into(),
                }],
                throttle: Some(v1::Throttle {
                    rate_limit: 10.0,
                    burst_limit: 5,
                }),
                route_throttles: [(
                    "GET /slow".to_owned(),
                    v1::Throttle {
                        rate_limit: 1.0,
                        burst_limit: 1,
                    },
                )]
                .into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    // Property: a looked-up key gets bindings for its plans; watch events disable it,
    // attach and detach plans, rotate its secret out and delete it, all visible through
    // the shared state the hot path reads.
    #[test]
    fn events_reach_cached_keys() {
        let clock = Clock::new();
        let cache = SecretCache::new(100);
        let mut reg = Registry::new(100, 0.0, 1.0, 0.05);
        reg.replace_plans(vec![plan_proto("p1", "orders"), plan_proto("p2", "users")]);
        let answer = v1::GatewayKey {
            key: Some(v1::ApiKey {
                id: "k7".into(),
                enabled: true,
                ..Default::default()
            }),
            hash_valid_until: 0,
            plans: vec![v1::Association {
                plan_id: "p1".into(),
                key_id: "k7".into(),
                ..Default::default()
            }],
        };
        let secret = b"qdk_0123456789abcdef0123456789abcdef01234567";
        let hash = SecretHash::of(secret);
        assert_eq!(
            reg.install_key(&answer, hash, Some(secret), &clock, &cache),
            Some(KeyId(7))
        );
        let state = cache.with(secret, |e| e.key.clone()).unwrap();
        assert_eq!(state.bindings.load().len(), 1);
        let b = &state.bindings.load()[0];
        assert!(b.plan.covers("orders", "prod"));
        assert!(!b.plan.covers("orders", "dev"));
        assert!(std::ptr::eq(
            b.throttle_for("GET /slow").unwrap(),
            &*b.routes[0].2
        ));
        assert_eq!(
            b.throttle_for("GET /slow").unwrap().route.as_deref(),
            Some("GET /slow")
        );
        assert!(std::ptr::eq(
            b.throttle_for("POST /x").unwrap(),
            &**b.throttle.as_ref().unwrap()
        ));
        assert!(std::ptr::eq(
            b.throttle_for("POST /slow").unwrap(),
            &**b.throttle.as_ref().unwrap()
        ));

        use v1::watch_event::Event;
        reg.apply(
            Event::KeyUpserted(v1::ApiKey {
                id: "k7".into(),
                enabled: false,
                ..Default::default()
            }),
            &clock,
            &cache,
        );
        assert!(!state.enabled.load(Ordering::Acquire));
        reg.apply(
            Event::Attached(v1::Association {
                plan_id: "p2".into(),
                key_id: "k7".into(),
                ..Default::default()
            }),
            &clock,
            &cache,
        );
        assert_eq!(state.bindings.load().len(), 2);
        reg.apply(
            Event::Detached(v1::Detached {
                plan_id: "p1".into(),
                key_id: "k7".into(),
            }),
            &clock,
            &cache,
        );
        assert_eq!(state.bindings.load().len(), 1);
        reg.apply(
            Event::KeyRotated(v1::KeyRotated {
                key_id: "k7".into(),
                previous_valid_until: 0,
            }),
            &clock,
            &cache,
        );
        let until = cache
            .with(secret, |e| e.valid_until_ns.load(Ordering::Acquire))
            .unwrap();
        assert!(until <= clock.now_ns());
        assert!(reg.touched_since(KeyId(7), 0));
        reg.apply(Event::KeyDeleted("k7".into()), &clock, &cache);
        assert!(state.deleted.load(Ordering::Acquire));
        assert!(cache.with(secret, |_| ()).is_none());
    }

    // Property: the 8-bytes-per-step comparison agrees with plain equality.
    // Set-up: every pair of prefixes of two 48-byte strings that differ at one position,
    // for each position. Pass: equal exactly when the slices are equal.
    #[test]
    fn constant_time_eq_agrees_with_eq() {
        let a: Vec<u8> = (0..48u8).collect();
        for i in 0..48 {
            let mut b = a.clone();
            b[i] ^= 0x40;
            for la in [0, 1, 7, 8, 9, 16, 47, 48] {
                for lb in [0, 1, 7, 8, 9, 16, 47, 48] {
                    assert_eq!(
                        constant_time_eq(&a[..la], &b[..lb]),
                        a[..la] == b[..lb],
                        "{i} {la} {lb}"
                    );
                    assert_eq!(constant_time_eq(&a[..la], &a[..lb]), la == lb);
                }
            }
        }
    }

    // Property: misses are remembered until their time and the table stays bounded.
    #[test]
    fn misses_expire_and_stay_bounded() {
        let mut reg = Registry::new(4, 0.0, 1.0, 0.05);
        for i in 0..10u8 {
            reg.remember_miss(SecretHash([i; 32]), 0, 100);
        }
        assert!(reg.misses.len() <= 4);
        assert!(reg.is_miss(&SecretHash([9; 32]), 50));
        assert!(!reg.is_miss(&SecretHash([9; 32]), 100));
    }
}
