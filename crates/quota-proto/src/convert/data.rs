//! The direct increment of the Data service: [`IncrementCall`] in, [`IncrementResult`] out,
//! and denials (shared with the gateway service).

use crate::convert::plan::route;
use crate::convert::selector::{Selector, key_id};
use crate::convert::{prefixed, request_id};
use crate::v1;
use quota_core::limits::MAX_IMPORTED_SECRET_LEN;
use quota_core::{
    ApiStage, Cost, Denial, IncrementResult, KeyRef, Name, PlanId, RequestId, Route, SecretHash,
    Target, ValidationError,
};

/// What an increment counts against, before a plan name is resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IncrementTarget {
    /// One plan; the server resolves a name into `quota_core::Target::Plan`.
    Plan(Selector<PlanId>),
    /// Every plan of the key covering `stage` (`quota_core::Target::Stage`); `route` is
    /// for per-route throttles, which the server enforces outside the log.
    Stage {
        stage: ApiStage,
        route: Option<Route>,
    },
}

impl IncrementTarget {
    /// The state machine's target, once a plan name is resolved with `plan_by_name`;
    /// `None` when no plan has that name. The route is dropped: throttles are not in the log.
    pub fn into_target(self, plan_by_name: impl FnOnce(&Name) -> Option<PlanId>) -> Option<Target> {
        match self {
            IncrementTarget::Plan(plan) => plan.resolve(plan_by_name).map(Target::Plan),
            IncrementTarget::Stage { stage, .. } => Some(Target::Stage(stage)),
        }
    }
}

/// A validated Increment request. The presented secret, if any, has already been hashed
/// and dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncrementCall {
    pub request_id: Option<RequestId>,
    pub key: KeyRef,
    pub target: IncrementTarget,
    pub cost: Cost,
}

/// A request's cost: 0 means 1; at most `quota_core::limits::MAX_COST`.
pub fn cost(value: u64) -> Result<Cost, ValidationError> {
    match value {
        0 => Ok(Cost::ONE),
        v => Cost::new(v),
    }
}

/// A key named by its presented secret (field `secret`): only its SHA-256 is kept.
pub fn secret_key_ref(secret: &str) -> Result<KeyRef, ValidationError> {
    if secret.is_empty() {
        return Err(ValidationError::empty("secret"));
    }
    if secret.len() > MAX_IMPORTED_SECRET_LEN {
        // No key can have a longer secret; refusing it bounds the work of hashing.
        return Err(ValidationError::too_long(
            "secret",
            secret.len(),
            MAX_IMPORTED_SECRET_LEN,
        ));
    }
    Ok(KeyRef::Hash(SecretHash::of(secret.as_bytes())))
}

impl TryFrom<v1::RouteTarget> for IncrementTarget {
    type Error = ValidationError;

    /// Fields: `api`, `stage`, `route`.
    fn try_from(value: v1::RouteTarget) -> Result<Self, ValidationError> {
        Ok(IncrementTarget::Stage {
            stage: ApiStage::new(value.api, value.stage)?,
            route: route("route", value.route)?,
        })
    }
}

impl TryFrom<v1::IncrementRequest> for IncrementCall {
    type Error = ValidationError;

    /// Fields: `key` (neither given), `secret`, `key_id`, `target` (neither given),
    /// `plan.*`, `route.api`, `route.stage`, `route.route`, `cost`, `request_id`.
    fn try_from(req: v1::IncrementRequest) -> Result<Self, ValidationError> {
        use v1::increment_request::{Key, Target};
        let key = match req.key {
            Some(Key::Secret(secret)) => secret_key_ref(&secret)?,
            Some(Key::KeyId(id)) => KeyRef::Id(key_id("key_id", &id)?),
            None => {
                return Err(ValidationError::invalid(
                    "key",
                    "set either `secret` or `key_id`",
                ));
            }
        };
        let target = match req.target {
            Some(Target::Plan(plan)) => {
                IncrementTarget::Plan(Selector::try_from(plan).map_err(prefixed("plan"))?)
            }
            Some(Target::Route(route)) => {
                IncrementTarget::try_from(route).map_err(prefixed("route"))?
            }
            None => {
                return Err(ValidationError::invalid(
                    "target",
                    "set either `plan` or `route`",
                ));
            }
        };
        Ok(IncrementCall {
            request_id: request_id(&req.request_id)?,
            key,
            target,
            cost: cost(req.cost)?,
        })
    }
}

impl From<&Denial> for v1::DenialReason {
    fn from(d: &Denial) -> Self {
        match d {
            Denial::UnknownKey => v1::DenialReason::UnknownKey,
            Denial::Disabled => v1::DenialReason::Disabled,
            Denial::Expired => v1::DenialReason::Expired,
            Denial::NotCovered => v1::DenialReason::NotCovered,
            Denial::QuotaExceeded { .. } => v1::DenialReason::QuotaExceeded,
        }
    }
}

