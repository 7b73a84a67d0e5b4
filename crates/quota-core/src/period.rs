//! Quota periods: calendar days, weeks and months in UTC.
//!
//! Where a week starts (default Monday) and on which day of the month a month starts
//! (default the 1st, at most the 28th so that every month has that day) are plan settings.
//! A period is the half-open window `[start, end)`; its reset time is `end`.
//!
//! The managed gateway's `offset` field has been documented two ways: once as "the day a
//! period starts", now as "the number of requests subtracted from the limit in the initial
//! period". We follow the current definition: in the period that contains the plan's
//! creation time, the limit is `limit - offset`; `offset < limit` is required. Where a
//! period starts is set with `week_start` and `month_start_day` instead.

use crate::error::ValidationError;
use crate::limits::MAX_QUOTA_LIMIT;
use crate::time::{Date, Timestamp};
use serde::{Deserialize, Serialize};

/// The length of a quota period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PeriodUnit {
    Day,
    Week,
    Month,
}

impl std::str::FromStr for PeriodUnit {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, ValidationError> {
        match s.to_ascii_uppercase().as_str() {
            "DAY" => Ok(PeriodUnit::Day),
            "WEEK" => Ok(PeriodUnit::Week),
            "MONTH" => Ok(PeriodUnit::Month),
            _ => Err(ValidationError::invalid(
                "quota.period",
                format!("`{s}` is not one of DAY, WEEK, MONTH"),
            )),
        }
    }
}

impl std::fmt::Display for PeriodUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeriodUnit::Day => "DAY",
            PeriodUnit::Week => "WEEK",
            PeriodUnit::Month => "MONTH",
        })
    }
}

/// Day of the week.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Weekday {
    #[default]
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl Weekday {
    /// Monday = 0 .. Sunday = 6.
    pub fn index(self) -> u8 {
        self as u8
    }
}

impl std::str::FromStr for Weekday {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, ValidationError> {
        const DAYS: [(&str, Weekday); 7] = [
            ("MONDAY", Weekday::Monday),
            ("TUESDAY", Weekday::Tuesday),
            ("WEDNESDAY", Weekday::Wednesday),
            ("THURSDAY", Weekday::Thursday),
            ("FRIDAY", Weekday::Friday),
            ("SATURDAY", Weekday::Saturday),
            ("SUNDAY", Weekday::Sunday),
        ];
        let upper = s.to_ascii_uppercase();
        DAYS.iter()
            .find(|(name, _)| *name == upper || name[..3] == upper)
            .map(|(_, day)| *day)
            .ok_or_else(|| {
                ValidationError::invalid("quota.week_start", format!("`{s}` is not a weekday"))
            })
    }
}

/// A half-open window of time `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Window {
    /// Whether `at` falls in this window.
    pub fn contains(&self, at: Timestamp) -> bool {
        self.start <= at && at < self.end
    }

    /// When the quota resets: the end of the window.
    pub fn reset_at(&self) -> Timestamp {
        self.end
    }
}

/// A quota: `limit` cost units per calendar period. Construct with [`QuotaSpec::new`], which
/// validates; deserialisation validates too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawQuota", into = "RawQuota")]
pub struct QuotaSpec {
    limit: u64,
    period: PeriodUnit,
    offset: u64,
    week_start: Weekday,
    month_start_day: u8,
}

/// The unvalidated shape of a [`QuotaSpec`], as it travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawQuota {
    pub limit: u64,
    pub period: PeriodUnit,
    pub offset: u64,
    pub week_start: Weekday,
    pub month_start_day: u8,
}

impl Default for RawQuota {
    fn default() -> Self {
        RawQuota {
            limit: 0,
            period: PeriodUnit::Day,
            offset: 0,
            week_start: Weekday::Monday,
            month_start_day: 1,
        }
    }
}

impl TryFrom<RawQuota> for QuotaSpec {
    type Error = ValidationError;

    fn try_from(raw: RawQuota) -> Result<Self, ValidationError> {
        if raw.limit == 0 || raw.limit > MAX_QUOTA_LIMIT {
            return Err(ValidationError::out_of_range(
                "quota.limit",
                raw.limit,
                1,
                MAX_QUOTA_LIMIT,
            ));
        }
        if raw.offset >= raw.limit {
            return Err(ValidationError::out_of_range(
                "quota.offset",
                raw.offset,
                0,
                raw.limit - 1,
            ));
        }
        if !(1..=28).contains(&raw.month_start_day) {
            return Err(ValidationError::out_of_range(
                "quota.month_start_day",
                u64::from(raw.month_start_day),
                1,
                28,
            ));
        }
        Ok(QuotaSpec {
            limit: raw.limit,
            period: raw.period,
            offset: raw.offset,
            week_start: raw.week_start,
            month_start_day: raw.month_start_day,
        })
    }
}

impl From<QuotaSpec> for RawQuota {
    fn from(q: QuotaSpec) -> RawQuota {
        RawQuota {
            limit: q.limit,
            period: q.period,
            offset: q.offset,
            week_start: q.week_start,
            month_start_day: q.month_start_day,
        }
    }
}

