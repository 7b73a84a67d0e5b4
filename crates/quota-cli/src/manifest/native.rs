//! quotactl's native file format, in YAML or TOML: `plans` and `keys`, with every field
//! the cluster supports. See [`super::APPLY_HELP`] for an example.
//!
//! In TOML the same structure is written with arrays of tables:
//! ```toml
//! [[plans]]
//! name = "gold"
//! quota = { limit = 100000, period = "month" }
//! throttle = { rate_limit = 100, burst_limit = 200 }
//! stages = ["shop/prod"]
//!
//! [[keys]]
//! name = "alice"
//! plans = ["gold"]
//! ```

use super::node::{Node, Reader, Value, get, join};
use super::{Desired, DesiredKey, DesiredPlan, FieldMap, ManifestError, canonical_plan, check_key};
use quota_proto::v1;
use std::collections::BTreeMap;

const TOP_FIELDS: &[&str] = &["version", "plans", "keys"];
const PLAN_FIELDS: &[&str] = &[
    "name",
    "description",
    "throttle",
    "quota",
    "stages",
    "route_throttles",
];
const KEY_FIELDS: &[&str] = &[
    "name",
    "description",
    "owner",
    "enabled",
    "expires_at",
    "tags",
    "value",
    "value_env",
    "plans",
];

/// Read a native file.
pub fn read(reader: &Reader<'_>, root: &Node) -> Result<Desired, ManifestError> {
    let mut desired = Desired {
        format: "native",
        ..Default::default()
    };
    let top: &[(String, Node)] = match &root.value {
        Value::Null => &[],
        _ => reader.map(root, "")?,
    };
    reader.only(top, "", TOP_FIELDS)?;
    if let Some(v) = get(top, "version") {
        let version = reader.u64(v, "version")?;
        if version != 1 {
            return Err(reader.err(
                v.line,
                "version",
                format!("version {version} is not known; this quotactl reads version 1"),
            ));
        }
    }
    if let Some(plans) = get(top, "plans") {
        for (i, node) in reader.seq(plans, "plans")?.iter().enumerate() {
            desired
                .plans
                .push(read_plan(reader, node, &format!("plans[{i}]"))?);
        }
    }
    if let Some(keys) = get(top, "keys") {
        for (i, node) in reader.seq(keys, "keys")?.iter().enumerate() {
            let path = format!("keys[{i}]");
            let (key, attachments) = read_key(reader, node, &path)?;
            for (plan, extra, line) in attachments {
                let target = desired
                    .plans
                    .iter_mut()
                    .find(|p| p.spec.name == plan)
                    .ok_or_else(|| {
                        reader.err(
                            line,
                            &join(&path, "plans"),
                            format!("no plan in this file is named `{plan}`"),
                        )
                    })?;
                if target.keys.insert(key.name.clone(), extra).is_some() {
                    return Err(reader.err(
                        line,
                        &join(&path, "plans"),
                        format!("plan `{plan}` is listed twice"),
                    ));
                }
            }
            desired.keys.push(key);
        }
    }
    Ok(desired)
}

fn throttle(
    reader: &Reader<'_>,
    node: &Node,
    path: &str,
    core: &str,
    fields: &mut FieldMap,
) -> Result<v1::Throttle, ManifestError> {
    let t = reader.map(node, path)?;
    reader.only(t, path, &["rate_limit", "burst_limit"])?;
    fields.add(core, path, node.line);
    let rate_path = join(path, "rate_limit");
    let rate = get(t, "rate_limit")
        .ok_or_else(|| reader.err(node.line, &rate_path, "missing: requests per second"))?;
    fields.add(&format!("{core}.rate_limit"), &rate_path, rate.line);
    let burst_path = join(path, "burst_limit");
    let burst = get(t, "burst_limit").ok_or_else(|| {
        reader.err(
            node.line,
            &burst_path,
            "missing: the bucket size in requests",
        )
    })?;
    fields.add(&format!("{core}.burst_limit"), &burst_path, burst.line);
    Ok(v1::Throttle {
        rate_limit: reader.f64(rate, &rate_path)?,
        burst_limit: reader.u64(burst, &burst_path)?,
    })
}

