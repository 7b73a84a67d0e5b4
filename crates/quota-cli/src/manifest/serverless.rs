//! The Serverless Framework's API key sections of a `serverless.yml`.
//!
//! Read, in `provider.apiGateway` (the current placement) or directly in `provider` (the
//! older one): `usagePlan` (a mapping for one plan, or a list of single-entry mappings
//! `name: {quota, throttle}`) and `apiKeys` (a list of names, of `{name, value,
//! description, customerId, enabled}` mappings, or of single-entry mappings `plan: [keys]`
//! grouping keys under a plan). Every other section is ignored. See
//! [`super::APPLY_HELP`] for the decisions taken where the Framework is silent.

use super::Desired;
use super::node::{Node, Reader, Value, get, join};
use super::{DesiredKey, DesiredPlan, FieldMap, ManifestError, canonical_plan, check_key};
use quota_proto::v1;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The Framework's default stage.
const DEFAULT_STAGE: &str = "dev";
/// Fields of an API key given as a mapping.
const KEY_FIELDS: &[&str] = &["name", "value", "description", "customerId", "enabled"];
/// Longest chain of variables resolved in one string (a guard against loops).
const MAX_VARIABLES_PER_STRING: usize = 32;

/// What `${...}` variables resolve to.
struct Vars {
    /// `--stage`, when given.
    opt_stage: Option<String>,
    /// The effective stage; `None` while provider.stage itself is being resolved.
    stage: Option<String>,
    service: String,
    provider_stage: Option<String>,
}

impl Vars {
    fn lookup(&self, name: &str) -> Result<Option<String>, String> {
        let name = name.trim();
        Ok(match name {
            "opt:stage" => self.opt_stage.clone().or_else(|| self.stage.clone()),
            "sls:stage" | "self:provider.stage" if self.stage.is_some() => self.stage.clone(),
            "sls:stage" | "self:provider.stage" => self.provider_stage.clone(),
            "self:service" => Some(self.service.clone()),
            _ => {
                if let Some(var) = name.strip_prefix("env:") {
                    std::env::var(var.trim()).ok()
                } else if let Some(text) = quoted(name) {
                    Some(text.to_owned())
                } else if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
                    Some(name.to_owned())
                } else {
                    return Err(format!(
                        "cannot resolve `${{{name}}}`: quotactl resolves opt:stage, sls:stage, \
                         self:service, self:provider.stage and env:NAME; write the value itself"
                    ));
                }
            }
        })
    }

    /// Replace every `${...}` in `text`.
    fn resolve(
        &self,
        reader: &Reader<'_>,
        text: &str,
        line: usize,
        field: &str,
    ) -> Result<String, ManifestError> {
        let mut out = String::new();
        let mut rest = text;
        let mut count = 0;
        while let Some(start) = rest.find("${") {
            count += 1;
            if count > MAX_VARIABLES_PER_STRING {
                return Err(reader.err(line, field, "too many variables in one value"));
            }
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| reader.err(line, field, format!("unclosed `${{` in `{text}`")))?;
            let inner = &after[..end];
            let mut value = None;
            let mut alternatives = inner.split(',').peekable();
            while let Some(alt) = alternatives.next() {
                match self.lookup(alt) {
                    Ok(Some(v)) => {
                        value = Some(v);
                        break;
                    }
                    Ok(None) => {}
                    Err(e) if alternatives.peek().is_none() => {
                        return Err(reader.err(line, field, e));
                    }
                    Err(_) => {}
                }
            }
            let value = value.ok_or_else(|| {
                reader.err(
                    line,
                    field,
                    format!(
                        "`${{{inner}}}` has no value: pass --stage, set the environment \
                         variable, or add a fallback (`${{{inner}, 'value'}}`)"
                    ),
                )
            })?;
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn string(
        &self,
        reader: &Reader<'_>,
        node: &Node,
        field: &str,
    ) -> Result<String, ManifestError> {
        let raw = reader.string(node, field)?;
        self.resolve(reader, &raw, node.line, field)
    }
}

