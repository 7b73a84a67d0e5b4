//! The records the cluster stores: keys, plans, associations, counters, daily buckets and
//! leases.

use crate::error::ValidationError;
use crate::limits::{MAX_EXTRA, MAX_RATE_PER_SEC, MAX_ROUTES_PER_PLAN, MAX_STAGES_PER_PLAN};
use crate::period::{QuotaSpec, Window};
use crate::secret::SecretHash;
use crate::time::Timestamp;
use crate::types::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What a key is, apart from its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySpec {
    pub name: Name,
    pub description: Description,
    pub owner: Option<Owner>,
    pub enabled: bool,
    pub expires_at: Option<Timestamp>,
    pub tags: Tags,
}

impl KeySpec {
    /// An enabled key with the given name and nothing else set.
    pub fn named(name: Name) -> KeySpec {
        KeySpec {
            name,
            description: Description::default(),
            owner: None,
            enabled: true,
            expires_at: None,
            tags: Tags::default(),
        }
    }
}

/// What the state learns of a secret: its hash and its public prefix, never the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretDigest {
    pub hash: SecretHash,
    pub prefix: String,
}

impl SecretDigest {
    pub fn of(secret: &crate::Secret) -> SecretDigest {
        SecretDigest {
            hash: secret.hash(),
            prefix: secret.public_prefix(),
        }
    }
}

/// A previous secret that stays valid until `valid_until` after a rotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub hash: SecretHash,
    pub valid_until: Timestamp,
}

/// A stored API key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: KeyId,
    pub spec: KeySpec,
    pub secret: SecretDigest,
    pub previous: Option<PreviousSecret>,
    /// Whether the secret was supplied by the caller rather than generated.
    pub imported: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Why a key cannot be used right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyRefusal {
    Disabled,
    Expired,
}

impl ApiKey {
    /// Whether this key may be used at `at`.
    pub fn usable_at(&self, at: Timestamp) -> Result<(), KeyRefusal> {
        if !self.spec.enabled {
            return Err(KeyRefusal::Disabled);
        }
        if self.spec.expires_at.is_some_and(|exp| at >= exp) {
            return Err(KeyRefusal::Expired);
        }
        Ok(())
    }

    /// Whether `hash` opens this key at `at` (the current secret, or the previous one during
    /// its grace period).
    pub fn accepts(&self, hash: &SecretHash, at: Timestamp) -> bool {
        self.secret.hash == *hash
            || self
                .previous
                .as_ref()
                .is_some_and(|p| p.hash == *hash && at < p.valid_until)
    }
}

/// A partial update of a key; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPatch {
    pub name: Option<Name>,
    pub description: Option<Description>,
    pub owner: Option<Option<Owner>>,
    pub enabled: Option<bool>,
    pub expires_at: Option<Option<Timestamp>>,
    pub tags: Option<Tags>,
}

/// What a usage plan is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawPlanSpec", into = "RawPlanSpec")]
pub struct PlanSpec {
    name: Name,
    description: Description,
    throttle: Option<Throttle>,
    quota: Option<QuotaSpec>,
    stages: BTreeSet<ApiStage>,
    route_throttles: BTreeMap<Route, Throttle>,
    safe_rate: f64,
}

// Validation rejects NaN, so equality is total.
impl Eq for PlanSpec {}

/// The unvalidated shape of a [`PlanSpec`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RawPlanSpec {
    pub name: Name,
    pub description: Description,
    pub throttle: Option<Throttle>,
    pub quota: Option<QuotaSpec>,
    pub stages: BTreeSet<ApiStage>,
    pub route_throttles: BTreeMap<Route, Throttle>,
    /// Requests per second (per key, per gateway) a gateway may admit while it cannot reach
    /// the cluster and its leases have run out; 0 (the default) denies. Anything admitted
    /// this way was not reserved first, so it is the one deliberate exception to the quota
    /// invariant, chosen by the operator per plan.
    pub safe_rate: f64,
}

impl RawPlanSpec {
    /// A plan with a name and nothing else.
    pub fn named(name: Name) -> RawPlanSpec {
        RawPlanSpec {
            name,
            description: Description::default(),
            throttle: None,
            quota: None,
            stages: BTreeSet::new(),
            route_throttles: BTreeMap::new(),
            safe_rate: 0.0,
        }
    }
}

impl TryFrom<RawPlanSpec> for PlanSpec {
    type Error = ValidationError;

