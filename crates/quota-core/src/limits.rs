//! Every size in quotad has a limit, and they all live here, with their units in the name
//! where a unit applies. Validation at the edge (see [`crate::validate`]) enforces them, so
//! code inside the state machine may rely on them.

/// Longest key or plan name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest free-text description, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 1024;
/// Longest owner (customer id), in bytes.
pub const MAX_OWNER_LEN: usize = 128;
/// Longest tag key or tag value, in bytes.
pub const MAX_TAG_LEN: usize = 128;
/// Most tags on one key.
pub const MAX_TAGS_PER_KEY: usize = 50;
/// Most plans one key can be attached to.
pub const MAX_PLANS_PER_KEY: usize = 16;
/// Most API stages one plan covers.
pub const MAX_STAGES_PER_PLAN: usize = 64;
/// Most per-route throttle overrides on one plan.
pub const MAX_ROUTES_PER_PLAN: usize = 256;
/// Longest API id or stage name, in bytes.
pub const MAX_API_STAGE_LEN: usize = 128;
/// Longest route path (`/users/{id}`), in bytes.
pub const MAX_ROUTE_PATH_LEN: usize = 512;
/// Largest cost of one request.
pub const MAX_COST: u64 = 1_000_000;
/// Largest quota limit per period.
pub const MAX_QUOTA_LIMIT: u64 = 1 << 50;
/// Largest extra quota granted per key (per period or as a one-off grant).
pub const MAX_EXTRA: u64 = 1 << 50;
/// Largest usage of one (plan, key) in one period, in cost units. Limits, extras and
/// adjustments together stay below 2^53, so only usage admitted at the safe rate (reported
/// without a quota check) can come near it; the cap keeps every sum of the accounting far
/// from overflowing.
pub const MAX_USED_PER_PERIOD: u64 = 1 << 60;
/// Largest throttle rate, in requests per second.
pub const MAX_RATE_PER_SEC: f64 = 10_000_000.0;
/// Largest throttle burst (bucket size), in requests.
pub const MAX_BURST: u64 = 100_000_000;
/// Shortest imported secret, in bytes (the managed gateways' own minimum).
pub const MIN_IMPORTED_SECRET_LEN: usize = 20;
/// Longest imported secret, in bytes.
pub const MAX_IMPORTED_SECRET_LEN: usize = 128;
/// Longest time the previous secret stays valid after a rotation, in milliseconds (30 days).
pub const MAX_ROTATION_GRACE_MS: u64 = 30 * 24 * 3600 * 1000;
/// Request ids remembered for deduplication; the oldest is forgotten first.
pub const DEDUP_TABLE_CAPACITY: usize = 65_536;
/// Most client commands the leader packs into one log entry.
pub const MAX_COMMANDS_PER_BATCH: usize = 1024;
/// Most lease operations in one batched lease command.
pub const MAX_LEASE_OPS_PER_BATCH: usize = 1024;
/// Most leases open at once, cluster-wide.
pub const MAX_OPEN_LEASES: usize = 1_000_000;
/// Shortest lease lifetime, in milliseconds.
pub const MIN_LEASE_TTL_MS: u64 = 100;
/// Longest lease lifetime, in milliseconds.
pub const MAX_LEASE_TTL_MS: u64 = 60_000;
/// Largest single lease, in cost units.
pub const MAX_LEASE_GRANT: u64 = 1_000_000;
/// Most (plan, key) items in one report of usage admitted at the safe rate while the cluster
/// was unreachable (one RPC, one log entry).
pub const MAX_OFFLINE_ITEMS_PER_REPORT: usize = 1024;
/// Largest usage one item of such a report adds, in cost units; a gateway with more to
/// report sends the rest in a later report.
pub const MAX_OFFLINE_USAGE_PER_ITEM: u64 = 1 << 50;
/// Longest gateway identity, in bytes.
pub const MAX_GATEWAY_ID_LEN: usize = 128;
/// Daily usage buckets kept per (plan, key), in days.
pub const DAILY_BUCKET_RETENTION_DAYS: i64 = 92;
/// Most leases expired by one expiry command, so one entry never does unbounded work.
pub const MAX_EXPIRED_PER_COMMAND: usize = 4096;
/// Total keys the cluster stores.
pub const MAX_KEYS: usize = 10_000_000;
/// Total plans the cluster stores.
pub const MAX_PLANS: usize = 100_000;
