//! Usage: counters and daily reports out; report queries, grants and extras in.

use crate::convert::selector::Selector;
use crate::convert::{Page, optional, rename_field, required};
use crate::v1;
use quota_core::limits::MAX_QUOTA_LIMIT;
use quota_core::{Date, DayReport, Extra, KeyId, PlanId, Usage, ValidationError};

/// Longest usage report, in days (inclusive range).
pub const MAX_REPORT_DAYS: i64 = 366;

impl From<Usage> for v1::Usage {
    fn from(u: Usage) -> Self {
        v1::Usage {
            plan_id: u.plan.to_string(),
            key_id: u.key.to_string(),
            limit: u.limit,
            used: u.used,
            reserved: u.reserved,
            remaining: u.remaining,
            period_start: u.window.start.as_millis(),
            reset_at: u.reset_at().as_millis(),
        }
    }
}

impl From<&Usage> for v1::Usage {
    fn from(u: &Usage) -> Self {
        v1::Usage::from(*u)
    }
}

impl From<DayReport> for v1::DayUsage {
    fn from(d: DayReport) -> Self {
        v1::DayUsage {
            date: d.date.to_string(),
            used: d.used,
            remaining: d.remaining,
        }
    }
}

/// Extra quota in a field named `field` (`extra_per_period`, `extra`): 0 to 2^50.
pub fn extra(field: &str, value: u64) -> Result<Extra, ValidationError> {
    Extra::new(value).map_err(|e| rename_field(e, field))
}

/// The remaining quota of a SetRemaining request (`remaining`): 0 to 2^50.
pub fn remaining(value: u64) -> Result<u64, ValidationError> {
    if value > MAX_QUOTA_LIMIT {
        return Err(ValidationError::out_of_range(
            "remaining",
            value,
            0,
            MAX_QUOTA_LIMIT,
        ));
    }
    Ok(value)
}

/// A date field, `YYYY-MM-DD`.
pub fn date(field: &str, value: &str) -> Result<Date, ValidationError> {
    value
        .parse::<Date>()
        .map_err(|reason| ValidationError::invalid(field, reason))
}

/// A validated GetUsage request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageQuery {
    pub plan: Selector<PlanId>,
    /// One key, or every key of the plan (paged by `page`).
    pub key: Option<Selector<KeyId>>,
    /// First day, inclusive.
    pub from: Date,
    /// Last day, inclusive; `from <= to`, at most [`MAX_REPORT_DAYS`] days in all.
    pub to: Date,
    /// When `key` is `None`: which keys of the plan.
    pub page: Page<KeyId>,
    pub allow_stale: bool,
}

impl TryFrom<v1::GetUsageRequest> for UsageQuery {
    type Error = ValidationError;

    /// Fields: `plan`, `key`, `start_date`, `end_date`, `page_token`.
    fn try_from(req: v1::GetUsageRequest) -> Result<Self, ValidationError> {
        let plan = required("plan", req.plan)?;
        let key = optional("key", req.key)?;
        let from = date("start_date", &req.start_date)?;
        let to = date("end_date", &req.end_date)?;
        let days = to.day_number() - from.day_number() + 1;
        if days < 1 {
            return Err(ValidationError::invalid(
                "end_date",
                format!("{to} is before start_date {from}"),
            ));
        }
        if days > MAX_REPORT_DAYS {
            return Err(ValidationError::out_of_range(
                "end_date",
                format!("{days} days after start_date"),
                1,
                MAX_REPORT_DAYS,
            ));
        }
        let page = Page::parse(&req.page_token, req.page_size)?;
        Ok(UsageQuery {
            plan,
            key,
            from,
            to,
            page,
            allow_stale: req.allow_stale,
        })
    }
}

