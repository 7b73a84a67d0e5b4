//! JSON-patch operations (`patchOperations`) as the managed service accepts them for API
//! keys, usage plans and usage. Paths are JSON pointers (`~1` stands for `/`, `~0` for `~`).
//! A list is applied in order to a copy, validated as a whole, and refused as a whole: an
//! unknown path or a bad value changes nothing.

use super::RestError;
use super::json::{
    MAX_PATCH_OPERATIONS, PatchOperation, non_negative, parse_period, parse_route_key,
};
use quota_core::{
    ApiStage, Description, KeyPatch, Name, Owner, PlanSpec, RawPlanSpec, RawQuota, Route, Throttle,
};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Add,
    Remove,
    Replace,
}

struct Patch {
    op: Op,
    path: String,
    segments: Vec<String>,
    value: Option<String>,
}

impl Patch {
    fn value(&self) -> Result<&str, RestError> {
        self.value.as_deref().ok_or_else(|| {
            RestError::bad_request(format!(
                "Invalid patch operation: '{}' on {} needs a value",
                op_name(self.op),
                self.path
            ))
        })
    }

    fn segments(&self) -> Vec<&str> {
        self.segments.iter().map(String::as_str).collect()
    }

    fn invalid_path(&self, allowed: &str) -> RestError {
        RestError::bad_request(format!(
            "Invalid patch path '{}' specified for op '{}'. Must be one of: {allowed}",
            self.path,
            op_name(self.op)
        ))
    }
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Add => "add",
        Op::Remove => "remove",
        Op::Replace => "replace",
    }
}

fn parse_ops(ops: Vec<PatchOperation>) -> Result<Vec<Patch>, RestError> {
    if ops.len() > MAX_PATCH_OPERATIONS {
        return Err(RestError::bad_request(format!(
            "patchOperations: {} operations, at most {MAX_PATCH_OPERATIONS} are accepted",
            ops.len()
        )));
    }
    ops.into_iter()
        .map(|o| {
            let op = match o.op.as_str() {
                "add" => Op::Add,
                "remove" => Op::Remove,
                "replace" => Op::Replace,
                other => {
                    return Err(RestError::bad_request(format!(
                        "Invalid patch operation specified: '{other}'. Must be one of: [add, remove, replace]"
                    )));
                }
            };
            let segments = pointer(&o.path)?;
            Ok(Patch {
                op,
                path: o.path,
                segments,
                value: o.value,
            })
        })
        .collect()
}

