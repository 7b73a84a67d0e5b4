//! The replicated state and the deterministic state machine that changes it.
//!
//! `State::apply(entry)` is a pure function of the state and the entry: it reads no clock
//! (time is the leader's stamp on the entry, made monotonic here), no random source and no
//! disk, and iterates only ordered maps, so every replica that applies the same entries
//! reaches the same state, byte for byte.
//!
//! A command that is refused (an `Err` response) changes nothing but the deduplication table
//! and the clock: every command checks everything before it mutates anything.
//!
//! Quota accounting. For each (key, plan) there is one [`Counter`] for the current period:
//! `used` (spent) plus `reserved` (held by open leases) never exceeds the limit in force when
//! they were admitted. A lease moves units from remaining to `reserved` in one entry;
//! settling moves the spent part to `used` and frees the rest; expiry counts all of it as
//! used. Leases never outlive their period, so a period rollover first expires every lease
//! of the old period.
//!
//! The one exception: [`Command::ReportOffline`] adds usage that a gateway admitted at a
//! plan's safe rate while it could not reach the cluster, with no quota check (the requests
//! already happened). It is accepted only for plans whose `safe_rate` > 0, the operator's
//! explicit opt-in, so for those plans `used` may exceed the limit by what was reported;
//! the counter then simply has nothing left to admit until the period ends.

use crate::command::*;
use crate::error::{ApplyError, Entity, ValidationError};
use crate::limits::*;
use crate::model::*;
use crate::period::Window;
use crate::secret::SecretHash;
use crate::time::{Date, Timestamp};
use crate::types::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The whole replicated state. Derived indexes are not serialised; they are rebuilt when a
/// snapshot is restored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The latest leader timestamp applied; never goes backwards.
    clock: Timestamp,
    next_key: u64,
    next_plan: u64,
    next_lease: u64,
    keys: BTreeMap<KeyId, ApiKey>,
    plans: BTreeMap<PlanId, UsagePlan>,
    associations: BTreeMap<(KeyId, PlanId), Association>,
    counters: BTreeMap<(KeyId, PlanId), Counter>,
    daily: BTreeMap<(KeyId, PlanId, i64), DayUsage>,
    leases: BTreeMap<LeaseId, Lease>,
    dedup: Dedup,
    #[serde(skip)]
    idx: Indexes,
}

/// Lookups derived from the primary maps.
#[derive(Clone, Debug, Default, PartialEq)]
struct Indexes {
    key_names: BTreeMap<Name, KeyId>,
    /// Current secrets, and previous ones still in their grace period (or not yet pruned).
    key_hashes: BTreeMap<SecretHash, KeyId>,
    plan_names: BTreeMap<Name, PlanId>,
    plan_keys: BTreeSet<(PlanId, KeyId)>,
    lease_expiry: BTreeSet<(Timestamp, LeaseId)>,
    counter_leases: BTreeSet<(KeyId, PlanId, LeaseId)>,
}

/// Responses to recent request ids, oldest forgotten first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Dedup {
    responses: BTreeMap<RequestId, Response>,
    order: VecDeque<RequestId>,
}

impl Dedup {
    fn insert(&mut self, id: RequestId, response: Response) {
        if self.responses.insert(id, response).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > DEDUP_TABLE_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.responses.remove(&old);
            }
        }
    }
}

/// One day of a usage report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayReport {
    pub date: Date,
    pub used: u64,
    /// `None` for a plan without a quota.
    pub remaining: Option<u64>,
}

impl State {
    /// An empty state.
    pub fn new() -> State {
        State::default()
    }

    /// Apply one entry. Deterministic; see the module documentation.
    pub fn apply(&mut self, entry: &Entry) -> Response {
        if let Some(first) = entry
            .request_id
            .and_then(|id| self.dedup.responses.get(&id))
        {
            return first.clone();
        }
        self.clock = self.clock.max(entry.at.min(Timestamp::MAX));
        let now = self.clock;
        let response = match &entry.command {
            Command::Batch(items) => self.apply_batch(now, items),
            command => self.execute(now, command),
        };
        if let Some(id) = entry.request_id {
            self.dedup.insert(id, response.clone());
        }
        response
    }

    /// Apply the items of a batch in order, each deduplicated on its own.
    fn apply_batch(&mut self, now: Timestamp, items: &[BatchItem]) -> Response {
        if items.len() > MAX_COMMANDS_PER_BATCH {
            return Err(
                ValidationError::too_many("batch", items.len(), MAX_COMMANDS_PER_BATCH).into(),
            );
        }
        let responses = items
            .iter()
            .map(|item| {
                if let Some(first) = item.request_id.and_then(|id| self.dedup.responses.get(&id)) {
                    return first.clone();
                }
                let response = match &item.command {
                    Command::Batch(_) => Err(ValidationError::invalid(
                        "batch",
                        "a batch cannot contain a batch",
                    )
                    .into()),
                    command => self.execute(now, command),
                };
                if let Some(id) = item.request_id {
                    self.dedup.insert(id, response.clone());
                }
                response
            })
            .collect();
        Ok(Outcome::Batch(responses))
    }

