//! The command line: every command, flag and its `--help` text (clap derive).

use crate::client::{DEFAULT_ENDPOINT, DEFAULT_RETRY_FOR_SECS};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Keys and plans are named by id (k12, p3) or by name; write name:k12 for a key whose name
looks like an id.

Exit status: 0 success, 1 refused by the cluster (not found, conflict, denied...),
2 usage error (bad arguments, invalid file), 3 cluster unreachable.

Getting started:
  quotad --dev &                                   # a one-node cluster on 127.0.0.1:7070
  quotactl plan create free --limit 1000 --period day --rate 10 --burst 20 --stage shop/prod
  quotactl key create alice                        # prints the secret once
  quotactl plan attach free alice
  quotactl incr alice --plan free                  # count one request
  quotactl usage free                              # the last 7 days, per key and day";

/// quotactl: manage a quotad cluster: API keys, usage plans, quota and the cluster.
#[derive(Debug, Parser)]
#[command(name = "quotactl", version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Nodes to talk to, comma-separated URLs (any node will do; followers forward).
    #[arg(
        long,
        global = true,
        env = "QUOTA_ENDPOINTS",
        value_delimiter = ',',
        default_value = DEFAULT_ENDPOINT,
        value_name = "URL,..."
    )]
    pub endpoints: Vec<String>,
    /// File holding the admin token (otherwise the QUOTA_TOKEN environment variable;
    /// no token is needed when the cluster has none configured, as with `quotad --dev`).
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print JSON instead of tables (stable field names, listed in the quota-cli crate docs:
    /// `cargo doc -p quota-cli --open`, module `output`).
    #[arg(long, global = true)]
    pub json: bool,
    /// Keep retrying an unavailable cluster for this many seconds (same request id, next
    /// endpoint), then give up with exit status 3.
    #[arg(long, global = true, env = "QUOTA_RETRY_FOR", default_value_t = DEFAULT_RETRY_FOR_SECS, value_name = "SECONDS")]
    pub retry_for: f64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The Raft group: status, adding and removing nodes.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// API keys: create, import, list, show, change, rotate, delete.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Usage plans: throttle, quota, API stages, per-route throttles, and their keys.
    #[command(subcommand)]
    Plan(PlanCmd),
    /// Usage report of a plan per key and day; grant extra quota; set what remains.
    #[command(after_help = "Examples:\n  \
        quotactl usage free                                 # every key, the last 7 days\n  \
        quotactl usage free --key alice --from 2025-03-01 --to 2025-03-31\n  \
        quotactl usage grant free alice 500                 # +500 this period only\n  \
        quotactl usage set-remaining free alice 0           # stop alice until the reset")]
    Usage(UsageArgs),
    /// Count a request directly (linearizable; for scripts and tests). Exit status 1 when
    /// the request is denied.
    #[command(after_help = "Examples:\n  \
        quotactl incr alice --plan free              # one unit against plan free\n  \
        quotactl incr k12 --api shop --stage prod --route \"GET /items\" --cost 5\n  \
        printf %s \"$SECRET\" | quotactl incr --secret-stdin --api shop --stage prod")]
    Incr(IncrArgs),
    /// Make the cluster's keys and plans match a file (a serverless.yml, or the native
    /// YAML/TOML format). Prints the changes; --dry-run only prints them.
    #[command(long_about = crate::manifest::APPLY_HELP)]
    Apply(ApplyArgs),
    /// Print a shell completion script: `quotactl completions bash > /etc/bash_completion.d/quotactl`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Leader, term, and every member with its role and applied log index.
    Status,
    /// Add a node: a learner first, promoted to voter once caught up (unless --learner-only).
    AddNode {
        /// The new node's id (not 0, unique).
        #[arg(long)]
        id: u64,
        /// host:port of the new node (the address it advertises).
        #[arg(long, value_name = "HOST:PORT")]
        address: String,
        /// host:port where clients reach it, if different from --address.
        #[arg(long, value_name = "HOST:PORT")]
        public_address: Option<String>,
        /// Leave it a learner (receives the log, does not vote).
        #[arg(long)]
        learner_only: bool,
    },
    /// Remove a node (voter or learner) from the group.
    RemoveNode {
        /// The node's id.
        #[arg(long)]
        id: u64,
    },
}

