//! The Gateway service: batched lease operations in, lease results out, and keys as a
//! gateway sees them.
//!
//! The edge checks the shape of a batch (ids, presence, the gateway id, the batch size).
//! Ranges of `want` and `ttl_ms` are checked by the state machine per operation, so one
//! bad operation fails alone (`LeaseFailed`, INVALID_ARGUMENT) instead of failing the batch.

use crate::convert::selector::{key_id, lease_id, plan_id};
use crate::convert::{millis, prefix_field, request_id};
use crate::status::code_of;
use crate::v1;
use quota_core::limits::MAX_LEASE_OPS_PER_BATCH;
use quota_core::{
    ApiKey, Association, GatewayId, Lease, LeaseOp, LeaseResult, RequestId, SecretHash,
    ValidationError,
};

impl TryFrom<v1::LeaseGrant> for LeaseOp {
    type Error = ValidationError;

    /// Fields: `plan_id`, `key_id`.
    fn try_from(g: v1::LeaseGrant) -> Result<Self, ValidationError> {
        Ok(LeaseOp::Grant {
            plan: plan_id("plan_id", &g.plan_id)?,
            key: key_id("key_id", &g.key_id)?,
            want: g.want,
            ttl_ms: g.ttl_ms,
        })
    }
}

impl TryFrom<v1::LeaseSettle> for LeaseOp {
    type Error = ValidationError;

    /// Fields: `lease_id`.
    fn try_from(s: v1::LeaseSettle) -> Result<Self, ValidationError> {
        Ok(LeaseOp::Settle {
            lease: lease_id("lease_id", &s.lease_id)?,
            spent: s.spent,
            renew: s.renew,
            ttl_ms: s.ttl_ms,
        })
    }
}

impl TryFrom<v1::LeaseOp> for LeaseOp {
    type Error = ValidationError;

    /// Fields: `` (no operation), `grant.*`, `settle.*`.
    fn try_from(op: v1::LeaseOp) -> Result<Self, ValidationError> {
        use v1::lease_op::Op;
        match op.op {
            Some(Op::Grant(g)) => LeaseOp::try_from(g).map_err(|e| prefix_field(e, "grant")),
            Some(Op::Settle(s)) => LeaseOp::try_from(s).map_err(|e| prefix_field(e, "settle")),
            None => Err(ValidationError::invalid(
                "",
                "set either `grant` or `settle`",
            )),
        }
    }
}

impl From<LeaseOp> for v1::LeaseOp {
    fn from(op: LeaseOp) -> Self {
        use v1::lease_op::Op;
        v1::LeaseOp {
            op: Some(match op {
                LeaseOp::Grant {
                    plan,
                    key,
                    want,
                    ttl_ms,
                } => Op::Grant(v1::LeaseGrant {
                    plan_id: plan.to_string(),
                    key_id: key.to_string(),
                    want,
                    ttl_ms,
                }),
                LeaseOp::Settle {
                    lease,
                    spent,
                    renew,
                    ttl_ms,
                } => Op::Settle(v1::LeaseSettle {
                    lease_id: lease.to_string(),
                    spent,
                    renew,
                    ttl_ms,
                }),
            }),
        }
    }
}

/// A validated Leases request: what `quota_core::Command::Leases` needs, and the request id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseBatch {
    pub request_id: Option<RequestId>,
    pub gateway: GatewayId,
    pub ops: Vec<LeaseOp>,
}

impl TryFrom<v1::LeasesRequest> for LeaseBatch {
    type Error = ValidationError;