fn read_plan(reader: &Reader<'_>, node: &Node, path: &str) -> Result<DesiredPlan, ManifestError> {
    let entries = reader.map(node, path)?;
    reader.only(entries, path, PLAN_FIELDS)?;
    let mut fields = FieldMap::new(path, node.line);
    let name_path = join(path, "name");
    let name_node = get(entries, "name")
        .ok_or_else(|| reader.err(node.line, &name_path, "missing: every plan needs a name"))?;
    fields.add("name", &name_path, name_node.line);
    let mut spec = v1::PlanSpec {
        name: reader.string(name_node, &name_path)?,
        ..Default::default()
    };
    if let Some(n) = get(entries, "description") {
        let p = join(path, "description");
        fields.add("description", &p, n.line);
        spec.description = reader.string(n, &p)?;
    }
    if let Some(n) = get(entries, "throttle") {
        spec.throttle = Some(throttle(
            reader,
            n,
            &join(path, "throttle"),
            "throttle",
            &mut fields,
        )?);
    }
    if let Some(n) = get(entries, "quota") {
        let qpath = join(path, "quota");
        let q = reader.map(n, &qpath)?;
        reader.only(
            q,
            &qpath,
            &["limit", "period", "offset", "week_start", "month_start_day"],
        )?;
        fields.add("quota", &qpath, n.line);
        let mut quota = v1::Quota::default();
        let limit_path = join(&qpath, "limit");
        let limit = get(q, "limit")
            .ok_or_else(|| reader.err(n.line, &limit_path, "missing: cost units per period"))?;
        fields.add("quota.limit", &limit_path, limit.line);
        quota.limit = reader.u64(limit, &limit_path)?;
        let period_path = join(&qpath, "period");
        let period = get(q, "period")
            .ok_or_else(|| reader.err(n.line, &period_path, "missing: day, week or month"))?;
        let text = reader.string(period, &period_path)?;
        quota.period = match text.to_ascii_lowercase().as_str() {
            "day" => v1::Period::Day,
            "week" => v1::Period::Week,
            "month" => v1::Period::Month,
            _ => {
                return Err(reader.err(
                    period.line,
                    &period_path,
                    format!("`{text}` is not one of day, week, month"),
                ));
            }
        }
        .into();
        if let Some(o) = get(q, "offset") {
            let p = join(&qpath, "offset");
            fields.add("quota.offset", &p, o.line);
            quota.offset = reader.u64(o, &p)?;
        }
        if let Some(w) = get(q, "week_start") {
            let p = join(&qpath, "week_start");
            let text = reader.string(w, &p)?;
            quota.week_start = weekday(&text)
                .ok_or_else(|| {
                    reader.err(
                        w.line,
                        &p,
                        format!("`{text}` is not a day of the week (monday ... sunday)"),
                    )
                })?
                .into();
        }
        if let Some(d) = get(q, "month_start_day") {
            let p = join(&qpath, "month_start_day");
            fields.add("quota.month_start_day", &p, d.line);
            let day = reader.u64(d, &p)?;
            quota.month_start_day = u32::try_from(day)
                .ok()
                .filter(|d| (1..=28).contains(d))
                .ok_or_else(|| {
                    reader.err(d.line, &p, format!("{day} is not a day from 1 to 28"))
                })?;
        }
        spec.quota = Some(quota);
    }
    if let Some(n) = get(entries, "stages") {
        let spath = join(path, "stages");
        fields.add("stages", &spath, n.line);
        for (i, s) in reader.seq(n, &spath)?.iter().enumerate() {
            let p = format!("{spath}[{i}]");
            fields.add(&format!("stages[{i}]"), &p, s.line);
            let stage = match &s.value {
                Value::Map(m) => {
                    reader.only(m, &p, &["api", "stage"])?;
                    let api = get(m, "api")
                        .ok_or_else(|| reader.err(s.line, &join(&p, "api"), "missing"))?;
                    let stage = get(m, "stage")
                        .ok_or_else(|| reader.err(s.line, &join(&p, "stage"), "missing"))?;
                    v1::ApiStage {
                        api: reader.string(api, &join(&p, "api"))?,
                        stage: reader.string(stage, &join(&p, "stage"))?,
                    }
                }
                _ => {
                    let text = reader.string(s, &p)?;
                    let (api, stage) = text.split_once('/').ok_or_else(|| {
                        reader.err(
                            s.line,
                            &p,
                            format!("`{text}` is not API/STAGE (or {{api, stage}})"),
                        )
                    })?;
                    v1::ApiStage {
                        api: api.to_owned(),
                        stage: stage.to_owned(),
                    }
                }
            };
            spec.stages.push(stage);
        }
    }
    if let Some(n) = get(entries, "route_throttles") {
        let rpath = join(path, "route_throttles");
        fields.add("route_throttles", &rpath, n.line);
        for (route, t) in reader.map(n, &rpath)? {
            let p = format!("{rpath}[{route}]");
            let value = throttle(
                reader,
                t,
                &p,
                &format!("route_throttles[{route}]"),
                &mut fields,
            )?;
            spec.route_throttles.insert(route.clone(), value);
        }
    }
    Ok(DesiredPlan {
        spec: canonical_plan(reader, spec, &fields)?,
        keys: BTreeMap::new(),
        line: node.line,
    })
}

