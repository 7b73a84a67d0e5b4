//! What the Raft log carries ([`Entry`]) and what applying it answers ([`Response`]).

use crate::error::ApplyError;
use crate::model::*;
use crate::secret::SecretHash;
use crate::time::Timestamp;
use crate::types::*;
use serde::{Deserialize, Serialize};

/// One log entry: a command, the client's request id (for deduplication of retries), and
/// the leader's clock when it proposed the command. The state machine never reads a clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub request_id: Option<RequestId>,
    pub at: Timestamp,
    pub command: Command,
}

/// How a command names a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyRef {
    Id(KeyId),
    /// The SHA-256 of a presented secret.
    Hash(SecretHash),
}

/// What an increment counts against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// One plan, named directly.
    Plan(PlanId),
    /// Every plan of the key that covers this API stage.
    Stage(ApiStage),
}

/// One operation in a batched lease command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseOp {
    /// Reserve up to `want` units of (plan, key) for `ttl_ms`.
    Grant {
        plan: PlanId,
        key: KeyId,
        want: u64,
        ttl_ms: u64,
    },
    /// Report that `spent` units of a lease were used, return the rest, and, when `renew`
    /// is set, grant a new lease on the same (plan, key) for up to that many units.
    Settle {
        lease: LeaseId,
        spent: u64,
        renew: Option<u64>,
        ttl_ms: u64,
    },
}

/// Usage a gateway admitted for (plan, key) at the plan's safe rate while it could not reach
/// the cluster: `used` cost units, not reserved by any lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineUsage {
    pub plan: PlanId,
    pub key: KeyId,
    /// Cost units; 1 to [`crate::limits::MAX_OFFLINE_USAGE_PER_ITEM`].
    pub used: u64,
}

/// The result of one [`OfflineUsage`] item: the usage of (plan, key) after it was added, or
/// why it was refused (a refused item changes nothing).
pub type OfflineResult = Result<Usage, ApplyError>;

/// One client command inside a [`Command::Batch`], with its own request id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchItem {
    pub request_id: Option<RequestId>,
    pub command: Command,
}

/// Everything that changes the state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Does nothing (the leader's first entry, and a probe).
    Noop,
    /// Several client commands in one log entry, applied in order, each on its own (with its
    /// own deduplication): the leader packs concurrent writes together so that they share
    /// one disk flush and one replication round. A batch cannot contain a batch.
    Batch(Vec<BatchItem>),
    /// Create a key from a generated secret.
    KeyCreate {
        spec: KeySpec,
        secret: SecretDigest,
    },
    /// Create a key from a secret the caller supplied.
    KeyImport {
        spec: KeySpec,
        secret: SecretDigest,
    },
    KeyUpdate {
        key: KeyId,
        patch: KeyPatch,
    },
    KeySetEnabled {
        key: KeyId,
        enabled: bool,
    },
    /// Replace the secret; the old one stays valid for `grace_ms`.
    KeyRotate {
        key: KeyId,
        secret: SecretDigest,
        grace_ms: u64,
    },
    /// Delete a key with its associations, counters, reports and leases.
    KeyDelete {
        key: KeyId,
    },
    PlanCreate {
        spec: PlanSpec,
    },
    /// Replace a plan's definition. Counters of the current period are kept.
    PlanUpdate {
        plan: PlanId,
        spec: PlanSpec,
    },
    /// Delete a plan with its associations, counters, reports and leases.
    PlanDelete {
        plan: PlanId,
    },
    /// Attach a key to a plan, or change its per-period extra if already attached.
    Attach {
        plan: PlanId,
        key: KeyId,
        extra_per_period: Extra,
    },
    Detach {
        plan: PlanId,
        key: KeyId,
    },
    /// Count `cost` against every plan the target names, all or nothing.
    Increment {
        key: KeyRef,
        target: Target,
        cost: Cost,
    },
    /// Lease operations of one gateway; each succeeds or fails on its own.
    Leases {
        gateway: GatewayId,
        ops: Vec<LeaseOp>,
    },
    /// Expire the leases whose time is up; their tokens count as used.
    ExpireLeases,
    /// Grant extra quota to (plan, key) for the current period.
    UsageGrant {
        plan: PlanId,
        key: KeyId,
        extra: Extra,
    },
    /// Set what remains of (plan, key)'s quota in the current period.
    UsageSetRemaining {
        plan: PlanId,
        key: KeyId,
        remaining: u64,
    },
    /// Add what a gateway admitted at the plans' safe rates while the cluster was unreachable
    /// to each (plan, key)'s usage in the current period, **without a quota check**: the
    /// requests already happened. The one deliberate exception to "admitted <= limit", for
    /// plans whose `safe_rate` > 0 only. Each item succeeds or fails on its own.
    /// (Appended last: variants are encoded by position in the log.)
    ReportOffline {
        gateway: GatewayId,
        usage: Vec<OfflineUsage>,
    },
}

