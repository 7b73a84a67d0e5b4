//! `quotactl`: the operator's command line for a quotad cluster.
//!
//! It talks gRPC to any node (followers forward writes to the leader) and manages API
//! keys, usage plans, quota and the cluster's membership, one command at a time or
//! declaratively from a file (`quotactl apply -f serverless.yml`).
//!
//! # Connecting
//! - `--endpoints URL,URL,...` or `QUOTA_ENDPOINTS`; default `http://127.0.0.1:7070`, where
//!   `quotad --dev` listens. Plaintext gRPC.
//! - The admin token: the `QUOTA_TOKEN` environment variable, or `--token-file FILE`
//!   (never a flag value, which `ps` would show). Sent as `authorization: Bearer <token>`.
//!   A cluster without a configured token (such as `quotad --dev`) needs none.
//! - A call answered UNAVAILABLE (no leader yet, a node going down, a refused connection)
//!   is retried against the next endpoint with the same request id (16 random bytes per
//!   write, so the cluster applies it once) for `--retry-for` seconds (default 10), then
//!   the command fails with exit status 3.
//!
//! # Commands
//! ```text
//! quotactl cluster status | add-node --id N --address H:P | remove-node --id N
//! quotactl key create NAME [--description D] [--owner O] [--disabled] [--expires T] [--tag K=V]
//! quotactl key import NAME --value-file FILE|-     (secret from a file or stdin)
//! quotactl key list [--name-prefix P] [--owner O] | get KEY | delete KEY
//! quotactl key update KEY [--name N] [--description D] [--owner O|--clear-owner] ...
//! quotactl key enable KEY | disable KEY | rotate KEY [--grace 24h]
//! quotactl plan create NAME [--rate R --burst B] [--limit N --period day|week|month
//!           [--offset N] [--week-start DAY] [--month-start-day D]] [--stage API/STAGE]...
//!           [--route-throttle "GET /x=RATE:BURST"]...
//! quotactl plan list | get PLAN | update PLAN [...] | delete PLAN
//! quotactl plan attach PLAN KEY [--extra N] | detach PLAN KEY
//! quotactl usage PLAN [--key KEY] [--from DATE] [--to DATE]
//! quotactl usage grant PLAN KEY AMOUNT | set-remaining PLAN KEY REMAINING
//! quotactl incr KEY (--plan PLAN | --api A --stage S [--route R]) [--cost N] [--request-id HEX]
//! quotactl apply -f FILE [--stage S] [--dry-run] [--prune]
//! quotactl completions bash|zsh|fish|elvish|powershell
//! ```
//! KEY and PLAN are ids (`k12`, `p3`) or names; `name:k12` names a key called "k12".
//! `key create` and `key rotate` print the secret once: the cluster keeps only its hash.
//!
//! # Output and exit status
//! Tables by default; `--json` prints one JSON document per command, with the field
//! names listed in [`output`]. With `--json`, errors are printed on standard error as
//! `{"error": {"kind", "exit_code", "message"}}`.
//! Exit status: 0 success; 1 refused by the cluster (not found, conflict, denied
//! increment...); 2 usage error (bad flags, invalid file, a value the cluster finds
//! invalid); 3 the cluster cannot be reached.
//!
//! # Declarative files
//! `quotactl apply` reads a serverless.yml (its API key sections) or the native format;
//! see [`manifest::APPLY_HELP`] (also `quotactl apply --help`). Decisions taken:
//! - serverless keys written as plain strings are key names (secret generated);
//!   `{name, value}` imports the value; `customerId` is the owner;
//! - a usage plan entry's name is the plan's name, and the keys listed under it are
//!   attached to it; every serverless plan covers the API named by `service:` at the
//!   stage (`--stage`, else `provider.stage`, else `dev`);
//! - `quota.offset` means "requests subtracted from the limit in the initial period", as
//!   the server does;
//! - idempotent: compared by name, only differences are sent; an existing key is never
//!   re-imported (only hashes are stored, so values cannot be compared), and the plan of
//!   changes says so.
//!
//! # Layout
//! - [`cli`]: the command line (clap), with every `--help` text.
//! - [`client`]: endpoints, the admin token, retries with stable request ids.
//! - [`commands`]: running each command.
//! - [`output`]: tables and JSON views.
//! - [`manifest`]: reading files ([`manifest::node`], [`manifest::serverless`],
//!   [`manifest::native`]) and applying them ([`manifest::apply`]).
//! - [`when`]: times, dates and durations as typed by an operator.
//! - [`error`]: errors and their exit statuses.

pub mod cli;
pub mod client;
pub mod commands;
pub mod error;
pub mod manifest;
pub mod output;
pub mod when;