    fn execute(&mut self, now: Timestamp, command: &Command) -> Response {
        match command {
            Command::Noop => Ok(Outcome::Done),
            Command::Batch(items) => self.apply_batch(now, items),
            Command::KeyCreate { spec, secret } => self.key_create(now, spec, secret, false),
            Command::KeyImport { spec, secret } => self.key_create(now, spec, secret, true),
            Command::KeyUpdate { key, patch } => self.key_update(now, *key, patch),
            Command::KeySetEnabled { key, enabled } => {
                let patch = KeyPatch {
                    enabled: Some(*enabled),
                    ..KeyPatch::default()
                };
                self.key_update(now, *key, &patch)
            }
            Command::KeyRotate {
                key,
                secret,
                grace_ms,
            } => self.key_rotate(now, *key, secret, *grace_ms),
            Command::KeyDelete { key } => self.key_delete(*key),
            Command::PlanCreate { spec } => self.plan_create(now, spec),
            Command::PlanUpdate { plan, spec } => self.plan_update(now, *plan, spec),
            Command::PlanDelete { plan } => self.plan_delete(*plan),
            Command::Attach {
                plan,
                key,
                extra_per_period,
            } => self.attach(now, *plan, *key, *extra_per_period),
            Command::Detach { plan, key } => self.detach(now, *plan, *key),
            Command::Increment { key, target, cost } => self.increment(now, key, target, *cost),
            Command::Leases { gateway, ops } => self.leases(now, gateway, ops),
            Command::ExpireLeases => Ok(Outcome::Expired {
                leases: self.expire_due_leases(now),
            }),
            Command::UsageGrant { plan, key, extra } => self.usage_grant(now, *plan, *key, *extra),
            Command::UsageSetRemaining {
                plan,
                key,
                remaining,
            } => self.usage_set_remaining(now, *plan, *key, *remaining),
            Command::ReportOffline { usage, .. } => self.report_offline(now, usage),
        }
    }

    // ----- keys -----

    fn key_create(
        &mut self,
        now: Timestamp,
        spec: &KeySpec,
        secret: &SecretDigest,
        imported: bool,
    ) -> Response {
        if self.keys.len() >= MAX_KEYS {
            return Err(ApplyError::LimitReached {
                what: "keys".into(),
                max: MAX_KEYS,
            });
        }
        self.check_key_name_free(&spec.name, None)?;
        self.check_hash_free(&secret.hash)?;
        self.next_key += 1;
        let key = ApiKey {
            id: KeyId(self.next_key),
            spec: spec.clone(),
            secret: secret.clone(),
            previous: None,
            imported,
            created_at: now,
            updated_at: now,
        };
        self.idx.key_names.insert(key.spec.name.clone(), key.id);
        self.idx.key_hashes.insert(key.secret.hash, key.id);
        self.keys.insert(key.id, key.clone());
        Ok(Outcome::Key(Box::new(key)))
    }

    fn check_key_name_free(&self, name: &Name, except: Option<KeyId>) -> Result<(), ApplyError> {
        match self.idx.key_names.get(name) {
            Some(owner) if Some(*owner) != except => Err(ApplyError::conflict(
                Entity::Key,
                format!("a key named `{name}` already exists ({owner})"),
            )),
            _ => Ok(()),
        }
    }

    fn check_hash_free(&self, hash: &SecretHash) -> Result<(), ApplyError> {
        if self.idx.key_hashes.contains_key(hash) {
            return Err(ApplyError::conflict(
                Entity::Key,
                "another key already uses this secret",
            ));
        }
        Ok(())
    }

    fn key_update(&mut self, now: Timestamp, id: KeyId, patch: &KeyPatch) -> Response {
        let old = self.key(id)?.clone();
        if let Some(name) = &patch.name {
            self.check_key_name_free(name, Some(id))?;
        }
        let mut key = old.clone();
        if let Some(name) = &patch.name {
            key.spec.name = name.clone();
        }
        if let Some(description) = &patch.description {
            key.spec.description = description.clone();
        }
        if let Some(owner) = &patch.owner {
            key.spec.owner = owner.clone();
        }
        if let Some(enabled) = patch.enabled {
            key.spec.enabled = enabled;
        }
        if let Some(expires_at) = patch.expires_at {
            key.spec.expires_at = expires_at;
        }
        if let Some(tags) = &patch.tags {
            key.spec.tags = tags.clone();
        }
        key.updated_at = now;
        self.idx.key_names.remove(&old.spec.name);
        self.idx.key_names.insert(key.spec.name.clone(), id);
        self.keys.insert(id, key.clone());
        Ok(Outcome::Key(Box::new(key)))
    }

    fn key_rotate(
        &mut self,
        now: Timestamp,
        id: KeyId,
        secret: &SecretDigest,
        grace_ms: u64,
    ) -> Response {
        if grace_ms > MAX_ROTATION_GRACE_MS {
            return Err(ValidationError::out_of_range(
                "grace_ms",
                grace_ms,
                0,
                MAX_ROTATION_GRACE_MS,
            )
            .into());
        }
        let mut key = self.key(id)?.clone();
        self.check_hash_free(&secret.hash)?;
        if let Some(prev) = key.previous.take() {
            self.idx.key_hashes.remove(&prev.hash);
        }
        if grace_ms > 0 {
            key.previous = Some(PreviousSecret {
                hash: key.secret.hash,
                valid_until: now.plus_millis(grace_ms),
            });
        } else {
            self.idx.key_hashes.remove(&key.secret.hash);
        }
        key.secret = secret.clone();
        key.updated_at = now;
        self.idx.key_hashes.insert(secret.hash, id);
        self.keys.insert(id, key.clone());
        Ok(Outcome::Key(Box::new(key)))
    }

