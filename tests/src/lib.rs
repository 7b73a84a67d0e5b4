//! quota-blackbox: black-box tests against real `quotad` processes.
//!
//! # Layout
//! - [`aws`]: the real AWS CLI against a node's AWS API Gateway-compatible API.
//! - [`binary`]: builds `quotad` once per test process (with the cargo running the tests,
//!   into the same target dir and profile) and finds it.
//! - [`proxy`]: a TCP proxy per directed node-to-node link, with `cut()` / `heal()`.
//! - [`cluster`]: [`Cluster`] starts n nodes on 127.0.0.1 with every peer routed through a
//!   proxy, kills, stops, restarts, isolates and heals them, and waits on `Cluster.Status`.
//! - [`client`]: Admin, Data and Cluster clients of one node, with the admin token.
//! - [`ops`]: request builders (plans, keys, increments, usage reads) and the retry loop
//!   that resends a write with the same request id on another node.
//!
//! The tests themselves live in `cluster/` (one file per area, `tNN_name.rs`) and run with
//! `cargo nextest run -p quota-blackbox` (serially: see `.config/nextest.toml`) or
//! `cargo test -p quota-blackbox`; [`Cluster`] serialises clusters within one process.

pub mod aws;
pub mod binary;
pub mod client;
pub mod cluster;
pub mod ops;
pub mod proxy;

pub use client::NodeClient;
pub use cluster::{Cluster, ClusterOpts, RaftTimings};
pub use proxy::{LinkMode, LinkProxy};
