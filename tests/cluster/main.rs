//! Cluster tests: real `quotad` processes, faults injected by the fixture in
//! `quota_blackbox` (kill, stop, restart, isolate through per-link TCP proxies).
//!
//! Run serially: `cargo nextest run -p quota-blackbox` (the nextest config puts these in a
//! one-thread group) or `cargo test -p quota-blackbox -- --test-threads=1`. The fixture
//! also serialises clusters within one process.

mod t10_leader_failover;
mod t15_stream_failover;
mod t20_partition;
mod t30_snapshot_catch_up;
mod t40_full_restart;
mod t50_aws_api;