    fn key_delete(&mut self, id: KeyId) -> Response {
        let key = self.key(id)?.clone();
        let plans: Vec<PlanId> = self.plans_of(id).collect();
        for plan in plans {
            self.remove_association(id, plan);
        }
        self.idx.key_names.remove(&key.spec.name);
        self.idx.key_hashes.remove(&key.secret.hash);
        if let Some(prev) = &key.previous {
            self.idx.key_hashes.remove(&prev.hash);
        }
        self.keys.remove(&id);
        Ok(Outcome::Done)
    }

    // ----- plans -----

    fn plan_create(&mut self, now: Timestamp, spec: &PlanSpec) -> Response {
        if self.plans.len() >= MAX_PLANS {
            return Err(ApplyError::LimitReached {
                what: "plans".into(),
                max: MAX_PLANS,
            });
        }
        self.check_plan_name_free(spec.name(), None)?;
        self.next_plan += 1;
        let plan = UsagePlan {
            id: PlanId(self.next_plan),
            spec: spec.clone(),
            created_at: now,
            updated_at: now,
        };
        self.idx.plan_names.insert(spec.name().clone(), plan.id);
        self.plans.insert(plan.id, plan.clone());
        Ok(Outcome::Plan(Box::new(plan)))
    }

    fn check_plan_name_free(&self, name: &Name, except: Option<PlanId>) -> Result<(), ApplyError> {
        match self.idx.plan_names.get(name) {
            Some(owner) if Some(*owner) != except => Err(ApplyError::conflict(
                Entity::Plan,
                format!("a plan named `{name}` already exists ({owner})"),
            )),
            _ => Ok(()),
        }
    }

    fn plan_update(&mut self, now: Timestamp, id: PlanId, spec: &PlanSpec) -> Response {
        let old = self.plan(id)?.clone();
        self.check_plan_name_free(spec.name(), Some(id))?;
        let plan = UsagePlan {
            spec: spec.clone(),
            updated_at: now,
            ..old.clone()
        };
        self.idx.plan_names.remove(old.spec.name());
        self.idx.plan_names.insert(spec.name().clone(), id);
        self.plans.insert(id, plan.clone());
        Ok(Outcome::Plan(Box::new(plan)))
    }

    fn plan_delete(&mut self, id: PlanId) -> Response {
        let plan = self.plan(id)?.clone();
        let keys: Vec<KeyId> = self.keys_of(id).collect();
        for key in keys {
            self.remove_association(key, id);
        }
        self.idx.plan_names.remove(plan.spec.name());
        self.plans.remove(&id);
        Ok(Outcome::Done)
    }

    // ----- associations -----

    fn attach(&mut self, now: Timestamp, plan: PlanId, key: KeyId, extra: Extra) -> Response {
        self.plan(plan)?;
        self.key(key)?;
        let assoc = match self.associations.get(&(key, plan)) {
            Some(existing) => Association {
                extra_per_period: extra,
                ..existing.clone()
            },
            None => {
                let count = self.plans_of(key).count();
                if count >= MAX_PLANS_PER_KEY {
                    return Err(ValidationError::too_many(
                        "plans of key",
                        count + 1,
                        MAX_PLANS_PER_KEY,
                    )
                    .into());
                }
                Association {
                    plan,
                    key,
                    extra_per_period: extra,
                    attached_at: now,
                }
            }
        };
        self.associations.insert((key, plan), assoc.clone());
        self.idx.plan_keys.insert((plan, key));
        Ok(Outcome::Association(assoc))
    }

    fn detach(&mut self, _now: Timestamp, plan: PlanId, key: KeyId) -> Response {
        if !self.associations.contains_key(&(key, plan)) {
            return Err(ApplyError::not_found(
                Entity::Association,
                format!("{plan}/{key}"),
            ));
        }
        self.remove_association(key, plan);
        Ok(Outcome::Done)
    }

    /// Remove an association with its counter, daily buckets and leases. Leases are simply
    /// dropped: the counter they were reserved from goes too, and a gateway that settles one
    /// later is told it does not exist.
    fn remove_association(&mut self, key: KeyId, plan: PlanId) {
        self.associations.remove(&(key, plan));
        self.idx.plan_keys.remove(&(plan, key));
        self.counters.remove(&(key, plan));
        let lease_ids: Vec<LeaseId> = self.leases_of(key, plan).collect();
        for id in lease_ids {
            if let Some(lease) = self.leases.remove(&id) {
                self.idx.lease_expiry.remove(&(lease.expires_at, id));
                self.idx.counter_leases.remove(&(key, plan, id));
            }
        }
        let days: Vec<i64> = self
            .daily
            .range((key, plan, i64::MIN)..=(key, plan, i64::MAX))
            .map(|((_, _, d), _)| *d)
            .collect();
        for day in days {
            self.daily.remove(&(key, plan, day));
        }
    }

    // ----- counting -----

    /// The counter of (key, plan) as it stands at `now`: rolled into a new period if its own
    /// has ended (leases of the old one expired and counted), or moved to the plan's current
    /// window if the plan's period changed (usage kept). Does not mutate.
    fn counter_view(&self, plan: &UsagePlan, key: KeyId, now: Timestamp) -> Counter {
        let window = plan.window(now);
        match self.counters.get(&(key, plan.id)) {
            Some(c) if c.window.end <= now => Counter::new(window),
            Some(c) => Counter { window, ..*c },
            None => Counter::new(window),
        }
    }

