//! Usage plans: throttles, quotas, API stages and routes in; [`UsagePlan`] out.

use crate::convert::{map_field, optional, prefix_field, rename_field};
use crate::v1;
use quota_core::{
    ApiStage, Description, Name, PeriodUnit, PlanSpec, QuotaSpec, RawPlanSpec, RawQuota, Route,
    Throttle, UsagePlan, ValidationError, Weekday,
};
use std::collections::{BTreeMap, BTreeSet};

/// `quota_core` names throttle and quota fields from the plan (`throttle.rate_limit`,
/// `quota.limit`); these conversions name them from their own message (`rate_limit`).
fn strip_prefix(err: ValidationError, prefix: &str) -> ValidationError {
    map_field(err, |field| {
        field.strip_prefix(prefix).unwrap_or(field).to_owned()
    })
}

impl TryFrom<v1::Throttle> for Throttle {
    type Error = ValidationError;

    /// Fields: `rate_limit`, `burst_limit`.
    fn try_from(value: v1::Throttle) -> Result<Self, ValidationError> {
        Throttle::new(value.rate_limit, value.burst_limit).map_err(|e| strip_prefix(e, "throttle."))
    }
}

impl From<Throttle> for v1::Throttle {
    fn from(t: Throttle) -> Self {
        v1::Throttle {
            rate_limit: t.rate_per_sec(),
            burst_limit: t.burst(),
        }
    }
}

/// A wire period; unspecified or unknown values are refused (naming `period`).
pub fn period_unit(value: i32) -> Result<PeriodUnit, ValidationError> {
    match v1::Period::try_from(value) {
        Ok(v1::Period::Day) => Ok(PeriodUnit::Day),
        Ok(v1::Period::Week) => Ok(PeriodUnit::Week),
        Ok(v1::Period::Month) => Ok(PeriodUnit::Month),
        Ok(v1::Period::Unspecified) => Err(ValidationError::invalid(
            "period",
            "required: one of DAY, WEEK, MONTH",
        )),
        Err(_) => Err(ValidationError::invalid(
            "period",
            format!("{value} is not one of DAY, WEEK, MONTH"),
        )),
    }
}

impl From<PeriodUnit> for v1::Period {
    fn from(p: PeriodUnit) -> Self {
        match p {
            PeriodUnit::Day => v1::Period::Day,
            PeriodUnit::Week => v1::Period::Week,
            PeriodUnit::Month => v1::Period::Month,
        }
    }
}

/// A wire weekday; unspecified means Monday, unknown values are refused (naming
/// `week_start`).
pub fn weekday(value: i32) -> Result<Weekday, ValidationError> {
    match v1::Weekday::try_from(value) {
        Ok(v1::Weekday::Unspecified | v1::Weekday::Monday) => Ok(Weekday::Monday),
        Ok(v1::Weekday::Tuesday) => Ok(Weekday::Tuesday),
        Ok(v1::Weekday::Wednesday) => Ok(Weekday::Wednesday),
        Ok(v1::Weekday::Thursday) => Ok(Weekday::Thursday),
        Ok(v1::Weekday::Friday) => Ok(Weekday::Friday),
        Ok(v1::Weekday::Saturday) => Ok(Weekday::Saturday),
        Ok(v1::Weekday::Sunday) => Ok(Weekday::Sunday),
        Err(_) => Err(ValidationError::invalid(
            "week_start",
            format!("{value} is not a weekday"),
        )),
    }
}

impl From<Weekday> for v1::Weekday {
    fn from(d: Weekday) -> Self {
        match d {
            Weekday::Monday => v1::Weekday::Monday,
            Weekday::Tuesday => v1::Weekday::Tuesday,
            Weekday::Wednesday => v1::Weekday::Wednesday,
            Weekday::Thursday => v1::Weekday::Thursday,
            Weekday::Friday => v1::Weekday::Friday,
            Weekday::Saturday => v1::Weekday::Saturday,
            Weekday::Sunday => v1::Weekday::Sunday,
        }
    }
}

impl TryFrom<v1::Quota> for RawQuota {
    type Error = ValidationError;

    /// Reads the enums and defaults (`month_start_day` 0 = 1); the rules on values are
    /// [`QuotaSpec`]'s.
    fn try_from(value: v1::Quota) -> Result<Self, ValidationError> {
        let month_start_day = match value.month_start_day {
            0 => 1,
            day => u8::try_from(day)
                .map_err(|_| ValidationError::out_of_range("month_start_day", day, 1, 28))?,
        };
        Ok(RawQuota {
            limit: value.limit,
            period: period_unit(value.period)?,
            offset: value.offset,
            week_start: weekday(value.week_start)?,
            month_start_day,
        })
    }
}