fn quoted(s: &str) -> Option<&str> {
    let s = s.trim();
    if s.len() >= 2
        && ((s.starts_with('\'') && s.ends_with('\'')) || (s.starts_with('"') && s.ends_with('"')))
    {
        Some(&s[1..s.len() - 1])
    } else {
        None
    }
}

/// Resolve a scalar node that may hold variables into a new scalar node (so numbers
/// written as `${env:LIMIT}` still parse).
fn resolved(
    vars: &Vars,
    reader: &Reader<'_>,
    node: &Node,
    field: &str,
) -> Result<Node, ManifestError> {
    match &node.value {
        Value::Str(s) if s.contains("${") => Ok(Node {
            line: node.line,
            value: Value::Str(vars.resolve(reader, s, node.line, field)?),
        }),
        _ => Ok(node.clone()),
    }
}

/// Read the API key sections of a serverless.yml.
pub fn read(
    reader: &Reader<'_>,
    root: &Node,
    stage_flag: Option<&str>,
) -> Result<Desired, ManifestError> {
    let top = reader.map(root, "")?;
    let mut vars = Vars {
        opt_stage: stage_flag.map(str::to_owned),
        stage: None,
        service: String::new(),
        provider_stage: None,
    };
    let service_node = get(top, "service").ok_or_else(|| {
        reader.err(
            1,
            "service",
            "missing: the service name is the API the plans cover",
        )
    })?;
    let service = match &service_node.value {
        Value::Map(entries) => {
            let name = get(entries, "name")
                .ok_or_else(|| reader.err(service_node.line, "service.name", "missing"))?;
            vars.string(reader, name, "service.name")?
        }
        _ => vars.string(reader, service_node, "service")?,
    };
    vars.service = service.clone();
    let provider_node = get(top, "provider");
    let provider: &[(String, Node)] = match provider_node {
        Some(p) => reader.map(p, "provider")?,
        None => &[],
    };
    let provider_stage = match get(provider, "stage") {
        Some(node) => Some(vars.string(reader, node, "provider.stage")?),
        None => None,
    };
    vars.provider_stage = provider_stage.clone();
    let stage = stage_flag
        .map(str::to_owned)
        .or(provider_stage)
        .unwrap_or_else(|| DEFAULT_STAGE.to_owned());
    vars.stage = Some(stage.clone());

    // The current placement, provider.apiGateway.*, or the older provider.*.
    let gateway: Option<(&[(String, Node)], &str)> = match get(provider, "apiGateway") {
        Some(node) => Some((
            reader.map(node, "provider.apiGateway")?,
            "provider.apiGateway",
        )),
        None => None,
    };
    let pick = |name: &str| -> Result<Option<(&Node, String)>, ManifestError> {
        let new = gateway.and_then(|(g, path)| get(g, name).map(|n| (n, join(path, name))));
        let old = get(provider, name).map(|n| (n, join("provider", name)));
        match (new, old) {
            (Some((n, path)), Some((o, _))) => Err(reader.err(
                o.line.min(n.line),
                &path,
                format!("given both as provider.{name} and provider.apiGateway.{name}; keep one (provider.apiGateway.{name})"),
            )),
            (Some(x), None) | (None, Some(x)) => Ok(Some(x)),
            (None, None) => Ok(None),
        }
    };
    let usage_plan = pick("usagePlan")?;
    let api_keys = pick("apiKeys")?;

    let stage_of_service = v1::ApiStage {
        api: service.clone(),
        stage: stage.clone(),
    };
    let mut plans: Vec<(DesiredPlan, FieldMap)> = Vec::new();
    // The plan keys go to when they are not grouped under a plan name.
    let mut default_plan: Option<usize> = None;
    match &usage_plan {
        None => {
            if api_keys.is_some() {
                // The Framework makes a plan without limits for the keys: so do we.
                let name = format!("{service}-{stage}");
                let fields = FieldMap::new("provider.apiGateway.apiKeys", 1);
                let spec = v1::PlanSpec {
                    name,
                    stages: vec![stage_of_service.clone()],
                    ..Default::default()
                };
                plans.push((
                    DesiredPlan {
                        spec,
                        keys: BTreeMap::new(),
                        line: api_keys.as_ref().map_or(1, |(n, _)| n.line),
                    },
                    fields,
                ));
                default_plan = Some(0);
            }
        }
        Some((node, path)) => match &node.value {
            Value::Map(_) => {
                let name = format!("{service}-{stage}");
                plans.push(read_plan(
                    reader,
                    &vars,
                    node,
                    path,
                    name,
                    node.line,
                    &stage_of_service,
                )?);
                default_plan = Some(0);
            }
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    let entries = reader.map(item, &item_path)?;
                    let [(name, body)] = entries else {
                        return Err(reader.err(
                            item.line,
                            &item_path,
                            "each usage plan is a mapping with one entry, `NAME: {quota: ..., throttle: ...}`",
                        ));
                    };
                    let name_path = join(&item_path, name);
                    let name = vars.resolve(reader, name, item.line, &name_path)?;
                    plans.push(read_plan(
                        reader,
                        &vars,
                        body,
                        &name_path,
                        name,
                        item.line,
                        &stage_of_service,
                    )?);
                }
                if plans.len() == 1 {
                    default_plan = Some(0);
                }
            }
            other => {
                return Err(reader.err(
                    node.line,
                    path,
                    format!(
                        "expected a mapping or a list of plans, found {}",
                        other.kind()
                    ),
                ));
            }
        },
    }

    let mut keys: Vec<(DesiredKey, FieldMap)> = Vec::new();
    if let Some((node, path)) = &api_keys {
        let items = reader.seq(node, path)?;
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let group = match &item.value {
                Value::Map(entries) => match entries.as_slice() {
                    [(name, list)] if !KEY_FIELDS.contains(&name.as_str()) => Some((name, list)),
                    _ => None,
                },
                _ => None,
            };
            match group {
                Some((plan_name, list)) => {
                    let group_path = join(&item_path, plan_name);
                    let plan_name = vars.resolve(reader, plan_name, item.line, &group_path)?;
                    let index = plans
                        .iter()
                        .position(|(p, _)| p.spec.name == plan_name)
                        .ok_or_else(|| {
                            reader.err(
                                item.line,
                                &group_path,
                                format!("no usage plan is named `{plan_name}`; add it to usagePlan, or fix the name"),
                            )
                        })?;
                    for (j, key_node) in reader.seq(list, &group_path)?.iter().enumerate() {
                        let key_path = format!("{group_path}[{j}]");
                        let key = read_key(reader, &vars, key_node, &key_path, &service, &stage)?;
                        attach(&mut plans[index].0, &mut keys, key, reader)?;
                    }
                }
                None => {
                    let key = read_key(reader, &vars, item, &item_path, &service, &stage)?;
                    let Some(index) = default_plan else {
                        return Err(reader.err(
                            item.line,
                            &item_path,
                            "with several usage plans, list each key under its plan's name (`- PLAN: [key, ...]`)",
                        ));
                    };
                    attach(&mut plans[index].0, &mut keys, key, reader)?;
                }
            }
        }
    }

    let mut desired = Desired {
        format: "serverless",
        ..Default::default()
    };
    for (mut plan, fields) in plans {
        plan.spec = canonical_plan(reader, plan.spec, &fields)?;
        desired.plans.push(plan);
    }
    for (key, fields) in keys {
        check_key(reader, &key, &fields)?;
        desired.keys.push(key);
    }
    Ok(desired)
}