    /// Make the stored counter equal to [`Self::counter_view`]; expire the old period's
    /// leases first if it ended.
    fn roll_counter(&mut self, plan: &UsagePlan, key: KeyId, now: Timestamp) -> Counter {
        let ended = self
            .counters
            .get(&(key, plan.id))
            .is_some_and(|c| c.window.end <= now);
        if ended {
            let ids: Vec<LeaseId> = self.leases_of(key, plan.id).collect();
            for id in ids {
                self.expire_lease(id, now);
            }
        }
        let view = self.counter_view(plan, key, now);
        self.counters.insert((key, plan.id), view);
        view
    }

    /// The limit of (key, plan) in the counter's period: the plan's, plus the key's extra
    /// per period, plus this period's adjustment. `None` if the plan has no quota.
    fn limit_of(&self, plan: &UsagePlan, key: KeyId, counter: &Counter) -> Option<u64> {
        let base = plan.base_limit(counter.window)?;
        let extra = self
            .associations
            .get(&(key, plan.id))
            .map_or(0, |a| a.extra_per_period.get());
        let total = i128::from(base) + i128::from(extra) + i128::from(counter.adjustment);
        Some(total.clamp(0, i128::from(u64::MAX)) as u64)
    }

    fn usage_of(&self, plan: &UsagePlan, key: KeyId, counter: &Counter) -> Usage {
        let limit = self.limit_of(plan, key, counter);
        Usage {
            plan: plan.id,
            key,
            limit,
            used: counter.used,
            reserved: counter.reserved,
            remaining: limit.map(|l| l.saturating_sub(counter.committed())),
            window: counter.window,
        }
    }

    /// Record `spent` units on `day` in the daily buckets of (key, plan).
    fn record_day(
        &mut self,
        key: KeyId,
        plan: PlanId,
        day: i64,
        spent: u64,
        remaining: Option<u64>,
    ) {
        if !self.daily.contains_key(&(key, plan, day)) {
            // First write of a day: forget days past the retention.
            let cutoff = day - DAILY_BUCKET_RETENTION_DAYS;
            let old: Vec<i64> = self
                .daily
                .range((key, plan, i64::MIN)..(key, plan, cutoff))
                .map(|((_, _, d), _)| *d)
                .collect();
            for d in old {
                self.daily.remove(&(key, plan, d));
            }
        }
        let bucket = self.daily.entry((key, plan, day)).or_default();
        bucket.used = bucket.used.saturating_add(spent);
        bucket.remaining = remaining;
    }

    /// Resolve a key reference and check the key may be used now.
    fn usable_key(&self, key: &KeyRef, now: Timestamp) -> Result<&ApiKey, Denial> {
        let found = match key {
            KeyRef::Id(id) => self.keys.get(id),
            KeyRef::Hash(hash) => self
                .idx
                .key_hashes
                .get(hash)
                .and_then(|id| self.keys.get(id))
                .filter(|k| k.accepts(hash, now)),
        };
        let key = found.ok_or(Denial::UnknownKey)?;
        key.usable_at(now).map_err(|r| match r {
            KeyRefusal::Disabled => Denial::Disabled,
            KeyRefusal::Expired => Denial::Expired,
        })?;
        Ok(key)
    }

    fn increment(
        &mut self,
        now: Timestamp,
        key_ref: &KeyRef,
        target: &Target,
        cost: Cost,
    ) -> Response {
        if let Target::Plan(plan) = target {
            self.plan(*plan)?;
        }
        let key = match self.usable_key(key_ref, now) {
            Ok(key) => key.id,
            Err(denial) => {
                let key = match key_ref {
                    KeyRef::Id(id) if self.keys.contains_key(id) => Some(*id),
                    _ => None,
                };
                return Ok(Outcome::Increment(IncrementResult {
                    key,
                    denial: Some(denial),
                    usage: Vec::new(),
                }));
            }
        };
        let plans: Vec<PlanId> = match target {
            Target::Plan(plan) => self
                .associations
                .contains_key(&(key, *plan))
                .then_some(*plan)
                .into_iter()
                .collect(),
            Target::Stage(stage) => self
                .plans_of(key)
                .filter(|p| {
                    self.plans
                        .get(p)
                        .is_some_and(|plan| plan.spec.covers(stage))
                })
                .collect(),
        };
        if plans.is_empty() {
            return Ok(Outcome::Increment(IncrementResult {
                key: Some(key),
                denial: Some(Denial::NotCovered),
                usage: Vec::new(),
            }));
        }
        // Check every plan before counting against any: all or nothing.
        let mut usage = Vec::with_capacity(plans.len());
        let mut denial = None;
        for id in &plans {
            let plan = &self.plans[id];
            let view = self.counter_view(plan, key, now);
            let u = self.usage_of(plan, key, &view);
            if denial.is_none() && u.remaining.is_some_and(|r| r < cost.get()) {
                denial = Some(Denial::QuotaExceeded {
                    plan: *id,
                    reset_at: u.reset_at(),
                });
            }
            usage.push(u);
        }
        if denial.is_some() {
            return Ok(Outcome::Increment(IncrementResult {
                key: Some(key),
                denial,
                usage,
            }));
        }
        usage.clear();
        for id in plans {
            let plan = self.plans[&id].clone();
            let mut counter = self.roll_counter(&plan, key, now);
            counter.used = counter.used.saturating_add(cost.get());
            self.counters.insert((key, id), counter);
            let u = self.usage_of(&plan, key, &counter);
            debug_assert!(u.limit.is_none_or(|l| counter.committed() <= l));
            self.record_day(key, id, now.day_number(), cost.get(), u.remaining);
            usage.push(u);
        }
        Ok(Outcome::Increment(IncrementResult {
            key: Some(key),
            denial: None,
            usage,
        }))
    }

