//! Reports of usage a gateway admitted at the plans' safe rates while the cluster was
//! unreachable (`Gateway.ReportOfflineUsage`).
//!
//! The edge checks the shape of a report (ids, the gateway id, the number of items). The
//! range of `used` is checked by the state machine per item, so one bad item fails alone
//! (`OfflineUsageFailed`, INVALID_ARGUMENT) instead of failing the report.

use crate::convert::selector::{key_id, plan_id};
use crate::convert::{prefix_field, rename_field, request_id};
use crate::status::code_of;
use crate::v1;
use quota_core::limits::MAX_OFFLINE_ITEMS_PER_REPORT;
use quota_core::{GatewayId, OfflineResult, OfflineUsage, RequestId, ValidationError};

impl TryFrom<v1::OfflineUsage> for OfflineUsage {
    type Error = ValidationError;

    /// Fields: `plan_id`, `key_id`.
    fn try_from(u: v1::OfflineUsage) -> Result<Self, ValidationError> {
        Ok(OfflineUsage {
            plan: plan_id("plan_id", &u.plan_id)?,
            key: key_id("key_id", &u.key_id)?,
            used: u.used,
        })
    }
}

impl From<OfflineUsage> for v1::OfflineUsage {
    fn from(u: OfflineUsage) -> Self {
        v1::OfflineUsage {
            plan_id: u.plan.to_string(),
            key_id: u.key.to_string(),
            used: u.used,
        }
    }
}

/// A validated ReportOfflineUsage request: what `quota_core::Command::ReportOffline` needs,
/// and the request id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfflineReport {
    pub request_id: Option<RequestId>,
    pub gateway: GatewayId,
    pub usage: Vec<OfflineUsage>,
}

impl TryFrom<v1::ReportOfflineUsageRequest> for OfflineReport {
    type Error = ValidationError;

    /// Fields: `request_id`, `gateway_id`, `usage` (too many), `usage[i].plan_id`,
    /// `usage[i].key_id`.
    fn try_from(req: v1::ReportOfflineUsageRequest) -> Result<Self, ValidationError> {
        if req.usage.len() > MAX_OFFLINE_ITEMS_PER_REPORT {
            return Err(ValidationError::too_many(
                "usage",
                req.usage.len(),
                MAX_OFFLINE_ITEMS_PER_REPORT,
            ));
        }
        let gateway = GatewayId::new(req.gateway_id).map_err(|e| rename_field(e, "gateway_id"))?;
        let usage = req
            .usage
            .into_iter()
            .enumerate()
            .map(|(i, u)| {
                OfflineUsage::try_from(u).map_err(|e| prefix_field(e, &format!("usage[{i}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(OfflineReport {
            request_id: request_id(&req.request_id)?,
            gateway,
            usage,
        })
    }
}

impl From<OfflineResult> for v1::OfflineUsageResult {
    fn from(r: OfflineResult) -> Self {
        use v1::offline_usage_result::Result as R;
        let result = match r {
            Ok(usage) => R::Usage(v1::Usage::from(usage)),
            Err(error) => R::Failed(v1::OfflineUsageFailed {
                code: code_of(&error) as i32,
                message: error.to_string(),
            }),
        };
        v1::OfflineUsageResult {
            result: Some(result),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quota_core::{ApplyError, Entity, KeyId, PlanId, Timestamp, Usage, Window};
    use tonic::Code;

    fn item(plan: &str, key: &str, used: u64) -> v1::OfflineUsage {
        v1::OfflineUsage {
            plan_id: plan.into(),
            key_id: key.into(),
            used,
        }
    }

    fn report(usage: Vec<v1::OfflineUsage>) -> v1::ReportOfflineUsageRequest {
        v1::ReportOfflineUsageRequest {
            request_id: vec![7; 16],
            gateway_id: "gw-1".into(),
            usage,
        }
    }

    // Property: a report survives wire -> domain -> wire unchanged, request id included.
    // Set-up: two items. Pass: the domain items hold the wire values and convert back equal.
    #[test]
    fn reports_round_trip() {
        let items = vec![item("p3", "k12", 5), item("p4", "k1", 0)];
        let r = OfflineReport::try_from(report(items.clone())).unwrap();
        assert_eq!(r.gateway.as_str(), "gw-1");
        assert_eq!(r.request_id, Some(RequestId(u128::from_be_bytes([7; 16]))));
        assert_eq!(
            r.usage[0],
            OfflineUsage {
                plan: PlanId(3),
                key: KeyId(12),
                used: 5
            }
        );
        // `used` 0 passes the edge: the state machine refuses that item alone.
        assert_eq!(r.usage[1].used, 0);
        let back: Vec<v1::OfflineUsage> = r.usage.into_iter().map(v1::OfflineUsage::from).collect();
        assert_eq!(back, items);
    }

    // Property: malformed reports are refused with the path of the bad field, and the
    // number of items is bounded.
    // Set-up: one broken field per case. Pass: the error names that field.
    #[test]
    fn bad_report_fields_are_named() {
        let cases: Vec<(v1::ReportOfflineUsageRequest, &str)> = vec![
            (
                v1::ReportOfflineUsageRequest {
                    gateway_id: String::new(),
                    ..report(vec![])
                },
                "gateway_id",
            ),
            (
                v1::ReportOfflineUsageRequest {
                    request_id: vec![1; 3],
                    ..report(vec![])
                },
                "request_id",
            ),
            (
                report(vec![item("p1", "k1", 1), item("k1", "k1", 1)]),
                "usage[1].plan_id",
            ),
            (report(vec![item("p1", "p1", 1)]), "usage[0].key_id"),
            (
                report(vec![item("p1", "k1", 1); MAX_OFFLINE_ITEMS_PER_REPORT + 1]),
                "usage",
            ),
        ];
        for (input, field) in cases {
            let err = OfflineReport::try_from(input).unwrap_err();
            assert_eq!(err.field(), field, "{err}");
        }
    }

    // Property: an accepted item goes out as the usage after it; a refused one as its gRPC
    // code and message.
    // Set-up: one Ok usage past its limit, an Invalid and a NotFound refusal.
    // Pass: the usage fields, and the codes and messages.
    #[test]
    fn results_out() {
        use v1::offline_usage_result::Result as R;
        let usage = Usage {
            plan: PlanId(3),
            key: KeyId(12),
            limit: Some(10),
            used: 13,
            reserved: 0,
            remaining: Some(0),
            window: Window {
                start: Timestamp(1000),
                end: Timestamp(9000),
            },
        };
        let ok = v1::OfflineUsageResult::from(Ok(usage));
        let Some(R::Usage(u)) = ok.result else {
            panic!("expected usage, got {ok:?}");
        };
        assert_eq!((u.used, u.limit, u.remaining), (13, Some(10), Some(0)));

        let refused = v1::OfflineUsageResult::from(Err(ApplyError::Invalid(
            quota_core::ValidationError::out_of_range("used", 0, 1, 10),
        )));
        let Some(R::Failed(f)) = refused.result else {
            panic!("expected failed, got {refused:?}");
        };
        assert_eq!(f.code, Code::InvalidArgument as i32);
        assert!(f.message.contains("used"), "{}", f.message);

        let missing =
            v1::OfflineUsageResult::from(Err(ApplyError::not_found(Entity::Key, KeyId(12))));
        assert!(matches!(
            missing.result,
            Some(R::Failed(v1::OfflineUsageFailed { code, .. })) if code == Code::NotFound as i32
        ));
    }
}