/// The unescaped segments of a JSON pointer.
fn pointer(path: &str) -> Result<Vec<String>, RestError> {
    let rest = path.strip_prefix('/').ok_or_else(|| {
        RestError::bad_request(format!("Invalid patch path '{path}': must start with '/'"))
    })?;
    Ok(rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn parse_bool(field: &str, v: &str) -> Result<bool, RestError> {
    if v.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if v.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(RestError::bad_request(format!(
            "{field}: `{v}` is not true or false"
        )))
    }
}

fn parse_u64(field: &str, v: &str) -> Result<u64, RestError> {
    let n: i64 = v
        .trim()
        .parse()
        .map_err(|_| RestError::bad_request(format!("{field}: `{v}` is not an integer")))?;
    non_negative(field, n)
}

fn parse_f64(field: &str, v: &str) -> Result<f64, RestError> {
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .ok_or_else(|| RestError::bad_request(format!("{field}: `{v}` is not a number")))
}

const KEY_PATHS: &str = "[/name, /description, /enabled, /customerId]";

/// The key change a list of operations asks for.
pub fn key_patch(ops: Vec<PatchOperation>) -> Result<KeyPatch, RestError> {
    let mut patch = KeyPatch::default();
    for p in parse_ops(ops)? {
        match (p.op, p.segments().as_slice()) {
            (Op::Replace, ["name"]) => patch.name = Some(Name::new(p.value()?)?),
            (Op::Replace, ["description"]) => {
                patch.description = Some(Description::new(p.value.clone().unwrap_or_default())?)
            }
            (Op::Replace, ["enabled"]) => patch.enabled = Some(parse_bool("enabled", p.value()?)?),
            (Op::Replace, ["customerId"]) => {
                patch.owner = Some(match p.value.as_deref() {
                    Some(v) if !v.is_empty() => Some(Owner::new(v)?),
                    _ => None,
                })
            }
            (Op::Remove, ["customerId"]) => patch.owner = Some(None),
            (Op::Add | Op::Remove, ["stages"]) => {
                return Err(RestError::bad_request(
                    "stage keys are not supported by quotad: attach the key to a usage plan that covers the stage",
                ));
            }
            _ => return Err(p.invalid_path(KEY_PATHS)),
        }
    }
    Ok(patch)
}

const PLAN_PATHS: &str = "[/name, /description, /throttle/burstLimit, /throttle/rateLimit, /quota/limit, /quota/offset, /quota/period, /apiStages, /apiStages/{apiId}:{stage}/throttle/{resourcePath}/{httpMethod}/(burstLimit|rateLimit)]";

/// A throttle being edited: either limit may be missing until the end.
#[derive(Clone, Copy, Default)]
struct Partial {
    burst: Option<u64>,
    rate: Option<f64>,
}

impl Partial {
    fn of(t: Throttle) -> Partial {
        Partial {
            burst: Some(t.burst()),
            rate: Some(t.rate_per_sec()),
        }
    }

    fn set(&mut self, field: &str, which: &str, value: &str) -> Result<(), RestError> {
        match which {
            "burstLimit" => self.burst = Some(parse_u64(&format!("{field}/burstLimit"), value)?),
            "rateLimit" => self.rate = Some(parse_f64(&format!("{field}/rateLimit"), value)?),
            _ => {
                return Err(RestError::bad_request(format!(
                    "Invalid patch path '{field}/{which}'"
                )));
            }
        }
        Ok(())
    }

    fn finish(self, field: &str) -> Result<Throttle, RestError> {
        match (self.burst, self.rate) {
            (Some(b), Some(r)) => {
                Throttle::new(r, b).map_err(|e| RestError::bad_request(format!("{field}: {e}")))
            }
            _ => Err(RestError::bad_request(format!(
                "{field}: both burstLimit and rateLimit must be set"
            ))),
        }
    }
}

fn parse_stage(v: &str) -> Result<ApiStage, RestError> {
    let (api, stage) = v.split_once(':').ok_or_else(|| {
        RestError::bad_request(format!(
            "`{v}` is not an API stage of the form {{apiId}}:{{stage}}"
        ))
    })?;
    Ok(ApiStage::new(api, stage)?)
}

/// Apply a list of operations to a plan's definition.
pub fn plan_patch(current: &PlanSpec, ops: Vec<PatchOperation>) -> Result<PlanSpec, RestError> {
    let mut raw = RawPlanSpec::from(current.clone());
    let mut throttle = raw.throttle.map(Partial::of);
    let mut quota: Option<RawQuota> = raw.quota.map(RawQuota::from);
    let mut quota_limit_set = quota.is_some();
    let mut quota_period_set = quota.is_some();
    let mut routes: BTreeMap<Route, Partial> = raw
        .route_throttles
        .iter()
        .map(|(r, t)| (r.clone(), Partial::of(*t)))
        .collect();
    for p in parse_ops(ops)? {
        let segments = p.segments();
        match (p.op, segments.as_slice()) {
            (Op::Replace, ["name"]) => raw.name = Name::new(p.value()?)?,
            (Op::Replace, ["description"]) => {
                raw.description = Description::new(p.value.clone().unwrap_or_default())?
            }
            (_, ["productCode"]) => {
                return Err(RestError::bad_request(
                    "productCode: marketplace product codes are not supported by quotad",
                ));
            }
            (Op::Remove, ["throttle"]) => throttle = None,
            (Op::Add | Op::Replace, ["throttle", which @ ("burstLimit" | "rateLimit")]) => throttle
                .get_or_insert_with(Partial::default)
                .set("/throttle", which, p.value()?)?,
            (Op::Remove, ["quota"]) => {
                quota = None;
                quota_limit_set = false;
                quota_period_set = false;
            }
            (Op::Add | Op::Replace, ["quota", which @ ("limit" | "offset" | "period")]) => {
                let q = quota.get_or_insert_with(RawQuota::default);
                let v = p.value()?;
                match *which {
                    "limit" => {
                        q.limit = parse_u64("/quota/limit", v)?;
                        quota_limit_set = true;
                    }
                    "offset" => q.offset = parse_u64("/quota/offset", v)?,
                    _ => {
                        q.period = parse_period(v)?;
                        quota_period_set = true;
                    }
                }
            }
            (Op::Add, ["apiStages"]) => {
                raw.stages.insert(parse_stage(p.value()?)?);
            }
            (Op::Remove, ["apiStages"]) => {
                let stage = parse_stage(p.value()?)?;
                if !raw.stages.remove(&stage) {
                    return Err(RestError::not_found(format!(
                        "API stage {}:{} is not in this usage plan",
                        stage.api(),
                        stage.stage()
                    )));
                }
            }
            (op, ["apiStages", stage, "throttle", rest @ ..]) => {
                let stage = parse_stage(stage)?;
                if !raw.stages.contains(&stage) {
                    return Err(RestError::not_found(format!(
                        "API stage {}:{} is not in this usage plan",
                        stage.api(),
                        stage.stage()
                    )));
                }
                match (op, rest) {
                    (Op::Remove, []) => routes.clear(),
                    (Op::Remove, [resource, method]) => {
                        let route = parse_route_key(&format!("{resource}/{method}"))?;
                        if routes.remove(&route).is_none() {
                            return Err(RestError::not_found(format!(
                                "no method throttle for {resource}/{method}"
                            )));
                        }
                    }
                    (
                        Op::Add | Op::Replace,
                        [resource, method, which @ ("burstLimit" | "rateLimit")],
                    ) => {
                        let key = format!("{resource}/{method}");
                        let route = parse_route_key(&key)?;
                        routes
                            .entry(route)
                            .or_default()
                            .set(&key, which, p.value()?)?
                    }
                    _ => return Err(p.invalid_path(PLAN_PATHS)),
                }
            }
            _ => return Err(p.invalid_path(PLAN_PATHS)),
        }
    }
    raw.throttle = throttle.map(|t| t.finish("throttle")).transpose()?;
    raw.quota = match quota {
        None => None,
        Some(_) if !quota_limit_set => {
            return Err(RestError::bad_request("quota: /quota/limit must be set"));
        }
        Some(_) if !quota_period_set => {
            return Err(RestError::bad_request("quota: /quota/period must be set"));
        }
        Some(q) => Some(quota_core::QuotaSpec::try_from(q)?),
    };
    raw.route_throttles = routes
        .into_iter()
        .map(|(r, t)| {
            let field = super::json::route_key(&r);
            t.finish(&field).map(|t| (r, t))
        })
        .collect::<Result<_, _>>()?;
    if raw.stages.is_empty() && !raw.route_throttles.is_empty() {
        raw.route_throttles.clear();
    }
    Ok(PlanSpec::try_from(raw)?)
}

/// The new remaining quota a usage update asks for (`replace /remaining`).
pub fn remaining(ops: Vec<PatchOperation>) -> Result<u64, RestError> {
    let mut out = None;
    for p in parse_ops(ops)? {
        match (p.op, p.segments().as_slice()) {
            (Op::Replace, ["remaining"]) => out = Some(parse_u64("/remaining", p.value()?)?),
            _ => return Err(p.invalid_path("[/remaining]")),
        }
    }
    out.ok_or_else(|| RestError::bad_request("patchOperations: replace /remaining is required"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quota_core::PeriodUnit;

    fn op(op: &str, path: &str, value: Option<&str>) -> PatchOperation {
        PatchOperation {
            op: op.into(),
            path: path.into(),
            value: value.map(str::to_owned),
            from: None,
        }
    }

    fn plan() -> PlanSpec {
        let mut raw = RawPlanSpec::named(Name::new("gold").unwrap());
        raw.stages.insert(ApiStage::new("a1", "prod").unwrap());
        PlanSpec::try_from(raw).unwrap()
    }

    // Property: each supported key path changes its field only. Set-up: one list.
    // Pass: the patch holds exactly those values.
    #[test]
    fn key_paths() {
        let p = key_patch(vec![
            op("replace", "/name", Some("new")),
            op("replace", "/enabled", Some("false")),
            op("replace", "/customerId", Some("cust-1")),
            op("replace", "/description", Some("d")),
        ])
        .unwrap();
        assert_eq!(p.name.unwrap().as_str(), "new");
        assert_eq!(p.enabled, Some(false));
        assert_eq!(p.owner.unwrap().unwrap().as_str(), "cust-1");
        assert!(p.tags.is_none() && p.expires_at.is_none());
        let e = key_patch(vec![op("replace", "/nope", Some("x"))]).unwrap_err();
        assert!(
            e.message.contains("Invalid patch path '/nope'"),
            "{}",
            e.message
        );
        let e = key_patch(vec![op("move", "/name", Some("x"))]).unwrap_err();
        assert!(e.message.contains("'move'"), "{}", e.message);
        assert!(key_patch(vec![op("replace", "/enabled", Some("yes"))]).is_err());
        assert!(key_patch(vec![op("add", "/stages", Some("a/b"))]).is_err());
    }

    // Property: plan paths build a valid spec, partial throttles and quotas are completed
    // or refused, and per-method throttles use escaped resource paths. Set-up: lists on a
    // plan with one stage. Pass: as asserted.
    #[test]
    fn plan_paths() {
        let spec = plan_patch(
            &plan(),
            vec![
                op("replace", "/throttle/burstLimit", Some("10")),
                op("replace", "/throttle/rateLimit", Some("5.5")),
                op("replace", "/quota/limit", Some("100")),
                op("replace", "/quota/period", Some("WEEK")),
                op(
                    "replace",
                    "/apiStages/a1:prod/throttle/~1pets~1{id}/GET/rateLimit",
                    Some("1"),
                ),
                op(
                    "replace",
                    "/apiStages/a1:prod/throttle/~1pets~1{id}/GET/burstLimit",
                    Some("2"),
                ),
                op("add", "/apiStages", Some("a2:beta")),
            ],
        )
        .unwrap();
        assert_eq!(spec.throttle().unwrap().burst(), 10);
        assert_eq!(spec.quota().unwrap().period(), PeriodUnit::Week);
        assert_eq!(spec.stages().len(), 2);
        let route = Route::new("GET /pets/{id}").unwrap();
        assert_eq!(spec.route_throttles()[&route].burst(), 2);

        // Removing the method throttle, the quota and the throttle.
        let spec = plan_patch(
            &spec,
            vec![
                op(
                    "remove",
                    "/apiStages/a1:prod/throttle/~1pets~1{id}/GET",
                    None,
                ),
                op("remove", "/quota", None),
                op("remove", "/throttle", None),
            ],
        )
        .unwrap();
        assert!(spec.route_throttles().is_empty());
        assert!(spec.quota().is_none() && spec.throttle().is_none());

        let err = |ops| plan_patch(&plan(), ops).unwrap_err().message;
        assert!(err(vec![op("replace", "/throttle/rateLimit", Some("5"))]).contains("burstLimit"));
        assert!(err(vec![op("replace", "/quota/limit", Some("5"))]).contains("period"));
        assert!(err(vec![op("replace", "/quota/limit", Some("-5"))]).contains("negative"));
        assert!(err(vec![op("replace", "/bogus", Some("5"))]).contains("Invalid patch path"));
        assert!(err(vec![op("remove", "/apiStages", Some("zz:top"))]).contains("not in"));
        assert!(
            err(vec![op(
                "replace",
                "/apiStages/zz:top/throttle/~1a/GET/rateLimit",
                Some("1")
            )])
            .contains("not in")
        );
        assert!(err(vec![op("replace", "/productCode", Some("x"))]).contains("productCode"));
        assert!(err(vec![op("replace", "/name", None)]).contains("needs a value"));
    }

    // Property: a usage update accepts exactly `replace /remaining`. Set-up: lists.
    // Pass: the value, or an error.
    #[test]
    fn remaining_path() {
        assert_eq!(
            remaining(vec![op("replace", "/remaining", Some("42"))]).unwrap(),
            42
        );
        assert!(remaining(vec![op("add", "/remaining", Some("42"))]).is_err());
        assert!(remaining(vec![op("replace", "/remaining", Some("x"))]).is_err());
        assert!(remaining(vec![]).is_err());
    }
}