impl TryFrom<v1::Quota> for QuotaSpec {
    type Error = ValidationError;

    /// Fields: `limit`, `period`, `offset`, `week_start`, `month_start_day`.
    fn try_from(value: v1::Quota) -> Result<Self, ValidationError> {
        QuotaSpec::try_from(RawQuota::try_from(value)?).map_err(|e| strip_prefix(e, "quota."))
    }
}

impl From<QuotaSpec> for v1::Quota {
    fn from(q: QuotaSpec) -> Self {
        v1::Quota {
            limit: q.limit(),
            period: v1::Period::from(q.period()).into(),
            offset: q.offset(),
            week_start: v1::Weekday::from(q.week_start()).into(),
            month_start_day: u32::from(q.month_start_day()),
        }
    }
}

impl TryFrom<v1::ApiStage> for ApiStage {
    type Error = ValidationError;

    /// Fields: `api`, `stage`.
    fn try_from(value: v1::ApiStage) -> Result<Self, ValidationError> {
        ApiStage::new(value.api, value.stage)
    }
}

impl From<ApiStage> for v1::ApiStage {
    fn from(s: ApiStage) -> Self {
        v1::ApiStage {
            api: s.api().to_owned(),
            stage: s.stage().to_owned(),
        }
    }
}

impl From<&ApiStage> for v1::ApiStage {
    fn from(s: &ApiStage) -> Self {
        v1::ApiStage::from(s.clone())
    }
}

/// An optional route in a string field: empty means none; otherwise `METHOD /path`.
pub fn route(field: &str, value: String) -> Result<Option<Route>, ValidationError> {
    if value.is_empty() {
        return Ok(None);
    }
    Route::new(value)
        .map(Some)
        .map_err(|e| rename_field(e, field))
}

impl TryFrom<v1::PlanSpec> for PlanSpec {
    type Error = ValidationError;

    /// Fields: `name`, `description`, `throttle.*`, `quota.*`, `stages`, `stages[i].api`,
    /// `stages[i].stage`, `route_throttles` (a bad route, or too many), and
    /// `route_throttles[METHOD /path].*`. Duplicate stages are refused.
    fn try_from(value: v1::PlanSpec) -> Result<Self, ValidationError> {
        let mut stages = BTreeSet::new();
        for (i, stage) in value.stages.into_iter().enumerate() {
            let stage =
                ApiStage::try_from(stage).map_err(|e| prefix_field(e, &format!("stages[{i}]")))?;
            if !stages.insert(stage) {
                return Err(ValidationError::invalid(
                    format!("stages[{i}]"),
                    "duplicate of an earlier stage",
                ));
            }
        }
        let mut route_throttles = BTreeMap::new();
        for (route, throttle) in value.route_throttles {
            let route = Route::new(route).map_err(|e| rename_field(e, "route_throttles"))?;
            let throttle = Throttle::try_from(throttle)
                .map_err(|e| prefix_field(e, &format!("route_throttles[{route}]")))?;
            route_throttles.insert(route, throttle);
        }
        PlanSpec::try_from(RawPlanSpec {
            name: Name::new(value.name)?,
            description: Description::new(value.description)?,
            throttle: optional("throttle", value.throttle)?,
            quota: optional("quota", value.quota)?,
            stages,
            route_throttles,
            safe_rate: value.safe_rate,
        })
    }
}

impl From<&PlanSpec> for v1::PlanSpec {
    fn from(spec: &PlanSpec) -> Self {
        v1::PlanSpec {
            name: spec.name().as_str().to_owned(),
            description: spec.description().as_str().to_owned(),
            throttle: spec.throttle().map(v1::Throttle::from),
            quota: spec.quota().map(v1::Quota::from),
            stages: spec.stages().iter().map(v1::ApiStage::from).collect(),
            route_throttles: spec
                .route_throttles()
                .iter()
                .map(|(r, t)| (r.as_str().to_owned(), v1::Throttle::from(*t)))
                .collect(),
            safe_rate: spec.safe_rate(),
        }
    }
}

impl From<PlanSpec> for v1::PlanSpec {
    fn from(spec: PlanSpec) -> Self {
        v1::PlanSpec::from(&spec)
    }
}

