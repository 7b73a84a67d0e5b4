//! What `quotactl` prints: readable tables by default, and with `--json` one JSON
//! document per command with stable field names.
//!
//! # JSON field names
//! Times are RFC 3339 strings in UTC (`"2025-03-01T12:00:00.000Z"`) or `null` for "none";
//! dates are `"YYYY-MM-DD"`; ids are the cluster's (`"k12"`, `"p3"`).
//! - key: `id`, `name`, `description`, `owner`, `enabled`, `expires_at`, `tags`, `prefix`,
//!   `imported`, `previous_valid_until`, `created_at`, `updated_at`; `key get` adds
//!   `plans` (a list of associations); `key create` and `key rotate` add `secret`.
//! - association: `plan_id`, `key_id`, `extra_per_period`, `attached_at`.
//! - plan: `id`, `name`, `description`, `throttle` (`rate_limit`, `burst_limit`) or null,
//!   `quota` (`limit`, `period` "DAY"/"WEEK"/"MONTH", `offset`, `week_start`,
//!   `month_start_day`) or null, `stages` (list of `{api, stage}`), `route_throttles`
//!   (route -> throttle), `safe_rate`, `created_at`, `updated_at`; `plan get` adds `keys`.
//! - usage (current period): `plan_id`, `key_id`, `limit`, `used`, `reserved`,
//!   `remaining`, `period_start`, `reset_at` (`limit` and `remaining` null without quota).
//! - usage report: `plan_id`, `start_date`, `end_date`, `keys`: list of `{key_id,
//!   key_name, days: [{date, used, remaining}], current: usage}`.
//! - increment: `allowed`, `reason` (null when allowed, otherwise "UNKNOWN_KEY",
//!   "DISABLED", "EXPIRED", "NOT_COVERED", "QUOTA_EXCEEDED", "THROTTLED"), `key_id`,
//!   `used`, `remaining`, `limit`, `reset_at`, `denied_plan_id`, `retry_after_ms`, `usage`.
//! - cluster status: `node_id`, `leader_id`, `term`, `last_log_index`,
//!   `committed_index`, `members`: list of `{id, raft_address, public_address, role
//!   ("voter"/"learner"), leader, last_applied_index, matched_index}`.
//! - errors (on standard error, with `--json`): `{"error": {"kind", "exit_code",
//!   "message"}}`, `kind` one of `usage`, `invalid_file`, `refused`, `denied`,
//!   `unreachable`, `io`.

use quota_core::Timestamp;
use quota_proto::v1;
use serde::Serialize;
use std::collections::BTreeMap;

/// A time on the wire (ms since the epoch, 0 = none) as an RFC 3339 string.
pub fn time(ms: u64) -> Option<String> {
    (ms != 0).then(|| Timestamp(ms.min(Timestamp::MAX.0)).to_string())
}

fn time_text(ms: u64) -> String {
    time(ms).unwrap_or_else(|| "-".into())
}