/// Attach `key` to `plan`, adding the key to the list unless the same key (same fields)
/// is already there from another plan.
fn attach(
    plan: &mut DesiredPlan,
    keys: &mut Vec<(DesiredKey, FieldMap)>,
    key: (DesiredKey, FieldMap),
    reader: &Reader<'_>,
) -> Result<(), ManifestError> {
    let name = key.0.name.clone();
    if plan.keys.insert(name.clone(), 0).is_some() {
        return Err(reader.err(
            key.0.line,
            "apiKeys",
            format!(
                "key `{name}` is listed twice under plan `{}`",
                plan.spec.name
            ),
        ));
    }
    match keys.iter().find(|(k, _)| k.name == name) {
        Some((existing, _))
            if *existing
                == DesiredKey {
                    line: existing.line,
                    ..key.0.clone()
                } => {}
        Some(_) => {
            return Err(reader.err(
                key.0.line,
                "apiKeys",
                format!("key `{name}` is listed again with different fields; list it once per plan with the same fields"),
            ));
        }
        None => keys.push(key),
    }
    Ok(())
}

fn read_plan(
    reader: &Reader<'_>,
    vars: &Vars,
    body: &Node,
    path: &str,
    name: String,
    line: usize,
    stage: &v1::ApiStage,
) -> Result<(DesiredPlan, FieldMap), ManifestError> {
    let mut fields = FieldMap::new(path, line);
    fields.add("name", path, line);
    let mut spec = v1::PlanSpec {
        name,
        stages: vec![stage.clone()],
        ..Default::default()
    };
    let entries: &[(String, Node)] = match &body.value {
        Value::Null => &[],
        _ => reader.map(body, path)?,
    };
    reader.only(entries, path, &["quota", "throttle"])?;
    if let Some(quota) = get(entries, "quota") {
        let qpath = join(path, "quota");
        let q = reader.map(quota, &qpath)?;
        reader.only(q, &qpath, &["limit", "offset", "period"])?;
        fields.add("quota", &qpath, quota.line);
        let limit_node = get(q, "limit").ok_or_else(|| {
            reader.err(
                quota.line,
                &join(&qpath, "limit"),
                "missing: the quota needs a limit",
            )
        })?;
        let limit_path = join(&qpath, "limit");
        fields.add("quota.limit", &limit_path, limit_node.line);
        let limit = reader.u64(
            &resolved(vars, reader, limit_node, &limit_path)?,
            &limit_path,
        )?;
        let offset = match get(q, "offset") {
            Some(n) => {
                let p = join(&qpath, "offset");
                fields.add("quota.offset", &p, n.line);
                reader.u64(&resolved(vars, reader, n, &p)?, &p)?
            }
            None => 0,
        };
        let period_path = join(&qpath, "period");
        let period_node = get(q, "period").ok_or_else(|| {
            reader.err(quota.line, &period_path, "missing: one of DAY, WEEK, MONTH")
        })?;
        fields.add("quota.period", &period_path, period_node.line);
        let period = vars.string(reader, period_node, &period_path)?;
        let period = parse_period(&period).ok_or_else(|| {
            reader.err(
                period_node.line,
                &period_path,
                format!("`{period}` is not one of DAY, WEEK, MONTH"),
            )
        })?;
        spec.quota = Some(v1::Quota {
            limit,
            period: period.into(),
            offset,
            ..Default::default()
        });
    }
    if let Some(throttle) = get(entries, "throttle") {
        let tpath = join(path, "throttle");
        let t = reader.map(throttle, &tpath)?;
        reader.only(t, &tpath, &["burstLimit", "rateLimit"])?;
        fields.add("throttle", &tpath, throttle.line);
        let rate_path = join(&tpath, "rateLimit");
        let rate_node = get(t, "rateLimit")
            .ok_or_else(|| reader.err(throttle.line, &rate_path, "missing: requests per second"))?;
        fields.add("throttle.rate_limit", &rate_path, rate_node.line);
        let rate = reader.f64(&resolved(vars, reader, rate_node, &rate_path)?, &rate_path)?;
        let burst = match get(t, "burstLimit") {
            Some(n) => {
                let p = join(&tpath, "burstLimit");
                fields.add("throttle.burst_limit", &p, n.line);
                reader.u64(&resolved(vars, reader, n, &p)?, &p)?
            }
            // Documented: a missing burst is the rate, rounded up (at least 1).
            None => rate.ceil().max(1.0) as u64,
        };
        spec.throttle = Some(v1::Throttle {
            rate_limit: rate,
            burst_limit: burst,
        });
    }
    Ok((
        DesiredPlan {
            spec,
            keys: BTreeMap::new(),
            line,
        },
        fields,
    ))
}