impl Command {
    /// A short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Noop => "noop",
            Command::Batch(_) => "batch",
            Command::KeyCreate { .. } => "key_create",
            Command::KeyImport { .. } => "key_import",
            Command::KeyUpdate { .. } => "key_update",
            Command::KeySetEnabled { .. } => "key_set_enabled",
            Command::KeyRotate { .. } => "key_rotate",
            Command::KeyDelete { .. } => "key_delete",
            Command::PlanCreate { .. } => "plan_create",
            Command::PlanUpdate { .. } => "plan_update",
            Command::PlanDelete { .. } => "plan_delete",
            Command::Attach { .. } => "attach",
            Command::Detach { .. } => "detach",
            Command::Increment { .. } => "increment",
            Command::Leases { .. } => "leases",
            Command::ExpireLeases => "expire_leases",
            Command::UsageGrant { .. } => "usage_grant",
            Command::UsageSetRemaining { .. } => "usage_set_remaining",
            Command::ReportOffline { .. } => "report_offline",
        }
    }
}

/// Why a request is not admitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Denial {
    /// No key has this secret (or the secret was rotated out).
    UnknownKey,
    Disabled,
    Expired,
    /// The key is in no plan that covers the requested stage (or not in the named plan).
    NotCovered,
    /// A plan's quota would be exceeded; nothing was counted.
    QuotaExceeded {
        plan: PlanId,
        reset_at: Timestamp,
    },
}

/// The answer to an increment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncrementResult {
    pub key: Option<KeyId>,
    /// `None` when admitted.
    pub denial: Option<Denial>,
    /// Usage of every plan involved, after the increment (unchanged if denied).
    pub usage: Vec<Usage>,
}

impl IncrementResult {
    pub fn allowed(&self) -> bool {
        self.denial.is_none()
    }

    /// The plan with the least quota remaining, which is what headers should show.
    pub fn tightest(&self) -> Option<&Usage> {
        self.usage
            .iter()
            .min_by_key(|u| u.remaining.unwrap_or(u64::MAX))
    }
}

/// The result of one [`LeaseOp`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseResult {
    Granted {
        lease: Lease,
        usage: Usage,
    },
    /// Settled; nothing renewed (not asked, or nothing left to grant).
    Settled {
        usage: Usage,
        denial: Option<Denial>,
    },
    Denied {
        denial: Denial,
    },
    Failed {
        error: ApplyError,
    },
}

/// What a successful command answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Done,
    Key(Box<ApiKey>),
    Plan(Box<UsagePlan>),
    Association(Association),
    Increment(IncrementResult),
    Leases(Vec<LeaseResult>),
    Expired {
        leases: usize,
    },
    Usage(Usage),
    /// One response per item of a [`Command::Batch`], in order.
    Batch(Vec<Response>),
    /// One result per item of a [`Command::ReportOffline`], in order. (Appended last.)
    OfflineUsage(Vec<OfflineResult>),
}

/// The answer of the state machine to one entry. A refusal changes nothing.
pub type Response = Result<Outcome, ApplyError>;
