//! quota-server: the quotad node. openraft for replication, sled (through quota-store) for
//! durable state, tonic for gRPC. The binary `quotad` only parses flags and calls
//! [`server::serve`]; tests can start a node on any listener.
//!
//! # Layout
//! - [`config`]: the configuration struct, its defaults, TOML loading and validation.
//! - [`server`]: start a node (storage, Raft, bootstrap, gRPC) and stop it.
//! - [`node`]: linearizable writes and reads from any node (forwarding, read index).
//! - [`network`]: openraft's network over the internal gRPC Raft service; peer channels.
//! - [`service`]: the gRPC services (admin, data, cluster, and internal raft).
//! - [`throttle`]: the leader's in-memory token buckets (throttles are soft state).
//! - [`auth`]: bearer tokens.
//! - [`error`]: node errors and their mapping to gRPC status codes.

pub mod auth;
pub mod config;
pub mod error;
pub mod network;
pub mod node;
pub mod rest;
pub mod server;
pub mod service;
pub mod throttle;