    // ----- leases -----

    fn leases(&mut self, now: Timestamp, gateway: &GatewayId, ops: &[LeaseOp]) -> Response {
        if ops.len() > MAX_LEASE_OPS_PER_BATCH {
            return Err(
                ValidationError::too_many("ops", ops.len(), MAX_LEASE_OPS_PER_BATCH).into(),
            );
        }
        let results = ops
            .iter()
            .map(|op| match op {
                LeaseOp::Grant {
                    plan,
                    key,
                    want,
                    ttl_ms,
                } => self.lease_grant(now, gateway, *plan, *key, *want, *ttl_ms),
                LeaseOp::Settle {
                    lease,
                    spent,
                    renew,
                    ttl_ms,
                } => self.lease_settle(now, gateway, *lease, *spent, *renew, *ttl_ms),
            })
            .collect();
        Ok(Outcome::Leases(results))
    }

    fn check_lease_request(want: u64, ttl_ms: u64) -> Result<(), ApplyError> {
        if want == 0 || want > MAX_LEASE_GRANT {
            return Err(ValidationError::out_of_range("want", want, 1, MAX_LEASE_GRANT).into());
        }
        if !(MIN_LEASE_TTL_MS..=MAX_LEASE_TTL_MS).contains(&ttl_ms) {
            return Err(ValidationError::out_of_range(
                "ttl_ms",
                ttl_ms,
                MIN_LEASE_TTL_MS,
                MAX_LEASE_TTL_MS,
            )
            .into());
        }
        Ok(())
    }

    fn lease_grant(
        &mut self,
        now: Timestamp,
        gateway: &GatewayId,
        plan_id: PlanId,
        key: KeyId,
        want: u64,
        ttl_ms: u64,
    ) -> LeaseResult {
        if let Err(error) = Self::check_lease_request(want, ttl_ms)
            .and_then(|()| self.plan(plan_id).map(drop))
            .and_then(|()| self.key(key).map(drop))
        {
            return LeaseResult::Failed { error };
        }
        if let Err(denial) = self.usable_key(&KeyRef::Id(key), now) {
            return LeaseResult::Denied { denial };
        }
        if !self.associations.contains_key(&(key, plan_id)) {
            return LeaseResult::Denied {
                denial: Denial::NotCovered,
            };
        }
        if self.leases.len() >= MAX_OPEN_LEASES {
            return LeaseResult::Failed {
                error: ApplyError::LimitReached {
                    what: "open leases".into(),
                    max: MAX_OPEN_LEASES,
                },
            };
        }
        let plan = self.plans[&plan_id].clone();
        let view = self.counter_view(&plan, key, now);
        let usage = self.usage_of(&plan, key, &view);
        let amount = match usage.remaining {
            None => want,
            Some(0) => {
                return LeaseResult::Denied {
                    denial: Denial::QuotaExceeded {
                        plan: plan_id,
                        reset_at: usage.reset_at(),
                    },
                };
            }
            Some(remaining) => {
                // A fair share of what remains: as many shares as open leases plus this one.
                // When little remains this reaches 1, so the tail is spent exactly.
                let rolling = self
                    .counters
                    .get(&(key, plan_id))
                    .is_some_and(|c| c.window.end <= now);
                let others = if rolling {
                    0 // the old period's leases are about to expire
                } else {
                    self.leases_of(key, plan_id).count() as u64
                };
                want.min(remaining.div_ceil(others + 1))
            }
        };
        let mut counter = self.roll_counter(&plan, key, now);
        counter.reserved += amount;
        self.counters.insert((key, plan_id), counter);
        self.next_lease += 1;
        let lease = Lease {
            id: LeaseId(self.next_lease),
            gateway: gateway.clone(),
            plan: plan_id,
            key,
            granted: amount,
            window: counter.window,
            expires_at: now.plus_millis(ttl_ms).min(counter.window.end),
        };
        self.idx.lease_expiry.insert((lease.expires_at, lease.id));
        self.idx.counter_leases.insert((key, plan_id, lease.id));
        self.leases.insert(lease.id, lease.clone());
        let usage = self.usage_of(&plan, key, &counter);
        debug_assert!(usage.limit.is_none_or(|l| counter.committed() <= l));
        LeaseResult::Granted { lease, usage }
    }

    fn lease_settle(
        &mut self,
        now: Timestamp,
        gateway: &GatewayId,
        id: LeaseId,
        spent: u64,
        renew: Option<u64>,
        ttl_ms: u64,
    ) -> LeaseResult {
        let Some(lease) = self.leases.get(&id) else {
            return LeaseResult::Failed {
                error: ApplyError::not_found(Entity::Lease, id),
            };
        };
        if lease.gateway != *gateway {
            return LeaseResult::Failed {
                error: ApplyError::conflict(
                    Entity::Lease,
                    format!("{id} belongs to another gateway"),
                ),
            };
        }
        if spent > lease.granted {
            return LeaseResult::Failed {
                error: ValidationError::out_of_range("spent", spent, 0, lease.granted).into(),
            };
        }
        if let Some(Err(error)) = renew.map(|want| Self::check_lease_request(want, ttl_ms)) {
            return LeaseResult::Failed { error };
        }
        let (key, plan_id) = (lease.key, lease.plan);
        if lease.expires_at <= now {
            // Too late to give anything back: an expired lease counts as spent in full.
            self.expire_lease(id, now);
        } else {
            self.close_lease(id, spent, now.day_number());
        }
        if let Some(want) = renew {
            return self.lease_grant(now, gateway, plan_id, key, want, ttl_ms);
        }
        let plan = self.plans[&plan_id].clone();
        let counter = self.counter_view(&plan, key, now);
        LeaseResult::Settled {
            usage: self.usage_of(&plan, key, &counter),
            denial: None,
        }
    }