fn weekday(s: &str) -> Option<v1::Weekday> {
    Some(match s.to_ascii_lowercase().as_str() {
        "monday" | "mon" => v1::Weekday::Monday,
        "tuesday" | "tue" => v1::Weekday::Tuesday,
        "wednesday" | "wed" => v1::Weekday::Wednesday,
        "thursday" | "thu" => v1::Weekday::Thursday,
        "friday" | "fri" => v1::Weekday::Friday,
        "saturday" | "sat" => v1::Weekday::Saturday,
        "sunday" | "sun" => v1::Weekday::Sunday,
        _ => return None,
    })
}

/// A plan a key is attached to: (plan name, extra per period, line).
type Attachment = (String, u64, usize);

fn read_key(
    reader: &Reader<'_>,
    node: &Node,
    path: &str,
) -> Result<(DesiredKey, Vec<Attachment>), ManifestError> {
    let entries = reader.map(node, path)?;
    reader.only(entries, path, KEY_FIELDS)?;
    let mut fields = FieldMap::new(path, node.line);
    let name_path = join(path, "name");
    let name_node = get(entries, "name")
        .ok_or_else(|| reader.err(node.line, &name_path, "missing: every key needs a name"))?;
    fields.add("name", &name_path, name_node.line);
    let mut key = DesiredKey {
        name: reader.string(name_node, &name_path)?,
        description: String::new(),
        owner: None,
        enabled: true,
        // The file is the truth for every field it can express: absent = none.
        tags: Some(BTreeMap::new()),
        expires_at: Some(0),
        value: None,
        line: node.line,
    };
    if let Some(n) = get(entries, "description") {
        let p = join(path, "description");
        fields.add("description", &p, n.line);
        key.description = reader.string(n, &p)?;
    }
    if let Some(n) = get(entries, "owner") {
        let p = join(path, "owner");
        fields.add("owner", &p, n.line);
        key.owner = Some(reader.string(n, &p)?);
    }
    if let Some(n) = get(entries, "enabled") {
        key.enabled = reader.bool(n, &join(path, "enabled"))?;
    }
    if let Some(n) = get(entries, "expires_at") {
        let p = join(path, "expires_at");
        fields.add("expires_at", &p, n.line);
        key.expires_at = Some(match &n.value {
            Value::Int(_) => reader.u64(n, &p)?,
            _ => {
                let text = reader.string(n, &p)?;
                crate::when::parse_time_ms(&text, None).map_err(|e| reader.err(n.line, &p, e))?
            }
        });
    }
    if let Some(n) = get(entries, "tags") {
        let p = join(path, "tags");
        fields.add("tags", &p, n.line);
        let mut tags = BTreeMap::new();
        for (k, v) in reader.map(n, &p)? {
            tags.insert(k.clone(), reader.string(v, &join(&p, k))?);
        }
        key.tags = Some(tags);
    }
    match (get(entries, "value"), get(entries, "value_env")) {
        (Some(a), Some(_)) => {
            return Err(reader.err(
                a.line,
                &join(path, "value"),
                "give `value` or `value_env`, not both",
            ));
        }
        (Some(n), None) => {
            let p = join(path, "value");
            fields.add("value", &p, n.line);
            key.value = Some(reader.string(n, &p)?);
        }
        (None, Some(n)) => {
            let p = join(path, "value_env");
            fields.add("value", &p, n.line);
            let var = reader.string(n, &p)?;
            key.value = Some(std::env::var(&var).map_err(|_| {
                reader.err(
                    n.line,
                    &p,
                    format!("the environment variable {var} is not set"),
                )
            })?);
        }
        (None, None) => {}
    }
    check_key(reader, &key, &fields)?;
    let mut attachments = Vec::new();
    if let Some(n) = get(entries, "plans") {
        let p = join(path, "plans");
        for (i, item) in reader.seq(n, &p)?.iter().enumerate() {
            let ip = format!("{p}[{i}]");
            match &item.value {
                Value::Map(m) => {
                    reader.only(m, &ip, &["plan", "extra"])?;
                    let plan = get(m, "plan").ok_or_else(|| {
                        reader.err(item.line, &join(&ip, "plan"), "missing: the plan's name")
                    })?;
                    let extra = match get(m, "extra") {
                        Some(e) => {
                            let ep = join(&ip, "extra");
                            let extra = reader.u64(e, &ep)?;
                            if extra > quota_core::limits::MAX_EXTRA {
                                return Err(reader.err(
                                    e.line,
                                    &ep,
                                    format!(
                                        "{extra} is more than the most extra quota, {}",
                                        quota_core::limits::MAX_EXTRA
                                    ),
                                ));
                            }
                            extra
                        }
                        None => 0,
                    };
                    attachments.push((reader.string(plan, &join(&ip, "plan"))?, extra, item.line));
                }
                _ => attachments.push((reader.string(item, &ip)?, 0, item.line)),
            }
        }
    }
    Ok((key, attachments))
}

