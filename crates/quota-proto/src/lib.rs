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
//!   [`convert::lease`] (the gateway service), [`convert::offline`] (reports of usage
//!   admitted at the safe rate while the cluster was unreachable).
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

#[cfg(test)]
mod tests {
    use super::v1;
    use prost::Message;

    // Property: generated messages survive a prost encode/decode, oneofs, maps and optional
    // fields included.
    // Set-up: an IncrementRequest and a PlanSpec with every kind of field set.
    // Pass: decoding the encoded bytes gives the same message.
    #[test]
    fn messages_survive_the_wire() {
        let req = v1::IncrementRequest {
            key: Some(v1::increment_request::Key::KeyId("k12".into())),
            target: Some(v1::increment_request::Target::Route(v1::RouteTarget {
                api: "orders".into(),
                stage: "prod".into(),
                route: "GET /orders".into(),
            })),
            cost: 2,
            request_id: vec![9; 16],
        };
        let bytes = req.encode_to_vec();
        assert_eq!(v1::IncrementRequest::decode(bytes.as_slice()), Ok(req));

        let plan = v1::PlanSpec {
            name: "gold".into(),
            quota: Some(v1::Quota {
                limit: 10,
                period: v1::Period::Week.into(),
                ..Default::default()
            }),
            route_throttles: [(
                "GET /x".to_owned(),
                v1::Throttle {
                    rate_limit: 1.5,
                    burst_limit: 3,
                },
            )]
            .into(),
            ..Default::default()
        };
        let bytes = plan.encode_to_vec();
        assert_eq!(v1::PlanSpec::decode(bytes.as_slice()), Ok(plan));
    }

    // Property: the services are published under package quota.v1, the names clients,
    // proxies and health checks use.
    // Set-up: the generated SERVICE_NAME constants. Pass: the expected full names.
    #[test]
    fn service_names() {
        assert_eq!(v1::admin_server::SERVICE_NAME, "quota.v1.Admin");
        assert_eq!(v1::data_server::SERVICE_NAME, "quota.v1.Data");
        assert_eq!(v1::cluster_server::SERVICE_NAME, "quota.v1.Cluster");
        assert_eq!(v1::gateway_server::SERVICE_NAME, "quota.v1.Gateway");
        assert_eq!(v1::raft_server::SERVICE_NAME, "quota.v1.Raft");
    }
}