impl From<&Denial> for v1::Denial {
    fn from(d: &Denial) -> Self {
        let (plan_id, reset_at) = match d {
            Denial::QuotaExceeded { plan, reset_at } => (plan.to_string(), reset_at.as_millis()),
            _ => (String::new(), 0),
        };
        v1::Denial {
            reason: v1::DenialReason::from(d).into(),
            plan_id,
            reset_at,
            retry_after_ms: 0,
        }
    }
}

impl From<Denial> for v1::Denial {
    fn from(d: Denial) -> Self {
        v1::Denial::from(&d)
    }
}

impl From<IncrementResult> for v1::IncrementResponse {
    /// The top-level figures describe the plan that refused (quota exceeded) or else the
    /// tightest plan; every plan's usage follows, in plan id order.
    fn from(r: IncrementResult) -> Self {
        let refusing = match &r.denial {
            Some(Denial::QuotaExceeded { plan, .. }) => r.usage.iter().find(|u| u.plan == *plan),
            _ => None,
        };
        let shown = refusing.or_else(|| r.tightest()).copied();
        let denial = r.denial.as_ref().map(v1::Denial::from);
        let mut usage: Vec<v1::Usage> = r.usage.iter().map(v1::Usage::from).collect();
        usage.sort_by_key(|u| u.plan_id.parse::<PlanId>().map_or(u64::MAX, |p| p.0));
        v1::IncrementResponse {
            allowed: r.denial.is_none(),
            reason: denial.as_ref().map_or(0, |d| d.reason),
            key_id: r.key.map(|k| k.to_string()).unwrap_or_default(),
            used: shown.map_or(0, |u| u.used),
            remaining: shown.and_then(|u| u.remaining),
            limit: shown.and_then(|u| u.limit),
            reset_at: match &denial {
                Some(d) if d.reset_at != 0 => d.reset_at,
                _ => shown.map_or(0, |u| u.reset_at().as_millis()),
            },
            denied_plan_id: denial.map(|d| d.plan_id).unwrap_or_default(),
            retry_after_ms: 0,
            usage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quota_core::limits::MAX_COST;
    use quota_core::{KeyId, Timestamp, Usage, Window};
    use v1::increment_request::{Key, Target};

    fn route_target(api: &str, stage: &str, route: &str) -> Option<Target> {
        Some(Target::Route(v1::RouteTarget {
            api: api.into(),
            stage: stage.into(),
            route: route.into(),
        }))
    }

    fn request() -> v1::IncrementRequest {
        v1::IncrementRequest {
            key: Some(Key::Secret("qdk_0123456789abcdefghij".into())),
            target: route_target("orders", "prod", "GET /orders/{id}"),
            cost: 3,
            request_id: vec![7; 16],
        }
    }

    // Property: a valid increment converts, hashing the secret and keeping the target.
    // Set-up: by secret and stage+route, by key id and plan name, with cost 0.
    // Pass: the secret's SHA-256, the stage and route, the plan selector, cost 1 for 0,
    // and the state machine's target once the plan name is resolved.
    #[test]
    fn increment_in() {
        let call = IncrementCall::try_from(request()).unwrap();
        assert_eq!(
            call.key,
            KeyRef::Hash(SecretHash::of(b"qdk_0123456789abcdefghij"))
        );
        assert_eq!(
            call.target,
            IncrementTarget::Stage {
                stage: ApiStage::new("orders", "prod").unwrap(),
                route: Some(Route::new("GET /orders/{id}").unwrap()),
            }
        );
        assert_eq!(call.cost.get(), 3);
        assert_eq!(
            call.request_id,
            Some(RequestId(u128::from_be_bytes([7; 16])))
        );

        let by_id = IncrementCall::try_from(v1::IncrementRequest {
            key: Some(Key::KeyId("k12".into())),
            target: Some(Target::Plan(v1::PlanSelector {
                by: Some(v1::plan_selector::By::Name("gold".into())),
            })),
            cost: 0,
            request_id: Vec::new(),
        })
        .unwrap();
        assert_eq!(by_id.key, KeyRef::Id(KeyId(12)));
        assert!(matches!(
            by_id.target,
            IncrementTarget::Plan(Selector::Name(_))
        ));
        assert_eq!(by_id.cost, Cost::ONE);
        assert_eq!(by_id.request_id, None);
    }

    // Property: every invalid increment field is refused and named.
    // Set-up: one broken field per case.
    // Pass: the error names that field.
    #[test]
    fn bad_increment_fields_are_named() {
        let plan_by = |by| Some(Target::Plan(v1::PlanSelector { by }));
        let cases: Vec<(v1::IncrementRequest, &str)> = vec![
            (
                v1::IncrementRequest {
                    key: None,
                    ..request()
                },
                "key",
            ),
            (
                v1::IncrementRequest {
                    key: Some(Key::Secret(String::new())),
                    ..request()
                },
                "secret",
            ),
            (
                v1::IncrementRequest {
                    key: Some(Key::Secret("x".repeat(MAX_IMPORTED_SECRET_LEN + 1))),
                    ..request()
                },
                "secret",
            ),
            (
                v1::IncrementRequest {
                    key: Some(Key::KeyId("p1".into())),
                    ..request()
                },
                "key_id",
            ),
            (
                v1::IncrementRequest {
                    target: None,
                    ..request()
                },
                "target",
            ),
            (
                v1::IncrementRequest {
                    target: plan_by(None),
                    ..request()
                },
                "plan",
            ),
            (
                v1::IncrementRequest {
                    target: plan_by(Some(v1::plan_selector::By::Id("k1".into()))),
                    ..request()
                },
                "plan.id",
            ),
            (
                v1::IncrementRequest {
                    target: route_target("", "prod", ""),
                    ..request()
                },
                "route.api",
            ),
            (
                v1::IncrementRequest {
                    target: route_target("a", "p/q", ""),
                    ..request()
                },
                "route.stage",
            ),
            (
                v1::IncrementRequest {
                    target: route_target("a", "p", "GET x"),
                    ..request()
                },
                "route.route",
            ),
            (
                v1::IncrementRequest {
                    cost: MAX_COST + 1,
                    ..request()
                },
                "cost",
            ),
            (
                v1::IncrementRequest {
                    request_id: vec![1; 3],
                    ..request()
                },
                "request_id",
            ),
        ];
        for (input, field) in cases {
            let err = IncrementCall::try_from(input).unwrap_err();
            assert_eq!(err.field(), field, "{err}");
        }
    }

    fn usage(plan: u64, remaining: u64) -> Usage {
        Usage {
            plan: PlanId(plan),
            key: KeyId(12),
            limit: Some(100),
            used: 100 - remaining,
            reserved: 0,
            remaining: Some(remaining),
            window: Window {
                start: Timestamp(plan * 10),
                end: Timestamp(plan * 1000),
            },
        }
    }

    // Property: an admitted increment shows the tightest plan and every plan's usage.
    // Set-up: two plans, p5 with 60 remaining and p2 with 10.
    // Pass: allowed, no reason, p2's figures on top, usage sorted by plan id.
    #[test]
    fn admitted_increment_out() {
        let wire = v1::IncrementResponse::from(IncrementResult {
            key: Some(KeyId(12)),
            denial: None,
            usage: vec![usage(5, 60), usage(2, 10)],
        });
        assert!(wire.allowed);
        assert_eq!(wire.reason, v1::DenialReason::Unspecified as i32);
        assert_eq!(wire.key_id, "k12");
        assert_eq!(
            (wire.used, wire.remaining, wire.limit),
            (90, Some(10), Some(100))
        );
        assert_eq!(wire.reset_at, 2000);
        assert_eq!(wire.denied_plan_id, "");
        let plans: Vec<&str> = wire.usage.iter().map(|u| u.plan_id.as_str()).collect();
        assert_eq!(plans, ["p2", "p5"]);
    }

    // Property: a quota denial shows the refusing plan, its reset time and the reason;
    // a denial without plans shows zeros.
    // Set-up: p5 refuses though p2 is tighter; then an unknown key.
    // Pass: p5's figures and reset, reason QUOTA_EXCEEDED; then UNKNOWN_KEY and zeros.
    #[test]
    fn denied_increment_out() {
        let wire = v1::IncrementResponse::from(IncrementResult {
            key: Some(KeyId(12)),
            denial: Some(Denial::QuotaExceeded {
                plan: PlanId(5),
                reset_at: Timestamp(5000),
            }),
            usage: vec![usage(2, 0), usage(5, 1)],
        });
        assert!(!wire.allowed);
        assert_eq!(wire.reason, v1::DenialReason::QuotaExceeded as i32);
        assert_eq!(wire.denied_plan_id, "p5");
        assert_eq!(wire.remaining, Some(1));
        assert_eq!(wire.reset_at, 5000);

        let unknown = v1::IncrementResponse::from(IncrementResult {
            key: None,
            denial: Some(Denial::UnknownKey),
            usage: Vec::new(),
        });
        assert!(!unknown.allowed);
        assert_eq!(unknown.reason, v1::DenialReason::UnknownKey as i32);
        assert_eq!(unknown.key_id, "");
        assert_eq!(
            (unknown.used, unknown.remaining, unknown.reset_at),
            (0, None, 0)
        );
    }

    // Property: every denial maps to its own reason.
    // Set-up: each Denial variant. Pass: the matching DenialReason.
    #[test]
    fn denial_reasons() {
        let cases = [
            (Denial::UnknownKey, v1::DenialReason::UnknownKey),
            (Denial::Disabled, v1::DenialReason::Disabled),
            (Denial::Expired, v1::DenialReason::Expired),
            (Denial::NotCovered, v1::DenialReason::NotCovered),
            (
                Denial::QuotaExceeded {
                    plan: PlanId(1),
                    reset_at: Timestamp(9),
                },
                v1::DenialReason::QuotaExceeded,
            ),
        ];
        for (denial, reason) in cases {
            assert_eq!(v1::DenialReason::from(&denial), reason);
            assert_eq!(v1::Denial::from(&denial).reason, reason as i32);
        }
    }
}