    /// Remove a lease, counting `spent` of it as used (on `day`) and freeing the rest.
    fn close_lease(&mut self, id: LeaseId, spent: u64, day: i64) {
        let Some(lease) = self.leases.remove(&id) else {
            return;
        };
        self.idx.lease_expiry.remove(&(lease.expires_at, id));
        self.idx.counter_leases.remove(&(lease.key, lease.plan, id));
        let Some(counter) = self.counters.get_mut(&(lease.key, lease.plan)) else {
            unreachable!("invariant: an open lease always has its counter");
        };
        assert!(
            counter.reserved >= lease.granted,
            "invariant: reserved covers every open lease"
        );
        counter.reserved -= lease.granted;
        counter.used = counter.used.saturating_add(spent);
        let counter = *counter;
        let remaining = self
            .plans
            .get(&lease.plan)
            .map(|plan| self.usage_of(plan, lease.key, &counter))
            .and_then(|u| u.remaining);
        self.record_day(lease.key, lease.plan, day, spent, remaining);
    }

    /// Expire a lease: all of it counts as used, on the last day it was valid.
    fn expire_lease(&mut self, id: LeaseId, now: Timestamp) {
        if let Some(lease) = self.leases.get(&id) {
            let last = Timestamp(lease.expires_at.0.saturating_sub(1)).min(now);
            let granted = lease.granted;
            self.close_lease(id, granted, last.day_number());
        }
    }

    fn expire_due_leases(&mut self, now: Timestamp) -> usize {
        let due: Vec<LeaseId> = self
            .idx
            .lease_expiry
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(MAX_EXPIRED_PER_COMMAND)
            .map(|(_, id)| *id)
            .collect();
        for id in &due {
            self.expire_lease(*id, now);
        }
        due.len()
    }

    // ----- usage updates -----

    fn quota_counter(
        &self,
        plan: PlanId,
        key: KeyId,
        now: Timestamp,
    ) -> Result<(UsagePlan, Counter), ApplyError> {
        let plan = self.plan(plan)?.clone();
        self.key(key)?;
        if !self.associations.contains_key(&(key, plan.id)) {
            return Err(ApplyError::not_found(
                Entity::Association,
                format!("{}/{key}", plan.id),
            ));
        }
        if plan.spec.quota().is_none() {
            return Err(ValidationError::invalid(
                "plan",
                format!("{} has no quota to change", plan.id),
            )
            .into());
        }
        let view = self.counter_view(&plan, key, now);
        Ok((plan, view))
    }

    fn set_adjustment(
        &mut self,
        plan: &UsagePlan,
        key: KeyId,
        now: Timestamp,
        adjustment: i64,
    ) -> Response {
        let mut counter = self.roll_counter(plan, key, now);
        counter.adjustment = adjustment;
        self.counters.insert((key, plan.id), counter);
        let usage = self.usage_of(plan, key, &counter);
        self.record_day(key, plan.id, now.day_number(), 0, usage.remaining);
        Ok(Outcome::Usage(usage))
    }

    fn usage_grant(&mut self, now: Timestamp, plan: PlanId, key: KeyId, extra: Extra) -> Response {
        let (plan, view) = self.quota_counter(plan, key, now)?;
        let adjustment = i128::from(view.adjustment) + i128::from(extra.get());
        if adjustment > i128::from(MAX_ADJUSTMENT) {
            return Err(ValidationError::out_of_range(
                "extra",
                extra.get(),
                0,
                i128::from(MAX_ADJUSTMENT) - i128::from(view.adjustment),
            )
            .into());
        }
        self.set_adjustment(&plan, key, now, adjustment as i64)
    }

    fn usage_set_remaining(
        &mut self,
        now: Timestamp,
        plan: PlanId,
        key: KeyId,
        remaining: u64,
    ) -> Response {
        if remaining > MAX_QUOTA_LIMIT {
            return Err(
                ValidationError::out_of_range("remaining", remaining, 0, MAX_QUOTA_LIMIT).into(),
            );
        }
        let (plan, view) = self.quota_counter(plan, key, now)?;
        let without_adjustment = self
            .limit_of(
                &plan,
                key,
                &Counter {
                    adjustment: 0,
                    ..view
                },
            )
            .unwrap_or(0);
        // New limit = committed + remaining, reached through the adjustment.
        let wanted = i128::from(view.committed()) + i128::from(remaining);
        let adjustment = wanted - i128::from(without_adjustment);
        self.set_adjustment(&plan, key, now, adjustment as i64)
    }

    // ----- usage admitted at the safe rate -----

    fn report_offline(&mut self, now: Timestamp, items: &[OfflineUsage]) -> Response {
        if items.len() > MAX_OFFLINE_ITEMS_PER_REPORT {
            return Err(ValidationError::too_many(
                "usage",
                items.len(),
                MAX_OFFLINE_ITEMS_PER_REPORT,
            )
            .into());
        }
        let results = items
            .iter()
            .map(|item| self.add_offline_usage(now, item))
            .collect();
        Ok(Outcome::OfflineUsage(results))
    }