/// The extra of a GrantUsage request (`extra`): 0 to 2^50.
pub fn grant(value: u64) -> Result<Extra, ValidationError> {
    extra("extra", value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quota_core::limits::MAX_EXTRA;
    use quota_core::{Timestamp, Window};

    fn query() -> v1::GetUsageRequest {
        v1::GetUsageRequest {
            plan: Some(v1::PlanSelector {
                by: Some(v1::plan_selector::By::Id("p3".into())),
            }),
            key: None,
            start_date: "2024-02-01".into(),
            end_date: "2024-02-29".into(),
            page_token: "k5".into(),
            page_size: 10,
            allow_stale: true,
        }
    }

    // Property: a valid usage query converts to the same plan, range and page.
    // Set-up: plan p3, every key from after k5, February 2024.
    // Pass: the UsageQuery holds those values.
    #[test]
    fn usage_query_in() {
        let q = UsageQuery::try_from(query()).unwrap();
        assert_eq!(q.plan, Selector::Id(PlanId(3)));
        assert_eq!(q.key, None);
        assert_eq!(q.from, Date::new(2024, 2, 1).unwrap());
        assert_eq!(q.to, Date::new(2024, 2, 29).unwrap());
        assert_eq!(q.page.after, Some(KeyId(5)));
        assert_eq!(q.page.size, 10);
        assert!(q.allow_stale);
        let one_day = v1::GetUsageRequest {
            end_date: "2024-02-01".into(),
            key: Some(v1::KeySelector {
                by: Some(v1::key_selector::By::Name("alice".into())),
            }),
            ..query()
        };
        let q = UsageQuery::try_from(one_day).unwrap();
        assert_eq!(q.from, q.to);
        assert!(q.key.is_some());
    }

    // Property: every invalid usage query field is refused and named.
    // Set-up: one broken field per case.
    // Pass: the error names that field.
    #[test]
    fn bad_usage_query_fields_are_named() {
        let cases: Vec<(v1::GetUsageRequest, &str)> = vec![
            (
                v1::GetUsageRequest {
                    plan: None,
                    ..query()
                },
                "plan",
            ),
            (
                v1::GetUsageRequest {
                    key: Some(v1::KeySelector {
                        by: Some(v1::key_selector::By::Id("bad".into())),
                    }),
                    ..query()
                },
                "key.id",
            ),
            (
                v1::GetUsageRequest {
                    start_date: "2024-2-1".into(),
                    ..query()
                },
                "start_date",
            ),
            (
                v1::GetUsageRequest {
                    end_date: "2023-02-29".into(),
                    ..query()
                },
                "end_date",
            ),
            (
                v1::GetUsageRequest {
                    end_date: "2024-01-31".into(),
                    ..query()
                },
                "end_date",
            ),
            (
                v1::GetUsageRequest {
                    end_date: "2025-02-01".into(),
                    ..query()
                },
                "end_date",
            ),
            (
                v1::GetUsageRequest {
                    page_token: "zz".into(),
                    ..query()
                },
                "page_token",
            ),
        ];
        for (input, field) in cases {
            let err = UsageQuery::try_from(input).unwrap_err();
            assert_eq!(err.field(), field, "{err}");
        }
    }

    // Property: usage and day reports go out field by field, with the period's bounds.
    // Set-up: a usage with and one without a quota, and a day report.
    // Pass: the wire values; absent limit and remaining stay absent.
    #[test]
    fn usage_out() {
        let window = Window {
            start: Timestamp(1000),
            end: Timestamp(2000),
        };
        let u = Usage {
            plan: PlanId(3),
            key: KeyId(12),
            limit: Some(100),
            used: 40,
            reserved: 10,
            remaining: Some(50),
            window,
        };
        assert_eq!(
            v1::Usage::from(u),
            v1::Usage {
                plan_id: "p3".into(),
                key_id: "k12".into(),
                limit: Some(100),
                used: 40,
                reserved: 10,
                remaining: Some(50),
                period_start: 1000,
                reset_at: 2000,
            }
        );
        let unlimited = v1::Usage::from(Usage {
            limit: None,
            remaining: None,
            ..u
        });
        assert_eq!((unlimited.limit, unlimited.remaining), (None, None));
        let day = DayReport {
            date: Date::new(2024, 2, 29).unwrap(),
            used: 7,
            remaining: Some(3),
        };
        assert_eq!(
            v1::DayUsage::from(day),
            v1::DayUsage {
                date: "2024-02-29".into(),
                used: 7,
                remaining: Some(3)
            }
        );
    }

    // Property: extras and remaining quotas are bounded and named by their field.
    // Set-up: values at and past 2^50.
    // Pass: accepted at the bound, refused past it with the given field name.
    #[test]
    fn extras_are_bounded() {
        assert_eq!(extra("extra_per_period", 5).map(Extra::get), Ok(5));
        assert!(extra("extra_per_period", MAX_EXTRA).is_ok());
        let err = extra("extra_per_period", MAX_EXTRA + 1).unwrap_err();
        assert_eq!(err.field(), "extra_per_period");
        assert_eq!(grant(MAX_EXTRA + 1).unwrap_err().field(), "extra");
        assert_eq!(remaining(MAX_QUOTA_LIMIT), Ok(MAX_QUOTA_LIMIT));
        assert_eq!(
            remaining(MAX_QUOTA_LIMIT + 1).unwrap_err().field(),
            "remaining"
        );
    }
}
