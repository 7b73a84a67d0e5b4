//! Time as the state machine sees it: milliseconds since the Unix epoch, stamped by the
//! leader on each entry. Nothing here reads a clock. Civil-date conversion uses the
//! proleptic Gregorian calendar in UTC (days-from-civil, as in Howard Hinnant's `chrono`
//! date algorithms), so it is exact for every date we accept.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Milliseconds in one day.
pub const MS_PER_DAY: u64 = 86_400_000;

/// An instant, in milliseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The last instant we accept: 9999-12-31T23:59:59.999Z. Later instants would overflow
    /// four-digit years in reports and are certainly a caller's mistake.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999);

    /// Milliseconds since the epoch.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// Whole days since the epoch (the day this instant falls in).
    pub fn day_number(self) -> i64 {
        (self.0 / MS_PER_DAY) as i64
    }

    /// The first instant of the given day number.
    pub fn from_day_number(day: i64) -> Timestamp {
        Timestamp((day.max(0) as u64).saturating_mul(MS_PER_DAY))
    }

    /// This instant plus `ms`, saturating at [`Timestamp::MAX`].
    pub fn plus_millis(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms).min(Self::MAX.0))
    }

    /// The civil date (UTC) of this instant.
    pub fn date(self) -> Date {
        Date::from_day_number(self.day_number())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms_of_day = self.0 % MS_PER_DAY;
        write!(
            f,
            "{}T{:02}:{:02}:{:02}.{:03}Z",
            self.date(),
            ms_of_day / 3_600_000,
            (ms_of_day / 60_000) % 60,
            (ms_of_day / 1000) % 60,
            ms_of_day % 1000
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A calendar date in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Date {
    pub year: i32,
    /// 1..=12
    pub month: u8,
    /// 1..=31
    pub day: u8,
}

impl Date {
    /// A date, if it exists in the Gregorian calendar.
    pub fn new(year: i32, month: u8, day: u8) -> Option<Date> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Date { year, month, day })
    }

    /// Days since 1970-01-01 (negative before it).
    pub fn day_number(self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let mp = if m > 2 { m - 3 } else { m + 9 };
        let doy = (153 * mp + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date of a day number.
    pub fn from_day_number(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }

    /// Day of the week, Monday = 0 .. Sunday = 6.
    pub fn weekday_index(self) -> u8 {
        // 1970-01-01 was a Thursday (index 3).
        (self.day_number() + 3).rem_euclid(7) as u8
    }

    /// The first instant of this date.
    pub fn start(self) -> Timestamp {
        Timestamp::from_day_number(self.day_number())
    }

    /// The same day-of-month `months` later (or earlier), which the caller guarantees exists
    /// (it does for days 1..=28).
    pub fn add_months(self, months: i32) -> Date {
        let total = self.year * 12 + i32::from(self.month) - 1 + months;
        let year = total.div_euclid(12);
        let month = (total.rem_euclid(12) + 1) as u8;
        Date {
            year,
            month,
            day: self.day.min(days_in_month(year, month)),
        }
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl std::str::FromStr for Date {
    type Err = String;

    /// Parses `YYYY-MM-DD`.
    fn from_str(s: &str) -> Result<Date, String> {
        let bad = || format!("`{s}` is not a date of the form YYYY-MM-DD");
        let mut parts = s.splitn(3, '-');
        let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u8 = m.parse().map_err(|_| bad())?;
        let day: u8 = d.parse().map_err(|_| bad())?;
        Date::new(year, month, day).ok_or_else(bad)
    }
}

/// Whether `year` is a Gregorian leap year.
pub fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in the given month of the given year.
pub fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Property: day numbers and civil dates convert both ways without loss.
    // Set-up: known anchors, then every day number in a wide range.
    // Pass: anchors match published calendars; round trips are exact.
    #[test]
    fn known_dates() {
        assert_eq!(Date::new(1970, 1, 1).unwrap().day_number(), 0);
        assert_eq!(Date::new(2000, 3, 1).unwrap().day_number(), 11_017);
        assert_eq!(
            Date::from_day_number(19_782),
            Date::new(2024, 2, 29).unwrap()
        );
        assert_eq!(Date::new(2026, 12, 4).unwrap().weekday_index(), 4); // a Friday
        assert_eq!(Date::new(2024, 1, 1).unwrap().weekday_index(), 0); // a Monday
        assert!(Date::new(2023, 2, 29).is_none());
        assert!(Date::new(2100, 2, 29).is_none());
        assert!(Date::new(2000, 2, 29).is_some());
        assert_eq!(
            format!("{:?}", Timestamp(1_709_164_800_123)),
            "2024-02-29T00:00:00.123Z"
        );
        assert_eq!(
            "2024-02-29".parse::<Date>(),
            Ok(Date::new(2024, 2, 29).unwrap())
        );
        assert!("2024-2-29".parse::<Date>().is_err());
        assert!("2023-02-29".parse::<Date>().is_err());
    }

    proptest! {
        #[test]
        fn day_number_round_trip(days in -1_000_000i64..3_000_000) {
            let date = Date::from_day_number(days);
            prop_assert_eq!(date.day_number(), days);
            prop_assert!(date.day >= 1 && date.day <= days_in_month(date.year, date.month));
            let next = Date::from_day_number(days + 1);
            prop_assert!(next > date);
        }
    }
}
