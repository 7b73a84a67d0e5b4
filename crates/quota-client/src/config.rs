//! The client's configuration: every field has a doc comment and a default, and
//! [`ClientConfig::validate`] checks them once, at [`crate::Client::connect`].

use std::time::Duration;

use crate::error::ConfigError;
use quota_core::limits::{MAX_LEASE_GRANT, MAX_LEASE_TTL_MS, MIN_LEASE_TTL_MS};

/// How a gateway talks to the cluster and sizes its allowances.
#[derive(Clone)]
pub struct ClientConfig {
    /// Node addresses, `http://host:port`; any node serves the Gateway service.
    pub endpoints: Vec<String>,
    /// The gateway's identity (stable across its restarts), 1 to 128 bytes.
    pub gateway_id: String,
    /// Sent as `authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// How long `connect` waits for the first full state from the watch stream.
    pub connect_timeout: Duration,
    /// Deadline of one RPC attempt.
    pub request_timeout: Duration,
    /// How long one lease batch is retried (same request id, next node) before it is given
    /// up; covers a leader election.
    pub batch_retry_deadline: Duration,
    /// Lifetime asked for each lease (100 ms to 60 s).
    pub lease_ttl: Duration,
    /// The gateway stops spending a lease this long before `send time + lease_ttl` by its
    /// own monotonic clock (the cluster counts an unsettled lease as spent at its expiry).
    pub lease_safety_margin: Duration,
    /// A lease is settled and replaced once it is this close to its deadline.
    pub renew_before: Duration,
    /// Leases are sized to cover this much of the key's recent demand at this gateway.
    pub lease_horizon: Duration,
    /// A new lease is asked for when what is held covers less than this much demand.
    pub refill_ahead: Duration,
    /// The refill task runs at least this often (and sooner when a bucket runs low).
    pub refill_interval: Duration,
    /// Largest lease asked for, in cost units.
    pub max_lease: u64,
    /// After the cluster answers "quota exceeded" (or another denial) for a bucket, the
    /// gateway denies locally for this long before asking again (quota may come back:
    /// other gateways return unused tokens, operators grant extra).
    pub denial_recheck: Duration,
    /// A secret no key has is remembered this long, so random secrets cannot flood the
    /// cluster with lookups.
    pub miss_ttl: Duration,
    /// Most secrets remembered (verified ones and misses each).
    pub key_cache_capacity: usize,
    /// How long `check` waits for a lookup or a first lease before it denies with
    /// `Unavailable`.
    pub max_wait: Duration,
    /// Requests per second admitted per (plan, key) while the cluster is unreachable and
    /// the held leases are spent or expired, for plans whose own `safe_rate` is 0. 0 (the
    /// default) = deny. A plan's `safe_rate` (set by the operator) takes precedence. What
    /// this setting admits is reported and counted like any safe-rate admission.
    pub safe_rate: f64,
    /// Throttles are enforced by the cluster's leader for all gateways together; this is
    /// only the fraction of a throttle (rate and burst) this gateway enforces **alone**,
    /// with a local token bucket, while the cluster is unreachable and the client is in
    /// safe-rate mode (`safe_rate` > 0). With N gateways, 1/N keeps their sum within the
    /// plan's throttle during an outage. In (0, 1]; 1.0 by default.
    pub throttle_share: f64,
    /// Throttle tokens taken from the leader expire this long after the request that
    /// fetched them was sent, by this machine's monotonic clock. Across all gateways, at
    /// most `burst + rate x (T + throttle_pool_ttl)` requests pass in any window of `T`
    /// seconds; a shorter lifetime is tighter but wastes more tokens of idle gateways.
    /// 10 ms to 10 s.
    pub throttle_pool_ttl: Duration,
    /// Throttle tokens are asked for in chunks of about `rate x throttle_chunk` (at least
    /// 1, at most the burst).
    pub throttle_chunk: Duration,
    /// How long one throttle request is retried on other nodes before the cluster counts
    /// as unreachable for throttles.
    pub throttle_retry_deadline: Duration,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoints", &self.endpoints)
            .field("gateway_id", &self.gateway_id)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("lease_ttl", &self.lease_ttl)
            .field("lease_horizon", &self.lease_horizon)
            .field("safe_rate", &self.safe_rate)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Defaults for `endpoints` and `gateway_id`.
    pub fn new(endpoints: Vec<String>, gateway_id: impl Into<String>) -> ClientConfig {
        ClientConfig {
            endpoints,
            gateway_id: gateway_id.into(),
            token: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(1),
            batch_retry_deadline: Duration::from_secs(4),
            lease_ttl: Duration::from_secs(5),
            lease_safety_margin: Duration::from_millis(500),
            renew_before: Duration::from_millis(1500),
            lease_horizon: Duration::from_secs(1),
            refill_ahead: Duration::from_millis(300),
            refill_interval: Duration::from_millis(50),
            max_lease: 100_000,
            denial_recheck: Duration::from_millis(200),
            miss_ttl: Duration::from_secs(2),
            key_cache_capacity: 100_000,
            max_wait: Duration::from_secs(1),
            safe_rate: 0.0,
            throttle_share: 1.0,
            throttle_pool_ttl: Duration::from_millis(250),
            throttle_chunk: Duration::from_millis(50),
            throttle_retry_deadline: Duration::from_millis(500),
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.endpoints.is_empty() {
            return Err(ConfigError::NoEndpoints);
        }
        for e in &self.endpoints {
            e.parse::<tonic::transport::Uri>()
                .map_err(|err| ConfigError::BadEndpoint {
                    endpoint: e.clone(),
                    reason: err.to_string(),
                })?;
        }
        if self.gateway_id.is_empty()
            || self.gateway_id.len() > quota_core::limits::MAX_GATEWAY_ID_LEN
            || self.gateway_id.chars().any(char::is_control)
        {
            return Err(ConfigError::BadGatewayId);
        }
        let ttl = u64::try_from(self.lease_ttl.as_millis()).unwrap_or(u64::MAX);
        if !(MIN_LEASE_TTL_MS..=MAX_LEASE_TTL_MS).contains(&ttl) {
            return Err(range("lease_ttl", ttl, "100 to 60000 ms"));
        }
        if self.lease_safety_margin + self.renew_before >= self.lease_ttl {
            return Err(range(
                "lease_safety_margin + renew_before",
                format!("{:?}", self.lease_safety_margin + self.renew_before),
                "less than lease_ttl",
            ));
        }
        if self.max_lease == 0 || self.max_lease > MAX_LEASE_GRANT {
            return Err(range("max_lease", self.max_lease, "1 to 1000000"));
        }
        if self.key_cache_capacity == 0 {
            return Err(range("key_cache_capacity", 0, "at least 1"));
        }
        if !(self.safe_rate.is_finite() && self.safe_rate >= 0.0) {
            return Err(range("safe_rate", self.safe_rate, "a number >= 0"));
        }
        if !(self.throttle_share.is_finite()
            && self.throttle_share > 0.0
            && self.throttle_share <= 1.0)
        {
            return Err(range("throttle_share", self.throttle_share, "in (0, 1]"));
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(10)).contains(&self.throttle_pool_ttl)
        {
            return Err(range(
                "throttle_pool_ttl",
                format!("{:?}", self.throttle_pool_ttl),
                "10 ms to 10 s",
            ));
        }
        if self.throttle_chunk.is_zero() || self.throttle_chunk > self.throttle_pool_ttl {
            return Err(range(
                "throttle_chunk",
                format!("{:?}", self.throttle_chunk),
                "more than 0 and at most throttle_pool_ttl",
            ));
        }
        if self.throttle_retry_deadline.is_zero() {
            return Err(range("throttle_retry_deadline", 0, "more than 0"));
        }
        if self.refill_interval.is_zero() {
            return Err(range("refill_interval", 0, "more than 0"));
        }
        Ok(())
    }
}

fn range(field: &'static str, value: impl ToString, rule: &'static str) -> ConfigError {
    ConfigError::OutOfRange {
        field,
        value: value.to_string(),
        rule,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Property: defaults are valid, bad values are refused, and Debug hides the token.
    // Set-up: a default config, then one bad field at a time. Pass: as stated.
    #[test]
    fn validation_and_redaction() {
        let mut c = ClientConfig::new(vec!["http://127.0.0.1:1".into()], "gw");
        c.validate().unwrap();
        c.token = Some("sekrit-token".into());
        assert!(!format!("{c:?}").contains("sekrit"));
        let mut bad = c.clone();
        bad.endpoints.clear();
        assert_eq!(bad.validate(), Err(ConfigError::NoEndpoints));
        let mut bad = c.clone();
        bad.lease_ttl = Duration::from_millis(50);
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.safe_rate = -1.0;
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.throttle_pool_ttl = Duration::from_secs(11);
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.throttle_chunk = Duration::ZERO;
        assert!(bad.validate().is_err());
        let mut bad = c;
        bad.gateway_id = String::new();
        assert_eq!(bad.validate(), Err(ConfigError::BadGatewayId));
    }
}