    fn try_from(raw: RawPlanSpec) -> Result<Self, ValidationError> {
        if raw.stages.len() > MAX_STAGES_PER_PLAN {
            return Err(ValidationError::too_many(
                "stages",
                raw.stages.len(),
                MAX_STAGES_PER_PLAN,
            ));
        }
        if raw.route_throttles.len() > MAX_ROUTES_PER_PLAN {
            return Err(ValidationError::too_many(
                "route_throttles",
                raw.route_throttles.len(),
                MAX_ROUTES_PER_PLAN,
            ));
        }
        if !(raw.safe_rate.is_finite() && (0.0..=MAX_RATE_PER_SEC).contains(&raw.safe_rate)) {
            return Err(ValidationError::out_of_range(
                "safe_rate",
                raw.safe_rate,
                0,
                MAX_RATE_PER_SEC,
            ));
        }
        Ok(PlanSpec {
            safe_rate: raw.safe_rate,
            name: raw.name,
            description: raw.description,
            throttle: raw.throttle,
            quota: raw.quota,
            stages: raw.stages,
            route_throttles: raw.route_throttles,
        })
    }
}

impl From<PlanSpec> for RawPlanSpec {
    fn from(p: PlanSpec) -> Self {
        RawPlanSpec {
            name: p.name,
            description: p.description,
            throttle: p.throttle,
            quota: p.quota,
            stages: p.stages,
            route_throttles: p.route_throttles,
            safe_rate: p.safe_rate,
        }
    }
}

impl PlanSpec {
    pub fn name(&self) -> &Name {
        &self.name
    }
    pub fn description(&self) -> &Description {
        &self.description
    }
    pub fn throttle(&self) -> Option<Throttle> {
        self.throttle
    }
    pub fn quota(&self) -> Option<QuotaSpec> {
        self.quota
    }
    pub fn stages(&self) -> &BTreeSet<ApiStage> {
        &self.stages
    }
    pub fn route_throttles(&self) -> &BTreeMap<Route, Throttle> {
        &self.route_throttles
    }
    /// Requests per second a gateway may admit per key while the cluster is unreachable
    /// and its leases have run out; 0 denies.
    pub fn safe_rate(&self) -> f64 {
        self.safe_rate
    }
    pub fn covers(&self, stage: &ApiStage) -> bool {
        self.stages.contains(stage)
    }
}

/// A stored usage plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsagePlan {
    pub id: PlanId,
    pub spec: PlanSpec,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl UsagePlan {
    /// The counting window that contains `at`: the quota period, or the UTC day for a plan
    /// without a quota (its usage is still counted, for reports).
    pub fn window(&self, at: Timestamp) -> Window {
        match self.spec.quota() {
            Some(q) => q.window(at),
            None => crate::period::day_window(at),
        }
    }

    /// The plan's own limit for `window` (before per-key extras); `None` if unlimited.
    pub fn base_limit(&self, window: Window) -> Option<u64> {
        self.spec
            .quota()
            .map(|q| q.limit_for(window, self.created_at))
    }
}

/// A per-key extra quota, granted on top of the plan in every period (a free tier).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Extra(u64);

impl Extra {
    pub fn new(value: u64) -> Result<Extra, ValidationError> {
        if value > MAX_EXTRA {
            return Err(ValidationError::out_of_range("extra", value, 0, MAX_EXTRA));
        }
        Ok(Extra(value))
    }
    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for Extra {
    type Error = ValidationError;
    fn try_from(v: u64) -> Result<Self, ValidationError> {
        Extra::new(v)
    }
}

impl From<Extra> for u64 {
    fn from(e: Extra) -> u64 {
        e.0
    }
}

/// A key's membership of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Association {
    pub plan: PlanId,
    pub key: KeyId,
    /// Extra quota for this key in every period.
    pub extra_per_period: Extra,
    pub attached_at: Timestamp,
}

/// Usage of one (plan, key) in one period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    pub window: Window,
    /// Spent: admitted by increments, settled from leases, or from expired leases.
    pub used: u64,
    /// Held by open leases.
    pub reserved: u64,
    /// One-off change to this period's limit: a grant (positive) or what a
    /// "set remaining" needed (either sign).
    pub adjustment: i64,
}

impl Counter {
    pub fn new(window: Window) -> Counter {
        Counter {
            window,
            used: 0,
            reserved: 0,
            adjustment: 0,
        }
    }

    /// Admitted so far: spent plus reserved.
    pub fn committed(&self) -> u64 {
        self.used.saturating_add(self.reserved)
    }
}

/// The limit, usage and reset of one (plan, key) now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub plan: PlanId,
    pub key: KeyId,
    /// `None` for a plan without a quota.
    pub limit: Option<u64>,
    pub used: u64,
    pub reserved: u64,
    /// `None` for a plan without a quota.
    pub remaining: Option<u64>,
    pub window: Window,
}

impl Usage {
    pub fn reset_at(&self) -> Timestamp {
        self.window.end
    }
}

/// One day of one (plan, key), for usage reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayUsage {
    pub used: u64,
    /// Remaining quota of the period at the end of the last change that day.
    pub remaining: Option<u64>,
}

/// An allowance held by a gateway: `granted` units reserved from a counter until
/// `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: LeaseId,
    pub gateway: GatewayId,
    pub plan: PlanId,
    pub key: KeyId,
    pub granted: u64,
    pub window: Window,
    pub expires_at: Timestamp,
}