impl From<&UsagePlan> for v1::UsagePlan {
    fn from(plan: &UsagePlan) -> Self {
        v1::UsagePlan {
            id: plan.id.to_string(),
            spec: Some(v1::PlanSpec::from(&plan.spec)),
            created_at: plan.created_at.as_millis(),
            updated_at: plan.updated_at.as_millis(),
        }
    }
}

impl From<UsagePlan> for v1::UsagePlan {
    fn from(plan: UsagePlan) -> Self {
        v1::UsagePlan::from(&plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::required;
    use quota_core::limits::{MAX_QUOTA_LIMIT, MAX_ROUTES_PER_PLAN, MAX_STAGES_PER_PLAN};
    use quota_core::{PlanId, Timestamp};

    fn throttle(rate: f64, burst: u64) -> v1::Throttle {
        v1::Throttle {
            rate_limit: rate,
            burst_limit: burst,
        }
    }

    fn stage(api: &str, stage: &str) -> v1::ApiStage {
        v1::ApiStage {
            api: api.into(),
            stage: stage.into(),
        }
    }

    /// A plan with every field set, in canonical order (stages sorted, explicit enums).
    fn wire_plan() -> v1::PlanSpec {
        v1::PlanSpec {
            name: "gold".into(),
            description: "The gold tier".into(),
            throttle: Some(throttle(100.5, 200)),
            quota: Some(v1::Quota {
                limit: 10_000,
                period: v1::Period::Month.into(),
                offset: 100,
                week_start: v1::Weekday::Sunday.into(),
                month_start_day: 15,
            }),
            stages: vec![stage("orders", "prod"), stage("users", "prod")],
            route_throttles: BTreeMap::from([
                ("GET /users/{id}".into(), throttle(10.0, 20)),
                ("POST /orders".into(), throttle(0.5, 1)),
            ]),
            safe_rate: 2.5,
        }
    }

    // Property: a valid wire PlanSpec survives wire -> domain -> wire unchanged.
    // Set-up: a plan with every field set, in canonical form.
    // Pass: equality after the round trip, and the domain holds the wire values.
    #[test]
    fn plan_spec_round_trip() {
        let spec = PlanSpec::try_from(wire_plan()).unwrap();
        assert_eq!(spec.name().as_str(), "gold");
        let quota = spec.quota().unwrap();
        assert_eq!(
            (quota.limit(), quota.period(), quota.offset()),
            (10_000, PeriodUnit::Month, 100)
        );
        assert_eq!(quota.week_start(), Weekday::Sunday);
        assert_eq!(quota.month_start_day(), 15);
        assert_eq!(spec.throttle().unwrap().burst(), 200);
        assert!(spec.covers(&ApiStage::new("users", "prod").unwrap()));
        assert_eq!(spec.route_throttles().len(), 2);
        assert_eq!(v1::PlanSpec::from(&spec), wire_plan());
    }

    // Property: a minimal plan and a quota with unset enums take the documented defaults.
    // Set-up: a plan with a name and a quota of limit and period only.
    // Pass: no throttle, no stages, weeks on Monday, months on the 1st.
    #[test]
    fn plan_spec_defaults() {
        let spec = PlanSpec::try_from(v1::PlanSpec {
            name: "free".into(),
            quota: Some(v1::Quota {
                limit: 5,
                period: v1::Period::Week.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap();
        assert!(spec.throttle().is_none());
        assert!(spec.stages().is_empty());
        let q = spec.quota().unwrap();
        assert_eq!(q, QuotaSpec::new(5, PeriodUnit::Week).unwrap());
        assert_eq!(q.week_start(), Weekday::Monday);
        assert_eq!(q.month_start_day(), 1);
    }

    // Property: a stored plan goes out with its id, spec and times.
    // Set-up: a UsagePlan from the canonical spec. Pass: the wire values.
    #[test]
    fn usage_plan_out() {
        let plan = UsagePlan {
            id: PlanId(3),
            spec: PlanSpec::try_from(wire_plan()).unwrap(),
            created_at: Timestamp(1),
            updated_at: Timestamp(2),
        };
        let wire = v1::UsagePlan::from(&plan);
        assert_eq!(wire.id, "p3");
        assert_eq!(wire.spec, Some(wire_plan()));
        assert_eq!((wire.created_at, wire.updated_at), (1, 2));
    }

    // Property: every invalid PlanSpec field is refused, named by its path in the request.
    // Set-up: one broken field per case, converted as the `spec` field of a request.
    // Pass: the error names that field.
    #[test]
    fn bad_plan_fields_are_named() {
        let with_quota = |f: fn(&mut v1::Quota)| {
            let mut plan = wire_plan();
            if let Some(q) = plan.quota.as_mut() {
                f(q);
            }
            plan
        };
        let many_stages = (0..=MAX_STAGES_PER_PLAN)
            .map(|i| stage(&format!("api{i}"), "prod"))
            .collect();
        let many_routes = (0..=MAX_ROUTES_PER_PLAN)
            .map(|i| (format!("GET /r{i}"), throttle(1.0, 1)))
            .collect();
        let cases: Vec<(v1::PlanSpec, &str)> = vec![
            (
                v1::PlanSpec {
                    name: String::new(),
                    ..wire_plan()
                },
                "spec.name",
            ),
            (
                v1::PlanSpec {
                    description: "\u{0}".into(),
                    ..wire_plan()
                },
                "spec.description",
            ),
            (
                v1::PlanSpec {
                    throttle: Some(throttle(0.0, 1)),
                    ..wire_plan()
                },
                "spec.throttle.rate_limit",
            ),
            (
                v1::PlanSpec {
                    throttle: Some(throttle(f64::NAN, 1)),
                    ..wire_plan()
                },
                "spec.throttle.rate_limit",
            ),
            (
                v1::PlanSpec {
                    throttle: Some(throttle(1.0, 0)),
                    ..wire_plan()
                },
                "spec.throttle.burst_limit",
            ),
            (with_quota(|q| q.limit = 0), "spec.quota.limit"),
            (
                with_quota(|q| q.limit = MAX_QUOTA_LIMIT + 1),
                "spec.quota.limit",
            ),
            (with_quota(|q| q.period = 0), "spec.quota.period"),
            (with_quota(|q| q.period = 9), "spec.quota.period"),
            (with_quota(|q| q.offset = q.limit), "spec.quota.offset"),
            (with_quota(|q| q.week_start = 8), "spec.quota.week_start"),
            (
                with_quota(|q| q.month_start_day = 29),
                "spec.quota.month_start_day",
            ),
            (
                with_quota(|q| q.month_start_day = 300),
                "spec.quota.month_start_day",
            ),
            (
                v1::PlanSpec {
                    stages: vec![stage("", "prod")],
                    ..wire_plan()
                },
                "spec.stages[0].api",
            ),
            (
                v1::PlanSpec {
                    stages: vec![stage("a", "prod"), stage("b", "pr od")],
                    ..wire_plan()
                },
                "spec.stages[1].stage",
            ),
            (
                v1::PlanSpec {
                    stages: vec![stage("a", "prod"), stage("a", "prod")],
                    ..wire_plan()
                },
                "spec.stages[1]",
            ),
            (
                v1::PlanSpec {
                    stages: many_stages,
                    ..wire_plan()
                },
                "spec.stages",
            ),
            (
                v1::PlanSpec {
                    route_throttles: BTreeMap::from([("FETCH /x".into(), throttle(1.0, 1))]),
                    ..wire_plan()
                },
                "spec.route_throttles",
            ),
            (
                v1::PlanSpec {
                    safe_rate: -1.0,
                    ..wire_plan()
                },
                "spec.safe_rate",
            ),
            (
                v1::PlanSpec {
                    route_throttles: BTreeMap::from([("GET /x".into(), throttle(1.0, 0))]),
                    ..wire_plan()
                },
                "spec.route_throttles[GET /x].burst_limit",
            ),
            (
                v1::PlanSpec {
                    route_throttles: many_routes,
                    ..wire_plan()
                },
                "spec.route_throttles",
            ),
        ];
        for (input, field) in cases {
            let err = required::<_, PlanSpec>("spec", Some(input)).unwrap_err();
            assert_eq!(err.field(), field, "{err}");
        }
    }

    // Property: routes in string fields are optional and validated.
    // Set-up: empty, valid and invalid routes. Pass: None, Some, an error naming the field.
    #[test]
    fn routes() {
        assert_eq!(route("route.route", String::new()), Ok(None));
        assert_eq!(
            route("route.route", "GET /users/{id}".into()),
            Ok(Some(Route::new("GET /users/{id}").unwrap()))
        );
        let err = route("route.route", "GET users".into()).unwrap_err();
        assert_eq!(err.field(), "route.route");
    }
}