fn parse_period(s: &str) -> Option<v1::Period> {
    match s.trim().to_ascii_uppercase().as_str() {
        "DAY" => Some(v1::Period::Day),
        "WEEK" => Some(v1::Period::Week),
        "MONTH" => Some(v1::Period::Month),
        _ => None,
    }
}

fn read_key(
    reader: &Reader<'_>,
    vars: &Vars,
    node: &Node,
    path: &str,
    service: &str,
    stage: &str,
) -> Result<(DesiredKey, FieldMap), ManifestError> {
    let mut fields = FieldMap::new(path, node.line);
    let mut key = DesiredKey {
        name: String::new(),
        description: String::new(),
        owner: None,
        enabled: true,
        // The Framework cannot express tags or expiry: leave them as they are.
        tags: None,
        expires_at: None,
        value: None,
        line: node.line,
    };
    match &node.value {
        Value::Map(entries) => {
            reader.only(entries, path, KEY_FIELDS)?;
            if let Some(n) = get(entries, "value") {
                let p = join(path, "value");
                fields.add("value", &p, n.line);
                key.value = Some(vars.string(reader, n, &p)?);
            }
            match get(entries, "name") {
                Some(n) => {
                    let p = join(path, "name");
                    fields.add("name", &p, n.line);
                    key.name = vars.string(reader, n, &p)?;
                }
                None => {
                    // CloudFormation names such a key itself. We need a stable name to
                    // compare by: derive it from the value's hash (not the value).
                    let Some(value) = &key.value else {
                        return Err(reader.err(
                            node.line,
                            &join(path, "name"),
                            "missing: a key needs a name or a value",
                        ));
                    };
                    let digest = Sha256::digest(value.as_bytes());
                    let short: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
                    key.name = format!("{service}-{stage}-{short}");
                }
            }
            if let Some(n) = get(entries, "description") {
                let p = join(path, "description");
                fields.add("description", &p, n.line);
                key.description = vars.string(reader, n, &p)?;
            }
            if let Some(n) = get(entries, "customerId") {
                let p = join(path, "customerId");
                fields.add("owner", &p, n.line);
                key.owner = Some(vars.string(reader, n, &p)?);
            }
            if let Some(n) = get(entries, "enabled") {
                let p = join(path, "enabled");
                key.enabled = reader.bool(&resolved(vars, reader, n, &p)?, &p)?;
            }
        }
        _ => {
            fields.add("name", path, node.line);
            key.name = vars.string(reader, node, path)?;
        }
    }
    Ok((key, fields))
}