impl QuotaSpec {
    /// A quota of `limit` per `period` with default settings (weeks start on Monday, months
    /// on the 1st, no offset).
    pub fn new(limit: u64, period: PeriodUnit) -> Result<QuotaSpec, ValidationError> {
        QuotaSpec::try_from(RawQuota {
            limit,
            period,
            ..RawQuota::default()
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
    pub fn period(&self) -> PeriodUnit {
        self.period
    }
    pub fn offset(&self) -> u64 {
        self.offset
    }
    pub fn week_start(&self) -> Weekday {
        self.week_start
    }
    pub fn month_start_day(&self) -> u8 {
        self.month_start_day
    }

    /// The period that contains `at`.
    pub fn window(&self, at: Timestamp) -> Window {
        let today = at.date();
        match self.period {
            PeriodUnit::Day => day_window(at),
            PeriodUnit::Week => {
                let day = at.day_number();
                let back = (i64::from(today.weekday_index()) - i64::from(self.week_start.index()))
                    .rem_euclid(7);
                Window {
                    start: Timestamp::from_day_number(day - back),
                    end: Timestamp::from_day_number(day - back + 7),
                }
            }
            PeriodUnit::Month => {
                let this_month = Date {
                    day: self.month_start_day,
                    ..today
                };
                let start = if today.day >= self.month_start_day {
                    this_month
                } else {
                    this_month.add_months(-1)
                };
                Window {
                    start: start.start(),
                    end: start.add_months(1).start(),
                }
            }
        }
    }

    /// The limit in force for the period `window`, for a plan created at `plan_created_at`:
    /// the initial period loses `offset` requests.
    pub fn limit_for(&self, window: Window, plan_created_at: Timestamp) -> u64 {
        if window.contains(plan_created_at) {
            self.limit - self.offset
        } else {
            self.limit
        }
    }
}

/// The UTC day that contains `at`.
pub fn day_window(at: Timestamp) -> Window {
    let day = at.day_number();
    Window {
        start: Timestamp::from_day_number(day),
        end: Timestamp::from_day_number(day + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::MS_PER_DAY;
    use proptest::prelude::*;

    fn ts(y: i32, m: u8, d: u8) -> Timestamp {
        Date::new(y, m, d).unwrap().start()
    }

    fn quota(period: PeriodUnit, week_start: Weekday, month_start_day: u8) -> QuotaSpec {
        QuotaSpec::try_from(RawQuota {
            limit: 100,
            period,
            offset: 0,
            week_start,
            month_start_day,
        })
        .unwrap()
    }

    // Property: period windows are exact at their edges.
    // Set-up: instants one millisecond either side of day, week and month boundaries,
    // including month ends, February in leap and common years, and year ends.
    // Pass: each instant falls in the window the calendar says.
    #[test]
    fn day_edges() {
        let q = quota(PeriodUnit::Day, Weekday::Monday, 1);
        let midnight = ts(2024, 2, 29);
        let w = q.window(midnight);
        assert_eq!(
            w,
            Window {
                start: midnight,
                end: ts(2024, 3, 1)
            }
        );
        let before = q.window(Timestamp(midnight.0 - 1));
        assert_eq!(
            before,
            Window {
                start: ts(2024, 2, 28),
                end: midnight
            }
        );
        let last_ms = q.window(Timestamp(ts(2024, 3, 1).0 - 1));
        assert_eq!(last_ms.start, midnight);
    }

    #[test]
    fn week_edges() {
        // 2026-12-04 is a Friday.
        let monday = quota(PeriodUnit::Week, Weekday::Monday, 1);
        let w = monday.window(ts(2026, 12, 4));
        assert_eq!(
            w,
            Window {
                start: ts(2026, 11, 30),
                end: ts(2026, 12, 7)
            }
        );
        // Monday 00:00 starts a new week; Sunday 23:59:59.999 is still the old one.
        assert_eq!(monday.window(ts(2026, 12, 7)).start, ts(2026, 12, 7));
        assert_eq!(
            monday.window(Timestamp(ts(2026, 12, 7).0 - 1)).start,
            ts(2026, 11, 30)
        );
        // A week starting on Sunday, across a year end.
        let sunday = quota(PeriodUnit::Week, Weekday::Sunday, 1);
        let w = sunday.window(ts(2027, 1, 1)); // a Friday
        assert_eq!(
            w,
            Window {
                start: ts(2026, 12, 27),
                end: ts(2027, 1, 3)
            }
        );
        // A week starting on the very day we ask about.
        let friday = quota(PeriodUnit::Week, Weekday::Friday, 1);
        assert_eq!(friday.window(ts(2026, 12, 4)).start, ts(2026, 12, 4));
    }

    #[test]
    fn month_edges() {
        let first = quota(PeriodUnit::Month, Weekday::Monday, 1);
        assert_eq!(
            first.window(ts(2024, 2, 29)),
            Window {
                start: ts(2024, 2, 1),
                end: ts(2024, 3, 1)
            }
        );
        assert_eq!(
            first.window(Timestamp(ts(2025, 1, 1).0 - 1)),
            Window {
                start: ts(2024, 12, 1),
                end: ts(2025, 1, 1)
            }
        );
        assert_eq!(first.window(ts(2025, 1, 1)).start, ts(2025, 1, 1));
        // Months starting on the 28th: February of a leap year has 29 days in the window
        // that starts on Jan 28th? No: the window is Jan 28 .. Feb 28, then Feb 28 .. Mar 28.
        let late = quota(PeriodUnit::Month, Weekday::Monday, 28);
        assert_eq!(
            late.window(ts(2024, 2, 29)),
            Window {
                start: ts(2024, 2, 28),
                end: ts(2024, 3, 28)
            }
        );
        assert_eq!(
            late.window(ts(2024, 1, 15)),
            Window {
                start: ts(2023, 12, 28),
                end: ts(2024, 1, 28)
            }
        );
        assert_eq!(
            late.window(Timestamp(ts(2023, 2, 28).0 - 1)),
            Window {
                start: ts(2023, 1, 28),
                end: ts(2023, 2, 28)
            }
        );
        let mid = quota(PeriodUnit::Month, Weekday::Monday, 15);
        assert_eq!(
            mid.window(ts(2026, 12, 31)),
            Window {
                start: ts(2026, 12, 15),
                end: ts(2027, 1, 15)
            }
        );
    }

    #[test]
    fn illegal_settings_are_rejected() {
        let base = RawQuota {
            limit: 10,
            ..RawQuota::default()
        };
        for (raw, field) in [
            (RawQuota { limit: 0, ..base }, "quota.limit"),
            (
                RawQuota {
                    limit: MAX_QUOTA_LIMIT + 1,
                    ..base
                },
                "quota.limit",
            ),
            (RawQuota { offset: 10, ..base }, "quota.offset"),
            (
                RawQuota {
                    month_start_day: 0,
                    ..base
                },
                "quota.month_start_day",
            ),
            (
                RawQuota {
                    month_start_day: 29,
                    ..base
                },
                "quota.month_start_day",
            ),
        ] {
            let err = QuotaSpec::try_from(raw).unwrap_err();
            assert_eq!(err.field(), field, "{err}");
        }
        assert!("FORTNIGHT".parse::<PeriodUnit>().is_err());
        assert_eq!("week".parse::<PeriodUnit>().unwrap(), PeriodUnit::Week);
        assert_eq!("sun".parse::<Weekday>().unwrap(), Weekday::Sunday);
    }

    #[test]
    fn offset_applies_to_the_initial_period_only() {
        let q = QuotaSpec::try_from(RawQuota {
            limit: 100,
            offset: 30,
            period: PeriodUnit::Day,
            ..RawQuota::default()
        })
        .unwrap();
        let created = Timestamp(ts(2026, 12, 4).0 + 5000);
        assert_eq!(q.limit_for(q.window(created), created), 70);
        assert_eq!(q.limit_for(q.window(ts(2026, 12, 5)), created), 100);
    }

    fn any_quota() -> impl Strategy<Value = QuotaSpec> {
        (
            prop_oneof![
                Just(PeriodUnit::Day),
                Just(PeriodUnit::Week),
                Just(PeriodUnit::Month)
            ],
            0u8..7,
            1u8..=28,
        )
            .prop_map(|(period, w, m)| {
                let week_start = [
                    Weekday::Monday,
                    Weekday::Tuesday,
                    Weekday::Wednesday,
                    Weekday::Thursday,
                    Weekday::Friday,
                    Weekday::Saturday,
                    Weekday::Sunday,
                ][w as usize];
                quota(period, week_start, m)
            })
    }

    proptest! {
        // Property: for every legal setting and instant, the window contains the instant,
        // starts at midnight on the configured weekday or day of month, has the calendar
        // length, and the next window starts exactly where this one ends.
        #[test]
        fn windows_tile_time(q in any_quota(), at in 0u64..Timestamp::MAX.0 - 100 * MS_PER_DAY) {
            let at = Timestamp(at);
            let w = q.window(at);
            prop_assert!(w.contains(at));
            prop_assert_eq!(w.start.0 % MS_PER_DAY, 0);
            prop_assert_eq!(q.window(w.end).start, w.end);
            prop_assert_eq!(q.window(Timestamp(w.end.0 - 1)), w);
            let days = (w.end.0 - w.start.0) / MS_PER_DAY;
            match q.period() {
                PeriodUnit::Day => prop_assert_eq!(days, 1),
                PeriodUnit::Week => {
                    prop_assert_eq!(days, 7);
                    prop_assert_eq!(w.start.date().weekday_index(), q.week_start().index());
                }
                PeriodUnit::Month => {
                    prop_assert!((28..=31).contains(&days));
                    prop_assert_eq!(w.start.date().day, q.month_start_day());
                }
            }
        }
    }
}
