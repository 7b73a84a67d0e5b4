//! Tests of quota-store against real sled databases in temporary directories.
//!
//! One test binary (shared fixture, one link on a 2-core machine); one module per area.

mod fixture;
mod t10_openraft_suite;
mod t20_reopen;
mod t30_snapshot_round_trip;
mod t40_crash_durability;