#[cfg(test)]
mod tests {
    use super::super::load_str;
    use crate::cli::FormatArg;
    use quota_proto::v1;

    const YAML: &str = "\
plans:
  - name: gold
    description: Paying customers
    throttle: {rate_limit: 100, burst_limit: 200}
    quota: {limit: 1000, period: week, week_start: sunday}
    stages: [shop/prod, {api: shop, stage: beta}]
    route_throttles:
      \"POST /orders\": {rate_limit: 5, burst_limit: 10}
  - name: free
keys:
  - name: alice
    owner: acme
    tags: {team: web}
    expires_at: 2030-01-01
    plans: [gold, {plan: free, extra: 50}]
  - name: bob
    enabled: false
";

    // Property: every field of the native YAML format reaches the desired state.
    // Set-up: two plans (one with everything), two keys. Pass: the values below.
    #[test]
    fn native_yaml() {
        let d = load_str("q.yaml", YAML, FormatArg::Auto, None).unwrap();
        assert_eq!(d.format, "native");
        let gold = &d.plans[0];
        let quota = gold.spec.quota.as_ref().unwrap();
        assert_eq!(quota.week_start, i32::from(v1::Weekday::Sunday));
        assert_eq!(gold.spec.stages.len(), 2);
        assert_eq!(gold.spec.route_throttles["POST /orders"].burst_limit, 10);
        assert_eq!(d.plans[1].keys.get("alice"), Some(&50));
        assert_eq!(d.keys[0].expires_at, Some(1_893_456_000_000));
        assert!(!d.keys[1].enabled);
    }

    // Property: TOML gives the same state, and its errors name the line.
    // Set-up: the same plans and keys in TOML; then a bad period on line 3.
    // Pass: plan and key names match; the error names line 3 and the field.
    #[test]
    fn native_toml() {
        let text = "\
[[plans]]
name = \"gold\"
quota = { limit = 1000, period = \"week\" }

[[keys]]
name = \"alice\"
plans = [\"gold\"]
";
        let d = load_str("q.toml", text, FormatArg::Auto, None).unwrap();
        assert_eq!(d.plans[0].keys.get("alice"), Some(&0));
        let bad = text.replace("\"week\"", "\"fortnight\"");
        let e = load_str("q.toml", &bad, FormatArg::Auto, None).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "plans[0].quota.period"));
    }

    // Property: semantic errors found by quota-core's validation name the file's field.
    // Set-up: an offset not below the limit, an unknown plan, a bad route.
    // Pass: the line and field of each.
    #[test]
    fn validation_errors_located() {
        let bad = YAML.replace("week_start: sunday}", "offset: 1000}");
        let e = load_str("q.yaml", &bad, FormatArg::Auto, None).unwrap_err();
        assert_eq!(
            (e.line, e.field.as_str()),
            (5, "plans[0].quota.offset"),
            "{e}"
        );
        let bad = YAML.replace("plans: [gold,", "plans: [silver,");
        let e = load_str("q.yaml", &bad, FormatArg::Auto, None).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (15, "keys[0].plans"), "{e}");
        let bad = YAML.replace("POST /orders", "FETCH /orders");
        let e = load_str("q.yaml", &bad, FormatArg::Auto, None).unwrap_err();
        assert_eq!(e.field, "plans[0].route_throttles", "{e}");
    }
}