    /// Fields: `request_id`, `gateway_id`, `ops` (too many), `ops[i]`, `ops[i].grant.*`,
    /// `ops[i].settle.*`.
    fn try_from(req: v1::LeasesRequest) -> Result<Self, ValidationError> {
        if req.ops.len() > MAX_LEASE_OPS_PER_BATCH {
            return Err(ValidationError::too_many(
                "ops",
                req.ops.len(),
                MAX_LEASE_OPS_PER_BATCH,
            ));
        }
        let gateway = GatewayId::new(req.gateway_id)
            .map_err(|e| crate::convert::rename_field(e, "gateway_id"))?;
        let ops = req
            .ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| LeaseOp::try_from(op).map_err(|e| prefix_field(e, &format!("ops[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LeaseBatch {
            request_id: request_id(&req.request_id)?,
            gateway,
            ops,
        })
    }
}

impl From<&Lease> for v1::Lease {
    fn from(l: &Lease) -> Self {
        v1::Lease {
            lease_id: l.id.to_string(),
            plan_id: l.plan.to_string(),
            key_id: l.key.to_string(),
            granted: l.granted,
            period_start: l.window.start.as_millis(),
            reset_at: l.window.end.as_millis(),
            expires_at: l.expires_at.as_millis(),
        }
    }
}

impl From<LeaseResult> for v1::LeaseResult {
    fn from(r: LeaseResult) -> Self {
        use v1::lease_result::Result as R;
        let result = match r {
            LeaseResult::Granted { lease, usage } => R::Granted(v1::LeaseGranted {
                lease: Some(v1::Lease::from(&lease)),
                usage: Some(v1::Usage::from(usage)),
            }),
            LeaseResult::Settled { usage, denial } => R::Settled(v1::LeaseSettled {
                usage: Some(v1::Usage::from(usage)),
                denial: denial.as_ref().map(v1::Denial::from),
            }),
            LeaseResult::Denied { denial } => R::Denied(v1::Denial::from(&denial)),
            LeaseResult::Failed { error } => R::Failed(v1::LeaseFailed {
                code: code_of(&error) as i32,
                message: error.to_string(),
            }),
        };
        v1::LeaseResult {
            result: Some(result),
        }
    }
}

/// The SHA-256 of a presented secret, in a LookupKey request (`secret_hash`, 32 bytes).
pub fn secret_hash(bytes: &[u8]) -> Result<SecretHash, ValidationError> {
    let raw: [u8; 32] = bytes.try_into().map_err(|_| {
        ValidationError::invalid(
            "secret_hash",
            format!("is {} bytes long; a SHA-256 is 32", bytes.len()),
        )
    })?;
    Ok(SecretHash(raw))
}

/// A key as a gateway needs it, found by the hash `presented`: whether that hash is the
/// current secret or the previous one (and until when), and the key's plans. The message
/// carries neither the hash nor the secret; the gateway knows the hash it asked about.
/// Call it only for a key that `presented` opens (`State::key_by_hash`).
pub fn gateway_key<'a>(
    key: &ApiKey,
    presented: &SecretHash,
    plans: impl IntoIterator<Item = &'a Association>,
) -> v1::GatewayKey {
    let hash_valid_until = if key.secret.hash == *presented {
        0
    } else {
        millis(
            key.previous
                .as_ref()
                .filter(|p| p.hash == *presented)
                .map(|p| p.valid_until),
        )
    };
    v1::GatewayKey {
        key: Some(v1::ApiKey::from(key)),
        hash_valid_until,
        plans: plans.into_iter().map(v1::Association::from).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quota_core::{
        ApplyError, Denial, Entity, Extra, KeyId, KeySpec, LeaseId, Name, PlanId, PreviousSecret,
        Secret, SecretDigest, Timestamp, Usage, Window,
    };
    use v1::lease_op::Op;

    fn grant(plan: &str, key: &str) -> v1::LeaseOp {
        v1::LeaseOp {
            op: Some(Op::Grant(v1::LeaseGrant {
                plan_id: plan.into(),
                key_id: key.into(),
                want: 50,
                ttl_ms: 2000,
            })),
        }
    }

    fn settle(lease: &str, renew: Option<u64>) -> v1::LeaseOp {
        v1::LeaseOp {
            op: Some(Op::Settle(v1::LeaseSettle {
                lease_id: lease.into(),
                spent: 7,
                renew,
                ttl_ms: 1000,
            })),
        }
    }

    fn batch(ops: Vec<v1::LeaseOp>) -> v1::LeasesRequest {
        v1::LeasesRequest {
            request_id: vec![1; 16],
            gateway_id: "gw-1".into(),
            ops,
        }
    }

    // Property: lease operations survive wire -> domain -> wire unchanged.
    // Set-up: a grant, a settle with renew and one without, in one batch.
    // Pass: the domain operations hold the wire values and convert back equal.
    #[test]
    fn lease_ops_round_trip() {
        let ops = vec![
            grant("p3", "k12"),
            settle("l9", Some(20)),
            settle("l10", None),
        ];
        let b = LeaseBatch::try_from(batch(ops.clone())).unwrap();
        assert_eq!(b.gateway.as_str(), "gw-1");
        assert!(b.request_id.is_some());
        assert_eq!(
            b.ops[0],
            LeaseOp::Grant {
                plan: PlanId(3),
                key: KeyId(12),
                want: 50,
                ttl_ms: 2000
            }
        );
        assert_eq!(
            b.ops[1],
            LeaseOp::Settle {
                lease: LeaseId(9),
                spent: 7,
                renew: Some(20),
                ttl_ms: 1000
            }
        );
        let back: Vec<v1::LeaseOp> = b.ops.into_iter().map(v1::LeaseOp::from).collect();
        assert_eq!(back, ops);
    }

    // Property: malformed batches are refused with the path of the bad field.
    // Set-up: one broken field per case. Pass: the error names that field.
    #[test]
    fn bad_lease_fields_are_named() {
        let cases: Vec<(v1::LeasesRequest, &str)> = vec![
            (
                v1::LeasesRequest {
                    gateway_id: String::new(),
                    ..batch(vec![])
                },
                "gateway_id",
            ),
            (
                v1::LeasesRequest {
                    request_id: vec![1],
                    ..batch(vec![])
                },
                "request_id",
            ),
            (
                batch(vec![grant("p3", "k1"), grant("k3", "k1")]),
                "ops[1].grant.plan_id",
            ),
            (batch(vec![grant("p3", "x")]), "ops[0].grant.key_id"),
            (batch(vec![settle("p3", None)]), "ops[0].settle.lease_id"),
            (batch(vec![v1::LeaseOp { op: None }]), "ops[0]"),
            (
                batch(vec![grant("p1", "k1"); MAX_LEASE_OPS_PER_BATCH + 1]),
                "ops",
            ),
        ];
        for (input, field) in cases {
            let err = LeaseBatch::try_from(input).unwrap_err();
            assert_eq!(err.field(), field, "{err}");
        }
    }

    fn usage() -> Usage {
        Usage {
            plan: PlanId(3),
            key: KeyId(12),
            limit: Some(100),
            used: 10,
            reserved: 50,
            remaining: Some(40),
            window: Window {
                start: Timestamp(1000),
                end: Timestamp(9000),
            },
        }
    }

    // Property: each lease result goes out as its own oneof case with its details.
    // Set-up: a grant, a settle with a refused renewal, a denial and a failure.
    // Pass: the lease fields, the denial reason, and the failure's gRPC code and message.
    #[test]
    fn lease_results_out() {
        use v1::lease_result::Result as R;
        let lease = Lease {
            id: LeaseId(9),
            gateway: GatewayId::new("gw-1").unwrap(),
            plan: PlanId(3),
            key: KeyId(12),
            granted: 50,
            window: usage().window,
            expires_at: Timestamp(3000),
        };
        let granted = v1::LeaseResult::from(LeaseResult::Granted {
            lease,
            usage: usage(),
        });
        let Some(R::Granted(g)) = granted.result else {
            panic!("expected granted, got {granted:?}");
        };
        assert_eq!(
            g.lease,
            Some(v1::Lease {
                lease_id: "l9".into(),
                plan_id: "p3".into(),
                key_id: "k12".into(),
                granted: 50,
                period_start: 1000,
                reset_at: 9000,
                expires_at: 3000,
            })
        );
        assert_eq!(g.usage.map(|u| u.reserved), Some(50));

        let settled = v1::LeaseResult::from(LeaseResult::Settled {
            usage: usage(),
            denial: Some(Denial::QuotaExceeded {
                plan: PlanId(3),
                reset_at: Timestamp(9000),
            }),
        });
        let Some(R::Settled(s)) = settled.result else {
            panic!("expected settled, got {settled:?}");
        };
        let denial = s.denial.unwrap();
        assert_eq!(denial.reason, v1::DenialReason::QuotaExceeded as i32);
        assert_eq!((denial.plan_id.as_str(), denial.reset_at), ("p3", 9000));

        let denied = v1::LeaseResult::from(LeaseResult::Denied {
            denial: Denial::Disabled,
        });
        assert!(matches!(
            denied.result,
            Some(R::Denied(v1::Denial { reason, .. })) if reason == v1::DenialReason::Disabled as i32
        ));

        let failed = v1::LeaseResult::from(LeaseResult::Failed {
            error: ApplyError::not_found(Entity::Lease, LeaseId(4)),
        });
        let Some(R::Failed(f)) = failed.result else {
            panic!("expected failed, got {failed:?}");
        };
        assert_eq!(f.code, tonic::Code::NotFound as i32);
        assert_eq!(f.message, "lease l4 not found");
    }

    // Property: a looked-up key tells whether the hash is current or previous, and never
    // carries a hash.
    // Set-up: a key with a current and a previous secret; look up by each.
    // Pass: hash_valid_until 0, then the grace end; no hash hex in either message.
    #[test]
    fn gateway_keys() {
        let current = Secret::generate().unwrap();
        let old = Secret::generate().unwrap();
        let key = ApiKey {
            id: KeyId(12),
            spec: KeySpec::named(Name::new("alice").unwrap()),
            secret: SecretDigest::of(&current),
            previous: Some(PreviousSecret {
                hash: old.hash(),
                valid_until: Timestamp(777),
            }),
            imported: false,
            created_at: Timestamp(1),
            updated_at: Timestamp(1),
        };
        let plans = [Association {
            plan: PlanId(3),
            key: KeyId(12),
            extra_per_period: Extra::default(),
            attached_at: Timestamp(1),
        }];
        let by_current = gateway_key(&key, &current.hash(), &plans);
        assert_eq!(by_current.hash_valid_until, 0);
        assert_eq!(by_current.plans.len(), 1);
        assert_eq!(by_current.key.as_ref().map(|k| k.id.as_str()), Some("k12"));
        let by_old = gateway_key(&key, &old.hash(), &plans);
        assert_eq!(by_old.hash_valid_until, 777);
        let shown = format!("{by_current:?}{by_old:?}");
        assert!(!shown.contains(&current.hash().to_hex()[..16]));
        assert!(!shown.contains(&old.hash().to_hex()[..16]));

        assert_eq!(secret_hash(&[5; 32]), Ok(SecretHash([5; 32])));
        assert_eq!(secret_hash(&[5; 31]).unwrap_err().field(), "secret_hash");
    }
}
