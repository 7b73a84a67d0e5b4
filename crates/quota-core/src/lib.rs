//! quota-core: the domain of quotad, with no I/O.
//!
//! Domain types and their validation, calendar period arithmetic, and the deterministic
//! state machine that every replica runs. It knows nothing of tokio, tonic, sled or the
//! network, and is tested without them.
//!
//! # Layout
//! - [`limits`]: every size limit, as named constants.
//! - [`error`]: validation errors and state-machine refusals.
//! - [`types`]: validated newtypes (ids, names, routes, costs, throttles).
//! - [`secret`]: API key secrets, their hashes, and constant-time comparison.
//! - [`time`] and [`period`]: UTC calendar arithmetic and quota periods.
//! - [`model`]: stored records (keys, plans, associations, counters, leases).
//! - [`command`]: log entries, commands and responses.
//! - [`state`]: the state and `apply`.
//! - [`snapshot`]: versioned serialisation of the whole state.

pub mod command;
pub mod error;
pub mod limits;
pub mod model;
pub mod period;
pub mod secret;
pub mod snapshot;
pub mod state;
pub mod time;
pub mod types;

pub use command::{
    BatchItem, Command, Denial, Entry, IncrementResult, KeyRef, LeaseOp, LeaseResult,
    OfflineResult, OfflineUsage, Outcome, Response, Target,
};
pub use error::{ApplyError, Entity, ValidationError};
pub use model::*;
pub use period::{PeriodUnit, QuotaSpec, RawQuota, Weekday, Window};
pub use secret::{Secret, SecretHash};
pub use state::{DayReport, State};
pub use time::{Date, Timestamp};
pub use types::*;