    /// Add `item.used` to (plan, key)'s usage in the current period (on today's daily
    /// bucket), with no quota check: the gateway already admitted it. This is the only path
    /// by which `used` may pass the limit. Checks everything before changing anything.
    fn add_offline_usage(&mut self, now: Timestamp, item: &OfflineUsage) -> OfflineResult {
        if item.used == 0 || item.used > MAX_OFFLINE_USAGE_PER_ITEM {
            return Err(ValidationError::out_of_range(
                "used",
                item.used,
                1,
                MAX_OFFLINE_USAGE_PER_ITEM,
            )
            .into());
        }
        let plan = self.plan(item.plan)?.clone();
        let key = self.key(item.key)?.id;
        if !self.associations.contains_key(&(key, plan.id)) {
            return Err(ApplyError::not_found(
                Entity::Association,
                format!("{}/{key}", plan.id),
            ));
        }
        // Whatever the plan's own `safe_rate`: a gateway may also admit at its configured
        // default, and what was admitted is recorded, so that counts stay exact.
        let view = self.counter_view(&plan, key, now);
        let room = MAX_USED_PER_PERIOD.saturating_sub(view.used);
        if item.used > room {
            return Err(ValidationError::out_of_range("used", item.used, 1, room).into());
        }
        let mut counter = self.roll_counter(&plan, key, now);
        counter.used += item.used;
        self.counters.insert((key, plan.id), counter);
        let usage = self.usage_of(&plan, key, &counter);
        self.record_day(key, plan.id, now.day_number(), item.used, usage.remaining);
        Ok(usage)
    }

    // ----- lookups (also the read API) -----

    fn key(&self, id: KeyId) -> Result<&ApiKey, ApplyError> {
        self.keys
            .get(&id)
            .ok_or_else(|| ApplyError::not_found(Entity::Key, id))
    }

    fn plan(&self, id: PlanId) -> Result<&UsagePlan, ApplyError> {
        self.plans
            .get(&id)
            .ok_or_else(|| ApplyError::not_found(Entity::Plan, id))
    }

