//! quota-loadtest: load and quota-accuracy harness of quotad, side by side with the
//! limiter most teams write for themselves (a Redis fixed-window counter).
//!
//! It starts a 3-node cluster (the `quota-blackbox` fixture: real `quotad` processes) or
//! uses `--endpoints`, creates a fresh plan (quota `--limit` per key) and `--keys` keys,
//! runs `--gateways` quota-client instances with `--streams` tasks each for a duration or
//! a request count, injects faults at chosen moments, and reports per key and in total:
//! admitted versus limit (over-admission must be 0), decisions/s, check latency, refill
//! RPCs, the Raft write rate and what each fault did; as text, JSON and an SVG chart. It
//! exits 1 when anything was admitted past a limit.
//!
//! # Layout
//! - [`stats`]: the Zipf sampler, the latency histogram, the quota books.
//! - [`load`]: demand shapes and the streams.
//! - [`faults`]: fault specs, SIGSTOP/SIGCONT of a fixture node.
//! - [`redis`]: the baseline's server and RESP client.
//! - [`svg`]: the chart.
//! - `run`: the orchestration and the report.

pub mod faults;
pub mod load;
pub mod redis;
pub mod stats;
pub mod svg;

mod run;

pub use run::{Args, main_with};