#[derive(Debug, Serialize)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub owner: Option<String>,
    pub enabled: bool,
    pub expires_at: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub prefix: String,
    pub imported: bool,
    pub previous_valid_until: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl From<&v1::ApiKey> for KeyView {
    fn from(k: &v1::ApiKey) -> Self {
        KeyView {
            id: k.id.clone(),
            name: k.name.clone(),
            description: k.description.clone(),
            owner: k.owner.clone(),
            enabled: k.enabled,
            expires_at: time(k.expires_at),
            tags: k.tags.clone(),
            prefix: k.prefix.clone(),
            imported: k.imported,
            previous_valid_until: time(k.previous_valid_until),
            created_at: time(k.created_at),
            updated_at: time(k.updated_at),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AssociationView {
    pub plan_id: String,
    pub key_id: String,
    pub extra_per_period: u64,
    pub attached_at: Option<String>,
}

impl From<&v1::Association> for AssociationView {
    fn from(a: &v1::Association) -> Self {
        AssociationView {
            plan_id: a.plan_id.clone(),
            key_id: a.key_id.clone(),
            extra_per_period: a.extra_per_period,
            attached_at: time(a.attached_at),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ThrottleView {
    pub rate_limit: f64,
    pub burst_limit: u64,
}

impl From<&v1::Throttle> for ThrottleView {
    fn from(t: &v1::Throttle) -> Self {
        ThrottleView {
            rate_limit: t.rate_limit,
            burst_limit: t.burst_limit,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct QuotaView {
    pub limit: u64,
    pub period: &'static str,
    pub offset: u64,
    pub week_start: &'static str,
    pub month_start_day: u32,
}

/// The name of a wire period, as the JSON output and the files spell it.
pub fn period_name(p: i32) -> &'static str {
    match v1::Period::try_from(p) {
        Ok(v1::Period::Day) => "DAY",
        Ok(v1::Period::Week) => "WEEK",
        Ok(v1::Period::Month) => "MONTH",
        _ => "UNSPECIFIED",
    }
}

/// The name of a wire weekday (unspecified is Monday).
pub fn weekday_name(d: i32) -> &'static str {
    match v1::Weekday::try_from(d) {
        Ok(v1::Weekday::Tuesday) => "TUESDAY",
        Ok(v1::Weekday::Wednesday) => "WEDNESDAY",
        Ok(v1::Weekday::Thursday) => "THURSDAY",
        Ok(v1::Weekday::Friday) => "FRIDAY",
        Ok(v1::Weekday::Saturday) => "SATURDAY",
        Ok(v1::Weekday::Sunday) => "SUNDAY",
        _ => "MONDAY",
    }
}

impl From<&v1::Quota> for QuotaView {
    fn from(q: &v1::Quota) -> Self {
        QuotaView {
            limit: q.limit,
            period: period_name(q.period),
            offset: q.offset,
            week_start: weekday_name(q.week_start),
            month_start_day: q.month_start_day.max(1),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct StageView {
    pub api: String,
    pub stage: String,
}

#[derive(Debug, Serialize)]
pub struct PlanView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub throttle: Option<ThrottleView>,
    pub quota: Option<QuotaView>,
    pub stages: Vec<StageView>,
    pub route_throttles: BTreeMap<String, ThrottleView>,
    /// Requests per second per key a gateway may admit while the cluster is unreachable.
    pub safe_rate: f64,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl From<&v1::UsagePlan> for PlanView {
    fn from(p: &v1::UsagePlan) -> Self {
        let spec = p.spec.clone().unwrap_or_default();
        PlanView {
            id: p.id.clone(),
            name: spec.name.clone(),
            description: spec.description.clone(),
            throttle: spec.throttle.as_ref().map(ThrottleView::from),
            quota: spec.quota.as_ref().map(QuotaView::from),
            stages: spec
                .stages
                .iter()
                .map(|s| StageView {
                    api: s.api.clone(),
                    stage: s.stage.clone(),
                })
                .collect(),
            route_throttles: spec
                .route_throttles
                .iter()
                .map(|(r, t)| (r.clone(), ThrottleView::from(t)))
                .collect(),
            safe_rate: spec.safe_rate,
            created_at: time(p.created_at),
            updated_at: time(p.updated_at),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct UsageView {
    pub plan_id: String,
    pub key_id: String,
    pub limit: Option<u64>,
    pub used: u64,
    pub reserved: u64,
    pub remaining: Option<u64>,
    pub period_start: Option<String>,
    pub reset_at: Option<String>,
}

impl From<&v1::Usage> for UsageView {
    fn from(u: &v1::Usage) -> Self {
        UsageView {
            plan_id: u.plan_id.clone(),
            key_id: u.key_id.clone(),
            limit: u.limit,
            used: u.used,
            reserved: u.reserved,
            remaining: u.remaining,
            period_start: time(u.period_start),
            reset_at: time(u.reset_at),
        }
    }
}

/// The name of a denial reason in JSON; `None` when admitted.
pub fn reason_name(r: i32) -> Option<&'static str> {
    match v1::DenialReason::try_from(r) {
        Ok(v1::DenialReason::Unspecified) => None,
        Ok(v1::DenialReason::UnknownKey) => Some("UNKNOWN_KEY"),
        Ok(v1::DenialReason::Disabled) => Some("DISABLED"),
        Ok(v1::DenialReason::Expired) => Some("EXPIRED"),
        Ok(v1::DenialReason::NotCovered) => Some("NOT_COVERED"),
        Ok(v1::DenialReason::QuotaExceeded) => Some("QUOTA_EXCEEDED"),
        Ok(v1::DenialReason::Throttled) => Some("THROTTLED"),
        Err(_) => Some("UNKNOWN_REASON"),
    }
}

/// Print a value as pretty JSON on standard output.
pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        // Our views hold only strings, numbers, bools, maps and lists: serialising cannot
        // fail, and if it somehow did, saying so beats printing nothing.
        Err(e) => eprintln!("error: cannot print JSON: {e}"),
    }
}

/// A plain text table: a header row and rows, columns padded to their widest cell.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        let line = |cells: &[String], out: &mut String| {
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate() {
                let width = widths.get(i).copied().unwrap_or(0);
                if i + 1 == cells.len() {
                    text.push_str(cell);
                } else {
                    text.push_str(&format!("{cell:<width$}  "));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(&self.header, &mut out);
        for row in &self.rows {
            line(row, &mut out);
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// Key/value lines ("name:  value"), for one object.
pub fn print_fields(fields: &[(&str, String)]) {
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    for (k, v) in fields {
        println!("{:<width$} {v}", format!("{k}:"));
    }
}

pub fn opt_num(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

pub fn key_fields(k: &v1::ApiKey) -> Vec<(&'static str, String)> {
    let tags = if k.tags.is_empty() {
        "-".into()
    } else {
        k.tags
            .iter()
            .map(|(a, b)| format!("{a}={b}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    vec![
        ("id", k.id.clone()),
        ("name", k.name.clone()),
        ("description", or_dash(&k.description)),
        ("owner", k.owner.clone().unwrap_or_else(|| "-".into())),
        ("enabled", k.enabled.to_string()),
        ("expires", time_text(k.expires_at)),
        ("tags", tags),
        (
            "prefix",
            format!(
                "{}{}",
                k.prefix,
                if k.imported { " (imported)" } else { "" }
            ),
        ),
        ("old secret valid until", time_text(k.previous_valid_until)),
        ("created", time_text(k.created_at)),
        ("updated", time_text(k.updated_at)),
    ]
}

pub fn keys_table(keys: &[v1::ApiKey]) -> Table {
    let mut t = Table::new(&[
        "ID", "NAME", "ENABLED", "OWNER", "PREFIX", "EXPIRES", "CREATED",
    ]);
    for k in keys {
        t.row(vec![
            k.id.clone(),
            k.name.clone(),
            if k.enabled { "yes" } else { "no" }.into(),
            k.owner.clone().unwrap_or_else(|| "-".into()),
            k.prefix.clone(),
            time_text(k.expires_at),
            time_text(k.created_at),
        ]);
    }
    t
}

pub fn throttle_text(t: Option<&v1::Throttle>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| format!("{}/s burst {}", t.rate_limit, t.burst_limit),
    )
}

pub fn quota_text(q: Option<&v1::Quota>) -> String {
    q.map_or_else(
        || "-".into(),
        |q| {
            let mut s = format!("{} per {}", q.limit, period_name(q.period).to_lowercase());
            if q.offset > 0 {
                s.push_str(&format!(" (first period: -{})", q.offset));
            }
            match v1::Period::try_from(q.period) {
                Ok(v1::Period::Week) => s.push_str(&format!(
                    ", weeks start {}",
                    weekday_name(q.week_start).to_lowercase()
                )),
                Ok(v1::Period::Month) if q.month_start_day > 1 => {
                    s.push_str(&format!(", months start on day {}", q.month_start_day))
                }
                _ => {}
            }
            s
        },
    )
}

pub fn stages_text(stages: &[v1::ApiStage]) -> String {
    if stages.is_empty() {
        return "-".into();
    }
    stages
        .iter()
        .map(|s| format!("{}/{}", s.api, s.stage))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn plans_table(plans: &[v1::UsagePlan]) -> Table {
    let mut t = Table::new(&["ID", "NAME", "THROTTLE", "QUOTA", "STAGES", "ROUTES"]);
    for p in plans {
        let spec = p.spec.clone().unwrap_or_default();
        t.row(vec![
            p.id.clone(),
            spec.name.clone(),
            throttle_text(spec.throttle.as_ref()),
            quota_text(spec.quota.as_ref()),
            stages_text(&spec.stages),
            spec.route_throttles.len().to_string(),
        ]);
    }
    t
}

pub fn plan_fields(p: &v1::UsagePlan) -> Vec<(&'static str, String)> {
    let spec = p.spec.clone().unwrap_or_default();
    let routes = if spec.route_throttles.is_empty() {
        "-".into()
    } else {
        spec.route_throttles
            .iter()
            .map(|(r, t)| format!("{r} = {}", throttle_text(Some(t))))
            .collect::<Vec<_>>()
            .join("; ")
    };
    vec![
        ("id", p.id.clone()),
        ("name", spec.name.clone()),
        ("description", or_dash(&spec.description)),
        ("throttle", throttle_text(spec.throttle.as_ref())),
        ("quota", quota_text(spec.quota.as_ref())),
        ("stages", stages_text(&spec.stages)),
        ("route throttles", routes),
        ("created", time_text(p.created_at)),
        ("updated", time_text(p.updated_at)),
    ]
}

pub fn usage_fields(u: &v1::Usage) -> Vec<(&'static str, String)> {
    vec![
        ("plan", u.plan_id.clone()),
        ("key", u.key_id.clone()),
        ("limit", opt_num(u.limit)),
        ("used", u.used.to_string()),
        ("reserved", u.reserved.to_string()),
        ("remaining", opt_num(u.remaining)),
        ("period start", time_text(u.period_start)),
        ("resets", time_text(u.reset_at)),
    ]
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Property: tables pad every column but the last to its widest cell.
    // Set-up: a two-column table with cells of different widths.
    // Pass: the exact rendering.
    #[test]
    fn tables_align() {
        let mut t = Table::new(&["ID", "NAME"]);
        t.row(vec!["k1".into(), "alice".into()]);
        t.row(vec!["k100".into(), "b".into()]);
        assert_eq!(t.render(), "ID    NAME\nk1    alice\nk100  b\n");
    }

    // Property: times are RFC 3339 in UTC, and 0 is none.
    // Set-up: 0 and 2024-01-02T03:04:05.006Z. Pass: None and the string.
    #[test]
    fn times() {
        assert_eq!(time(0), None);
        assert_eq!(
            time(1_704_164_645_006).as_deref(),
            Some("2024-01-02T03:04:05.006Z")
        );
    }
}
