//! Times, dates and durations as an operator types them.

use quota_core::{Date, Timestamp};

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Today's date in UTC.
pub fn today() -> Date {
    Timestamp(now_ms()).date()
}

/// A duration: a number with a unit `ms`, `s`, `m`, `h` or `d` (`90d`, `15m`), or `0`.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(0);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30s, 15m, 24h or 7d"))?;
    let per = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{s}` is not a duration like 30s, 15m, 24h or 7d")),
    };
    n.checked_mul(per)
        .ok_or_else(|| format!("`{s}` is too long a duration"))
}

/// A point in time: RFC 3339 in UTC (`2026-01-31T12:00:00Z`, fractions allowed), a date
/// (`2026-01-31`, midnight UTC), or, when `now` is given, a duration from now (`90d`).
pub fn parse_time_ms(s: &str, now: Option<u64>) -> Result<u64, String> {
    let s = s.trim();
    let bad = || {
        format!(
            "`{s}` is not a time: write 2026-01-31T12:00:00Z, 2026-01-31{}",
            if now.is_some() {
                ", or a duration from now like 90d"
            } else {
                ""
            }
        )
    };
    if let Some(now) = now
        && s.chars().next().is_some_and(|c| c.is_ascii_digit())
        && !s.contains('-')
    {
        return parse_duration_ms(s)
            .map(|d| now.saturating_add(d))
            .map_err(|_| bad());
    }
    let (date_part, time_part) = match s.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let date: Date = date_part.parse().map_err(|_| bad())?;
    let mut ms = date.start().as_millis();
    if let Some(t) = time_part {
        let t = t
            .strip_suffix('Z')
            .or_else(|| t.strip_suffix('z'))
            .or_else(|| t.strip_suffix("+00:00"))
            .ok_or_else(|| format!("`{s}`: give the time in UTC, ending in Z"))?;
        let (hms, frac) = match t.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (t, None),
        };
        let parts: Vec<&str> = hms.split(':').collect();
        let [h, m, sec] = parts.as_slice() else {
            return Err(bad());
        };
        let num = |x: &str, max: u64| -> Result<u64, String> {
            match x.parse::<u64>() {
                Ok(v) if x.len() == 2 && v <= max => Ok(v),
                _ => Err(bad()),
            }
        };
        ms += num(h, 23)? * 3_600_000 + num(m, 59)? * 60_000 + num(sec, 59)? * 1000;
        if let Some(frac) = frac {
            if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let padded: String = frac.chars().chain("000".chars()).take(3).collect();
            ms += padded.parse::<u64>().map_err(|_| bad())?;
        }
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Property: the documented forms parse to the right instants; others are refused.
    // Set-up: RFC 3339 with and without fractions, a date, durations, junk.
    // Pass: the expected milliseconds, and errors.
    #[test]
    fn times_and_durations() {
        assert_eq!(
            parse_time_ms("2024-01-02T03:04:05.006Z", None),
            Ok(1_704_164_645_006)
        );
        assert_eq!(
            parse_time_ms("2024-01-02T03:04:05Z", None),
            Ok(1_704_164_645_000)
        );
        assert_eq!(parse_time_ms("2024-01-02", None), Ok(1_704_153_600_000));
        assert_eq!(parse_time_ms("2d", Some(1000)), Ok(1000 + 2 * 86_400_000));
        assert!(parse_time_ms("2d", None).is_err());
        assert!(parse_time_ms("2024-01-02T03:04:05+02:00", None).is_err());
        assert!(parse_time_ms("tomorrow", Some(0)).is_err());
        assert_eq!(parse_duration_ms("15m"), Ok(900_000));
        assert_eq!(parse_duration_ms("0"), Ok(0));
        assert!(parse_duration_ms("15").is_err());
        assert!(parse_duration_ms("m").is_err());
    }
}