/// Fields of a key that create and import share.
#[derive(Debug, Args)]
pub struct KeySpecArgs {
    /// Unique name of the key.
    pub name: String,
    /// Free text.
    #[arg(long, default_value = "")]
    pub description: String,
    /// The customer the key belongs to.
    #[arg(long)]
    pub owner: Option<String>,
    /// Create it disabled.
    #[arg(long)]
    pub disabled: bool,
    /// When it stops working: RFC 3339 (2026-01-31T00:00:00Z), a date (2026-01-31), or
    /// a duration from now (90d, 12h).
    #[arg(long, value_name = "TIME")]
    pub expires: Option<String>,
    /// A label, NAME=VALUE (repeatable).
    #[arg(long = "tag", value_name = "NAME=VALUE")]
    pub tags: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Create a key with a generated secret. The secret is printed once and cannot be
    /// shown again (the cluster keeps only its hash).
    Create(KeySpecArgs),
    /// Create a key with a secret you supply (a migration from another gateway). The
    /// secret is read from a file or standard input, never from the command line.
    Import {
        #[command(flatten)]
        spec: KeySpecArgs,
        /// File holding the secret (20 to 128 printable ASCII characters); `-` for
        /// standard input.
        #[arg(long, value_name = "FILE")]
        value_file: PathBuf,
    },
    /// List keys, in id order.
    List {
        /// Only keys whose name starts with this.
        #[arg(long)]
        name_prefix: Option<String>,
        /// Only keys of this owner.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Show one key and the plans it is attached to.
    Get {
        /// Id or name.
        key: String,
    },
    /// Change some fields of a key; others are left as they are.
    Update {
        /// Id or name.
        key: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New description ("" clears it).
        #[arg(long)]
        description: Option<String>,
        /// New owner.
        #[arg(long, conflicts_with = "clear_owner")]
        owner: Option<String>,
        /// Remove the owner.
        #[arg(long)]
        clear_owner: bool,
        /// New expiry (as for `key create --expires`).
        #[arg(long, value_name = "TIME", conflicts_with = "no_expiry")]
        expires: Option<String>,
        /// Remove the expiry: the key never expires.
        #[arg(long)]
        no_expiry: bool,
        /// Replace all tags with these (repeatable NAME=VALUE).
        #[arg(long = "tag", value_name = "NAME=VALUE", conflicts_with = "clear_tags")]
        tags: Vec<String>,
        /// Remove all tags.
        #[arg(long)]
        clear_tags: bool,
    },
    /// Let the key be used again.
    Enable {
        /// Id or name.
        key: String,
    },
    /// Stop the key from being used (it is kept; `enable` undoes this).
    Disable {
        /// Id or name.
        key: String,
    },
    /// Replace the key's secret with a new generated one, printed once. The old secret
    /// keeps working for the grace period.
    Rotate {
        /// Id or name.
        key: String,
        /// How long the old secret keeps working: 0, 30s, 15m, 24h, 7d (at most 30d).
        #[arg(long, default_value = "0", value_name = "DURATION")]
        grace: String,
    },
    /// Delete a key with its plan memberships, counters and reports.
    Delete {
        /// Id or name.
        key: String,
    },
}

/// A plan's definition, as flags. Used by `plan create` (absent = none) and `plan update`
/// (absent = unchanged).
#[derive(Debug, Args)]
pub struct PlanSpecArgs {
    /// Free text.
    #[arg(long)]
    pub description: Option<String>,
    /// Throttle: steady requests per second per key (needs --burst).
    #[arg(long, value_name = "PER_SECOND", requires = "burst")]
    pub rate: Option<f64>,
    /// Throttle: bucket size in requests (needs --rate).
    #[arg(long, value_name = "REQUESTS", requires = "rate")]
    pub burst: Option<u64>,
    /// Quota: cost units per period per key (needs --period on create).
    #[arg(long, value_name = "UNITS")]
    pub limit: Option<u64>,
    /// Quota period (calendar periods in UTC).
    #[arg(long, value_enum)]
    pub period: Option<PeriodArg>,
    /// Quota: units subtracted from the limit in the initial period only (the current
    /// managed-gateway meaning of `offset`).
    #[arg(long, value_name = "UNITS")]
    pub offset: Option<u64>,
    /// Quota: the day weekly periods start (default monday).
    #[arg(long, value_enum)]
    pub week_start: Option<WeekdayArg>,
    /// Quota: the day of the month monthly periods start, 1 to 28 (default 1).
    #[arg(long, value_name = "DAY")]
    pub month_start_day: Option<u32>,
    /// Requests per second per key a gateway may admit while the cluster is unreachable
    /// and its leases are spent (not reserved: an exception to the quota you choose); 0 denies.
    #[arg(long, value_name = "PER_SECOND")]
    pub safe_rate: Option<f64>,
    /// An API stage the plan covers, API/STAGE (repeatable).
    #[arg(long = "stage", value_name = "API/STAGE")]
    pub stages: Vec<String>,
    /// A per-route throttle, "METHOD /path=RATE:BURST", e.g. "GET /users/{id}=10:20"
    /// (repeatable).
    #[arg(long = "route-throttle", value_name = "ROUTE=RATE:BURST")]
    pub route_throttles: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum PlanCmd {
    /// Create a usage plan.
    #[command(after_help = "Examples:\n  \
        quotactl plan create free --limit 1000 --period day --rate 10 --burst 20 --stage shop/prod\n  \
        quotactl plan create gold --limit 100000 --period month --month-start-day 15 \\\n      \
        --stage shop/prod --route-throttle \"POST /orders=5:10\"")]
    Create {
        /// Unique name of the plan.
        name: String,
        #[command(flatten)]
        spec: PlanSpecArgs,
    },
    /// List plans, in id order.
    List {
        /// Only plans whose name starts with this.
        #[arg(long)]
        name_prefix: Option<String>,
    },
    /// Show one plan and its keys.
    Get {
        /// Id or name.
        plan: String,
    },
    /// Change a plan: the given flags replace those parts; the rest is kept. Counters of
    /// the current period are kept.
    Update {
        /// Id or name.
        plan: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        spec: PlanSpecArgs,
        /// Remove the throttle.
        #[arg(long, conflicts_with_all = ["rate", "burst"])]
        no_throttle: bool,
        /// Remove the quota (usage is still counted).
        #[arg(long, conflicts_with_all = ["limit", "period", "offset"])]
        no_quota: bool,
        /// Remove this API stage, API/STAGE (repeatable).
        #[arg(long = "remove-stage", value_name = "API/STAGE")]
        remove_stages: Vec<String>,
        /// Remove the throttle of this route (repeatable).
        #[arg(long = "remove-route-throttle", value_name = "ROUTE")]
        remove_route_throttles: Vec<String>,
    },
    /// Delete a plan with its key memberships, counters and reports.
    Delete {
        /// Id or name.
        plan: String,
    },
    /// Attach a key to a plan, or change its per-key extra quota if already attached.
    Attach {
        /// Plan id or name.
        plan: String,
        /// Key id or name.
        key: String,
        /// Extra quota for this key in every period, on top of the plan's limit.
        #[arg(long, default_value_t = 0, value_name = "UNITS")]
        extra: u64,
    },
    /// Detach a key from a plan (its counters for the plan are dropped).
    Detach {
        /// Plan id or name.
        plan: String,
        /// Key id or name.
        key: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PeriodArg {
    Day,
    Week,
    Month,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum WeekdayArg {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

/// `quotactl usage PLAN [--key KEY] [--from DATE] [--to DATE]`, or a subcommand.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct UsageArgs {
    #[command(subcommand)]
    pub action: Option<UsageCmd>,
    #[command(flatten)]
    pub report: UsageReportArgs,
}

#[derive(Debug, Args)]
pub struct UsageReportArgs {
    /// Plan id or name.
    #[arg(required = true)]
    pub plan: Option<String>,
    /// Only this key (id or name); default every key of the plan.
    #[arg(long)]
    pub key: Option<String>,
    /// First day, YYYY-MM-DD (UTC); default 6 days before --to.
    #[arg(long, value_name = "DATE")]
    pub from: Option<String>,
    /// Last day, inclusive, YYYY-MM-DD (UTC); default today.
    #[arg(long, value_name = "DATE")]
    pub to: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum UsageCmd {
    /// The usage report (same as `quotactl usage PLAN`; use this form for a plan named
    /// like a subcommand).
    Report(UsageReportArgs),
    /// Give a key extra quota in a plan for the current period only.
    Grant {
        /// Plan id or name.
        plan: String,
        /// Key id or name.
        key: String,
        /// Extra cost units for this period.
        amount: u64,
    },
    /// Set what remains of a key's quota in a plan for the current period.
    SetRemaining {
        /// Plan id or name (it must have a quota).
        plan: String,
        /// Key id or name.
        key: String,
        /// Cost units remaining from now on.
        remaining: u64,
    },
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["plan", "api"]))]
pub struct IncrArgs {
    /// The key: id or name (or use --secret-stdin to present a secret as a gateway would).
    #[arg(
        required_unless_present = "secret_stdin",
        conflicts_with = "secret_stdin"
    )]
    pub key: Option<String>,
    /// Read the key's secret from standard input instead of naming the key.
    #[arg(long)]
    pub secret_stdin: bool,
    /// Count against this plan (id or name); the key must be attached to it.
    #[arg(long, conflicts_with_all = ["api", "stage", "route"])]
    pub plan: Option<String>,
    /// Count against every plan of the key that covers this API (needs --stage).
    #[arg(long, requires = "stage")]
    pub api: Option<String>,
    /// The stage of --api.
    #[arg(long, requires = "api")]
    pub stage: Option<String>,
    /// The route, "METHOD /path", for per-route throttles.
    #[arg(long, requires = "api")]
    pub route: Option<String>,
    /// Cost units of this request (1 to 1,000,000).
    #[arg(long, default_value_t = 1)]
    pub cost: u64,
    /// Request id, 32 hex digits, to make a retried increment count once (default: a
    /// fresh random id).
    #[arg(long, value_name = "HEX")]
    pub request_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The file: a serverless.yml, or a native quotactl file (.yaml, .yml or .toml).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// The stage: resolves ${opt:stage} and ${sls:stage}, and is the stage serverless
    /// plans cover (default: provider.stage, else "dev").
    #[arg(long)]
    pub stage: Option<String>,
    /// Print the changes without making them.
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete keys and plans that the file does not mention.
    #[arg(long)]
    pub prune: bool,
    /// The file's format; by default a file with `service:` or `provider:` at the top is a
    /// serverless.yml, a .toml file is native TOML, anything else native YAML.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    pub format: FormatArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Auto,
    Serverless,
    Yaml,
    Toml,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    // Property: the command line is consistent (clap's own checks: no clashing flags,
    // valid defaults and groups).
    // Set-up: the derived command. Pass: debug_assert succeeds.
    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
