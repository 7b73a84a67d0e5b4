//! gRPC services: one module per service of `proto/quota/v1`.

pub mod admin;
pub mod cluster;
pub mod data;
pub mod gateway;
pub mod raft;