#[cfg(test)]
mod tests {
    use super::super::{ManifestError, load_str};
    use crate::cli::FormatArg;

    const TWO_PLANS: &str = "\
service: shop
frameworkVersion: '3'
provider:
  name: aws
  stage: ${opt:stage, 'dev'}
  apiGateway:
    apiKeys:
      - free:
          - ${opt:stage}-alice
          - bob
      - paid:
          - name: carol
            value: carol-secret-value-0123456789
            description: Carol's key
            customerId: acme
          - name: dave
            enabled: false
    usagePlan:
      - free:
          quota:
            limit: 5000
            offset: 2
            period: MONTH
          throttle:
            burstLimit: 200
            rateLimit: 100
      - paid:
          quota:
            limit: 50000
            period: DAY
functions:
  hello:
    handler: handler.hello
resources:
  Resources:
    Thing:
      Type: AWS::S3::Bucket
      Properties:
        BucketName: !Ref Other
";

    fn load(text: &str, stage: Option<&str>) -> Result<super::Desired, ManifestError> {
        load_str("serverless.yml", text, FormatArg::Auto, stage)
    }

    // Property: the Framework's grouped apiKeys and list usagePlan are read as written,
    // variables resolved, other sections ignored.
    // Set-up: two plans, four keys (one imported, one disabled), --stage prod.
    // Pass: names, quotas, throttles, stages, attachments and key fields as expected.
    #[test]
    fn two_plans_four_keys() {
        let d = load(TWO_PLANS, Some("prod")).unwrap();
        assert_eq!(d.format, "serverless");
        let names: Vec<_> = d.plans.iter().map(|p| p.spec.name.as_str()).collect();
        assert_eq!(names, ["free", "paid"]);
        let free = &d.plans[0];
        let quota = free.spec.quota.as_ref().unwrap();
        assert_eq!((quota.limit, quota.offset), (5000, 2));
        assert_eq!(free.spec.throttle.as_ref().unwrap().burst_limit, 200);
        assert_eq!(free.spec.stages[0].api, "shop");
        assert_eq!(free.spec.stages[0].stage, "prod");
        assert_eq!(free.keys.keys().collect::<Vec<_>>(), ["bob", "prod-alice"]);
        let keys: Vec<_> = d.keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(keys, ["prod-alice", "bob", "carol", "dave"]);
        assert_eq!(d.keys[2].owner.as_deref(), Some("acme"));
        assert!(d.keys[2].value.is_some());
        assert!(!d.keys[3].enabled);
        assert!(!format!("{:?}", d.keys[2]).contains("carol-secret"));
    }

