//! quota-proto: the wire format of quotad, and the only crate that knows protobuf.
//!
//! The `.proto` files in `proto/quota/v1` (package `quota.v1`) are the only definition of
//! the wire format. `build.rs` compiles them with protox (pure Rust, no `protoc`) and
//! generates prost messages and tonic clients and servers into [`v1`].
//!
//! Conversions happen at the edge, in one direction each:
//! - requests into validated `quota_core` types with `TryFrom` (or a small function
//!   where the wire value is a scalar), failing with a [`quota_core::ValidationError`]
//!   that names the offending field by its path in the request (`spec.quota.limit`);
//! - answers from `quota_core` types into messages with `From`. A key is never converted
//!   with its secret or its secret's hash: only its public prefix travels.
//!
//! # Layout
//! - [`v1`]: the generated messages, enums, clients (`admin_client::AdminClient`...) and
//!   servers (`admin_server::{Admin, AdminServer}`...).
//! - [`convert`]: field paths and scalar helpers (request ids, timestamps, pages);
//!   [`convert::selector`] (keys and plans by id or name), [`convert::key`],
//!   [`convert::plan`], [`convert::usage`], [`convert::data`] (the direct increment),
//!   [`convert::lease`] (the gateway service).
//! - [`status`]: the one mapping of domain errors to gRPC status codes.
//!
//! # Features
//! - `transport`: turns on tonic's transport and generates the clients' `connect(addr)`.
//!   Without it, build clients with `XClient::new(channel)`.

pub mod convert;
pub mod status;

/// Generated from `proto/quota/v1/*.proto`. See the files for the meaning of every field.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("quota.v1");
}

pub use convert::selector::Selector;
pub use status::ToStatus;
