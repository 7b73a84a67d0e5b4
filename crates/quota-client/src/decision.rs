//! What `check` answers: [`Decision::Allow`] with a [`Permit`], or [`Decision::Deny`].

use std::sync::Arc;
use std::time::Duration;

use quota_core::PlanId;
use smallvec::SmallVec;

use crate::allowance::Bucket;

/// What a gateway needs for rate-limit headers: the tightest plan's limit, what remains
/// of it (approximate across gateways: the cluster's unreserved remainder at this
/// gateway's last grant plus this gateway's unspent tokens), and when it resets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateInfo {
    /// Cost units per period; `None` when no plan has a quota.
    pub limit: Option<u64>,
    /// Cost units left this period (approximate); `None` when no plan has a quota.
    pub remaining: Option<u64>,
    /// When the period resets, ms since the Unix epoch; `None` when unknown.
    pub reset_at_ms: Option<u64>,
}

/// Why a request was denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// No key was presented.
    MissingKey,
    /// No key has this secret (or it was rotated out, or the key was deleted).
    InvalidKey,
    /// The key is disabled.
    Disabled,
    /// The key has expired.
    Expired,
    /// The key is in no plan that covers this API stage.
    NotCovered,
    /// A throttle has no tokens; retry after this long.
    Throttled { plan: PlanId, retry_after: Duration },
    /// A plan's quota is spent until `reset_at_ms` (ms since the Unix epoch; 0 = unknown).
    QuotaExceeded { plan: PlanId, reset_at_ms: u64 },
    /// The cluster could not be reached and no allowance (lease or safe rate) was left.
    Unavailable,
    /// The cost is 0 or more than 1,000,000.
    InvalidCost,
}

impl DenyReason {
    /// The reason without its details, for metrics.
    pub fn kind(&self) -> DenyKind {
        match self {
            DenyReason::MissingKey => DenyKind::MissingKey,
            DenyReason::InvalidKey => DenyKind::InvalidKey,
            DenyReason::Disabled => DenyKind::Disabled,
            DenyReason::Expired => DenyKind::Expired,
            DenyReason::NotCovered => DenyKind::NotCovered,
            DenyReason::Throttled { .. } => DenyKind::Throttled,
            DenyReason::QuotaExceeded { .. } => DenyKind::QuotaExceeded,
            DenyReason::Unavailable => DenyKind::Unavailable,
            DenyReason::InvalidCost => DenyKind::InvalidCost,
        }
    }
}

/// [`DenyReason`] without details.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DenyKind {
    MissingKey = 0,
    InvalidKey = 1,
    Disabled = 2,
    Expired = 3,
    NotCovered = 4,
    Throttled = 5,
    QuotaExceeded = 6,
    Unavailable = 7,
    InvalidCost = 8,
}

impl DenyKind {
    pub(crate) const COUNT: usize = 9;
    /// Every kind, in order.
    pub const ALL: [DenyKind; DenyKind::COUNT] = [
        DenyKind::MissingKey,
        DenyKind::InvalidKey,
        DenyKind::Disabled,
        DenyKind::Expired,
        DenyKind::NotCovered,
        DenyKind::Throttled,
        DenyKind::QuotaExceeded,
        DenyKind::Unavailable,
        DenyKind::InvalidCost,
    ];

    /// A stable name for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyKind::MissingKey => "missing_key",
            DenyKind::InvalidKey => "invalid_key",
            DenyKind::Disabled => "disabled",
            DenyKind::Expired => "expired",
            DenyKind::NotCovered => "not_covered",
            DenyKind::Throttled => "throttled",
            DenyKind::QuotaExceeded => "quota_exceeded",
            DenyKind::Unavailable => "unavailable",
            DenyKind::InvalidCost => "invalid_cost",
        }
    }
}

/// A denial with its headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deny {
    pub reason: DenyReason,
    pub info: RateInfo,
}

/// The answer of `check`.
#[derive(Debug)]
pub enum Decision {
    Allow(Permit),
    Deny(Deny),
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// Tokens a permit took from one lease slot (or from the safe rate: `SAFE_RATE_SLOT`), to
/// give back on refund. Throttle tokens are not here: a refund does not un-throttle, and a
/// request refused by another plan gives them back before the permit exists.
#[derive(Debug)]
pub(crate) struct Charge {
    pub(crate) bucket: Arc<Bucket>,
    pub(crate) slot: u8,
    pub(crate) generation: u16,
}

/// Plans covering one request: inline up to 4, which covers every realistic set-up
/// without allocating.
pub(crate) type Charges = SmallVec<[Charge; 4]>;

/// An admitted request. Commit it (or drop it) when the upstream answered and the request
/// should count; refund it when it should not (the upstream failed): the cost goes back
/// to the allowance it came from, so it never counts against the quota.
#[derive(Debug)]
#[must_use = "a permit commits when dropped; call refund() for requests that should not count"]
pub struct Permit {
    info: RateInfo,
    cost: u64,
    charges: Charges,
}

impl Permit {
    pub(crate) fn new(info: RateInfo, cost: u64, charges: Charges) -> Permit {
        Permit {
            info,
            cost,
            charges,
        }
    }

    /// Headers for the response.
    pub fn info(&self) -> RateInfo {
        self.info
    }

    /// Counts the request (the same as dropping the permit).
    pub fn commit(mut self) {
        self.charges.clear();
    }

    /// Does not count the request: its cost goes back to every allowance it was taken
    /// from. A refund that arrives after its lease was settled is subtracted from the next
    /// settlement of the same (plan, key).
    pub fn refund(mut self) {
        let cost = self.cost;
        for c in self.charges.drain(..) {
            c.bucket.refund(c.slot, c.generation, cost);
            c.bucket
                .refunded
                .fetch_add(cost, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Undo every lease charge of a request that another plan (or a throttle) refused.
pub(crate) fn undo(charges: &mut Charges, cost: u64) {
    for c in charges.drain(..) {
        c.bucket.give_back(c.slot, c.generation, cost);
    }
}