    // Property: without --stage, provider.stage (here its fallback) is the stage.
    // Set-up: the same file, no --stage. Pass: stage "dev" and key "dev-alice".
    #[test]
    fn stage_defaults_to_provider_stage() {
        let d = load(TWO_PLANS, None).unwrap();
        assert_eq!(d.plans[0].spec.stages[0].stage, "dev");
        assert_eq!(d.keys[0].name, "dev-alice");
    }

    // Property: errors name the line and the field.
    // Set-up: a negative limit, an unknown throttle field, a key under an unknown plan,
    // and a too-short imported value.
    // Pass: each error's line and field path.
    #[test]
    fn errors_name_line_and_field() {
        let bad = TWO_PLANS.replace("limit: 5000", "limit: -5");
        let e = load(&bad, None).unwrap_err();
        assert_eq!(
            (e.line, e.field.as_str()),
            (21, "provider.apiGateway.usagePlan[0].free.quota.limit")
        );
        let bad = TWO_PLANS.replace("rateLimit: 100", "rateLimt: 100");
        let e = load(&bad, None).unwrap_err();
        assert_eq!(
            (e.line, e.field.as_str()),
            (
                26,
                "provider.apiGateway.usagePlan[0].free.throttle.rateLimt"
            )
        );
        let bad = TWO_PLANS.replace("- paid:\n          - name", "- gold:\n          - name");
        let e = load(&bad, None).unwrap_err();
        assert_eq!(
            (e.line, e.field.as_str()),
            (11, "provider.apiGateway.apiKeys[1].gold")
        );
        let bad = TWO_PLANS.replace("carol-secret-value-0123456789", "short");
        let e = load(&bad, None).unwrap_err();
        assert_eq!(
            (e.line, e.field.as_str()),
            (13, "provider.apiGateway.apiKeys[1].paid[0].value")
        );
        assert!(!e.to_string().contains("short"), "{e}");
        let bad = TWO_PLANS.replace("limit: 50000", "limit: 0");
        let e = load(&bad, None).unwrap_err();
        assert_eq!(
            (e.line, e.field.as_str()),
            (29, "provider.apiGateway.usagePlan[1].paid.quota.limit")
        );
    }

    // Property: the older placement and a single usage plan are read too.
    // Set-up: provider.apiKeys as plain names and provider.usagePlan as one mapping.
    // Pass: one plan named SERVICE-STAGE with both keys attached.
    #[test]
    fn older_placement_single_plan() {
        let text = "\
service:
  name: api
provider:
  apiKeys:
    - one
    - name: two
  usagePlan:
    quota:
      limit: 10
      period: day
";
        let d = load(text, Some("beta")).unwrap();
        assert_eq!(d.plans.len(), 1);
        assert_eq!(d.plans[0].spec.name, "api-beta");
        assert_eq!(d.plans[0].keys.len(), 2);
        assert!(d.plans[0].spec.throttle.is_none());
    }
}