    fn plans_of(&self, key: KeyId) -> impl Iterator<Item = PlanId> + '_ {
        self.associations
            .range((key, PlanId(0))..=(key, PlanId(u64::MAX)))
            .map(|((_, p), _)| *p)
    }

    fn keys_of(&self, plan: PlanId) -> impl Iterator<Item = KeyId> + '_ {
        self.idx
            .plan_keys
            .range((plan, KeyId(0))..=(plan, KeyId(u64::MAX)))
            .map(|(_, k)| *k)
    }

    fn leases_of(&self, key: KeyId, plan: PlanId) -> impl Iterator<Item = LeaseId> + '_ {
        self.idx
            .counter_leases
            .range((key, plan, LeaseId(0))..=(key, plan, LeaseId(u64::MAX)))
            .map(|(_, _, l)| *l)
    }

    /// The latest leader timestamp applied.
    pub fn clock(&self) -> Timestamp {
        self.clock
    }

    pub fn get_key(&self, id: KeyId) -> Option<&ApiKey> {
        self.keys.get(&id)
    }

    pub fn key_by_name(&self, name: &str) -> Option<&ApiKey> {
        let name = Name::new(name).ok()?;
        self.idx
            .key_names
            .get(&name)
            .and_then(|id| self.keys.get(id))
    }

    /// The key a presented secret's hash opens at `at`, if any (usable or not).
    pub fn key_by_hash(&self, hash: &SecretHash, at: Timestamp) -> Option<&ApiKey> {
        self.idx
            .key_hashes
            .get(hash)
            .and_then(|id| self.keys.get(id))
            .filter(|k| k.accepts(hash, at))
    }

    /// Keys in id order, starting after `after`.
    pub fn keys(&self, after: Option<KeyId>) -> impl Iterator<Item = &ApiKey> + '_ {
        let start = after.map_or(0, |k| k.0.saturating_add(1));
        self.keys.range(KeyId(start)..).map(|(_, k)| k)
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    pub fn get_plan(&self, id: PlanId) -> Option<&UsagePlan> {
        self.plans.get(&id)
    }

    pub fn plan_by_name(&self, name: &str) -> Option<&UsagePlan> {
        let name = Name::new(name).ok()?;
        self.idx
            .plan_names
            .get(&name)
            .and_then(|id| self.plans.get(id))
    }

    /// Plans in id order, starting after `after`.
    pub fn plans(&self, after: Option<PlanId>) -> impl Iterator<Item = &UsagePlan> + '_ {
        let start = after.map_or(0, |p| p.0.saturating_add(1));
        self.plans.range(PlanId(start)..).map(|(_, p)| p)
    }

    pub fn association(&self, plan: PlanId, key: KeyId) -> Option<&Association> {
        self.associations.get(&(key, plan))
    }

    /// The associations of a plan, in key order.
    pub fn plan_associations(&self, plan: PlanId) -> impl Iterator<Item = &Association> + '_ {
        self.keys_of(plan)
            .filter_map(move |k| self.associations.get(&(k, plan)))
    }

    /// The associations of a key, in plan order.
    pub fn key_associations(&self, key: KeyId) -> impl Iterator<Item = &Association> + '_ {
        self.associations
            .range((key, PlanId(0))..=(key, PlanId(u64::MAX)))
            .map(|(_, a)| a)
    }

    /// Usage of (plan, key) as it stands at `at`.
    pub fn usage(&self, plan: PlanId, key: KeyId, at: Timestamp) -> Option<Usage> {
        let plan = self.plans.get(&plan)?;
        self.associations.get(&(key, plan.id))?;
        let counter = self.counter_view(plan, key, at);
        Some(self.usage_of(plan, key, &counter))
    }

    /// Per-day usage of (plan, key) from `from` to `to` inclusive, with the quota remaining
    /// at the end of each day (carried forward over days without activity).
    pub fn usage_report(
        &self,
        plan: PlanId,
        key: KeyId,
        from: Date,
        to: Date,
    ) -> Option<Vec<DayReport>> {
        let plan = self.plans.get(&plan)?;
        let assoc = self.associations.get(&(key, plan.id))?;
        let mut out = Vec::new();
        let mut carried: Option<(Window, Option<u64>)> = None;
        for day in from.day_number()..=to.day_number() {
            let start = Timestamp::from_day_number(day);
            let window = plan.window(start);
            let bucket = self.daily.get(&(key, plan.id, day));
            let remaining = match (bucket, carried) {
                (Some(b), _) => b.remaining,
                (None, Some((w, r))) if w == window => r,
                (None, _) => plan
                    .base_limit(window)
                    .map(|l| l.saturating_add(assoc.extra_per_period.get())),
            };
            carried = Some((window, remaining));
            out.push(DayReport {
                date: Date::from_day_number(day),
                used: bucket.map_or(0, |b| b.used),
                remaining,
            });
        }
        Some(out)
    }

    pub fn lease(&self, id: LeaseId) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub fn open_leases(&self) -> usize {
        self.leases.len()
    }

    /// The earliest expiry among open leases, so the leader knows when to propose
    /// [`Command::ExpireLeases`].
    pub fn next_lease_expiry(&self) -> Option<Timestamp> {
        self.idx.lease_expiry.first().map(|(at, _)| *at)
    }

    /// Every counter, for invariant checks and metrics.
    pub fn counters(&self) -> impl Iterator<Item = (KeyId, PlanId, &Counter)> + '_ {
        self.counters.iter().map(|((k, p), c)| (*k, *p, c))
    }

    /// The limit in force for a stored counter.
    pub fn counter_limit(&self, key: KeyId, plan: PlanId) -> Option<u64> {
        let counter = self.counters.get(&(key, plan))?;
        self.limit_of(self.plans.get(&plan)?, key, counter)
    }

    /// Open leases on (key, plan).
    pub fn leases_on(&self, key: KeyId, plan: PlanId) -> impl Iterator<Item = &Lease> + '_ {
        self.leases_of(key, plan)
            .filter_map(|id| self.leases.get(&id))
    }

    /// Rebuild the derived indexes from the primary maps (after a restore).
    pub(crate) fn rebuild_indexes(&mut self) {
        let mut idx = Indexes::default();
        for key in self.keys.values() {
            idx.key_names.insert(key.spec.name.clone(), key.id);
            idx.key_hashes.insert(key.secret.hash, key.id);
            if let Some(prev) = &key.previous {
                idx.key_hashes.insert(prev.hash, key.id);
            }
        }
        for plan in self.plans.values() {
            idx.plan_names.insert(plan.spec.name().clone(), plan.id);
        }
        for (key, plan) in self.associations.keys() {
            idx.plan_keys.insert((*plan, *key));
        }
        for lease in self.leases.values() {
            idx.lease_expiry.insert((lease.expires_at, lease.id));
            idx.counter_leases.insert((lease.key, lease.plan, lease.id));
        }
        self.idx = idx;
    }

    /// Check the structural invariants; `Err` names the first one broken. Used by tests and
    /// after restoring a snapshot.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut rebuilt = self.clone();
        rebuilt.rebuild_indexes();
        if rebuilt.idx != self.idx {
            return Err("derived indexes differ from the primary maps".into());
        }
        for ((key, plan), counter) in &self.counters {
            if !self.associations.contains_key(&(*key, *plan)) {
                return Err(format!("counter {plan}/{key} has no association"));
            }
            if counter.used > MAX_USED_PER_PERIOD {
                return Err(format!(
                    "counter {plan}/{key}: used {} is past {MAX_USED_PER_PERIOD}",
                    counter.used
                ));
            }
            let sum: u64 = self.leases_on(*key, *plan).map(|l| l.granted).sum();
            if sum != counter.reserved {
                return Err(format!(
                    "counter {plan}/{key}: reserved {} but open leases hold {sum}",
                    counter.reserved
                ));
            }
        }
        for lease in self.leases.values() {
            if !self.counters.contains_key(&(lease.key, lease.plan)) {
                return Err(format!("lease {} has no counter", lease.id));
            }
            if lease.expires_at > lease.window.end {
                return Err(format!("lease {} outlives its period", lease.id));
            }
        }
        for (key, plan, _) in self.daily.keys() {
            if !self.associations.contains_key(&(*key, *plan)) {
                return Err(format!("daily bucket {plan}/{key} has no association"));
            }
        }
        if self.dedup.order.len() != self.dedup.responses.len()
            || self.dedup.order.len() > DEDUP_TABLE_CAPACITY
        {
            return Err("deduplication table out of shape".into());
        }
        Ok(())
    }
}

/// The largest one-off adjustment of a period's limit.
pub const MAX_ADJUSTMENT: i64 = 1 << 52;
