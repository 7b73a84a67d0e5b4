//! The JSON shapes of the `apigateway` REST API (field names as the managed service spells
//! them) and their conversion to and from our model. Timestamps are epoch seconds, as the
//! rest-json protocol has them. Unknown request fields are ignored, as the managed service
//! does, so that newer SDKs keep working.

use super::RestError;
use quota_core::{
    ApiKey, ApiStage, Description, Name, Owner, PeriodUnit, PlanSpec, QuotaSpec, RawPlanSpec,
    RawQuota, Route, TagKey, TagValue, Tags, Throttle, Timestamp, UsagePlan,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most patch operations in one request.
pub const MAX_PATCH_OPERATIONS: usize = 128;

fn seconds(t: Timestamp) -> f64 {
    t.as_millis() as f64 / 1000.0
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyOut {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub enabled: bool,
    pub created_date: f64,
    pub last_updated_date: f64,
    pub stage_keys: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

impl ApiKeyOut {
    /// A key as the API shows it; `value` only right after creation.
    pub fn of(key: &ApiKey, value: Option<String>) -> ApiKeyOut {
        ApiKeyOut {
            id: key.id.to_string(),
            value,
            name: key.spec.name.to_string(),
            customer_id: key.spec.owner.as_ref().map(|o| o.to_string()),
            description: key.spec.description.to_string(),
            enabled: key.spec.enabled,
            created_date: seconds(key.created_at),
            last_updated_date: seconds(key.updated_at),
            stage_keys: Vec::new(),
            tags: key
                .spec
                .tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ThrottleJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst_limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<f64>,
}

impl ThrottleJson {
    fn of(t: Throttle) -> ThrottleJson {
        ThrottleJson {
            burst_limit: Some(i64::try_from(t.burst()).unwrap_or(i64::MAX)),
            rate_limit: Some(t.rate_per_sec()),
        }
    }

    /// Both limits are needed: our throttles are token buckets with a rate and a size.
    pub fn to_throttle(self, field: &str) -> Result<Throttle, RestError> {
        let (Some(burst), Some(rate)) = (self.burst_limit, self.rate_limit) else {
            return Err(RestError::bad_request(format!(
                "{field}: both burstLimit and rateLimit must be set"
            )));
        };
        let burst = u64::try_from(burst).map_err(|_| {
            RestError::bad_request(format!("{field}.burstLimit must not be negative"))
        })?;
        Throttle::new(rate, burst).map_err(|e| RestError::bad_request(format!("{field}: {e}")))
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QuotaJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
}

pub fn period_name(p: PeriodUnit) -> &'static str {
    match p {
        PeriodUnit::Day => "DAY",
        PeriodUnit::Week => "WEEK",
        PeriodUnit::Month => "MONTH",
    }
}

pub fn parse_period(s: &str) -> Result<PeriodUnit, RestError> {
    match s {
        "DAY" => Ok(PeriodUnit::Day),
        "WEEK" => Ok(PeriodUnit::Week),
        "MONTH" => Ok(PeriodUnit::Month),
        _ => Err(RestError::bad_request(format!(
            "quota.period: `{s}` is not one of DAY, WEEK, MONTH"
        ))),
    }
}

pub fn non_negative(field: &str, v: i64) -> Result<u64, RestError> {
    u64::try_from(v).map_err(|_| RestError::bad_request(format!("{field} must not be negative")))
}

impl QuotaJson {
    fn of(q: QuotaSpec) -> QuotaJson {
        QuotaJson {
            limit: Some(i64::try_from(q.limit()).unwrap_or(i64::MAX)),
            offset: Some(i64::try_from(q.offset()).unwrap_or(i64::MAX)),
            period: Some(period_name(q.period()).to_owned()),
        }
    }

    /// Over `base` (the plan's current quota, for its week and month start settings).
    pub fn to_quota(&self, base: Option<RawQuota>) -> Result<QuotaSpec, RestError> {
        let mut raw = base.unwrap_or_default();
        let limit = self
            .limit
            .ok_or_else(|| RestError::bad_request("quota.limit must be set"))?;
        raw.limit = non_negative("quota.limit", limit)?;
        raw.offset = non_negative("quota.offset", self.offset.unwrap_or(0))?;
        let period = self
            .period
            .as_deref()
            .ok_or_else(|| RestError::bad_request("quota.period must be set"))?;
        raw.period = parse_period(period)?;
        Ok(QuotaSpec::try_from(raw)?)
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ApiStageJson {
    pub api_id: String,
    pub stage: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle: Option<BTreeMap<String, ThrottleJson>>,
}

/// `GET /pets` as the managed service's throttle key: `/pets/GET`.
pub fn route_key(route: &Route) -> String {
    format!("{}/{}", route.path(), route.method())
}

/// `/pets/GET` (or `/*/*`) as our route `GET /pets`.
pub fn parse_route_key(key: &str) -> Result<Route, RestError> {
    let bad = || {
        RestError::bad_request(format!(
            "`{key}` is not a method throttle key of the form /{{resource path}}/{{HTTP method}}"
        ))
    };
    let (path, method) = key.rsplit_once('/').ok_or_else(bad)?;
    let path = if path.is_empty() { "/" } else { path };
    if !path.starts_with('/') {
        return Err(bad());
    }
    Ok(Route::new(format!("{method} {path}"))?)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsagePlanOut {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub api_stages: Vec<ApiStageJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaJson>,
}

impl UsagePlanOut {
    pub fn of(plan: &UsagePlan) -> UsagePlanOut {
        let spec = &plan.spec;
        let routes: BTreeMap<String, ThrottleJson> = spec
            .route_throttles()
            .iter()
            .map(|(r, t)| (route_key(r), ThrottleJson::of(*t)))
            .collect();
        UsagePlanOut {
            id: plan.id.to_string(),
            name: spec.name().to_string(),
            description: spec.description().to_string(),
            api_stages: spec
                .stages()
                .iter()
                .map(|s| ApiStageJson {
                    api_id: s.api().to_owned(),
                    stage: s.stage().to_owned(),
                    throttle: (!routes.is_empty()).then(|| routes.clone()),
                })
                .collect(),
            throttle: spec.throttle().map(ThrottleJson::of),
            quota: spec.quota().map(QuotaJson::of),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StageKeyIn {
    pub rest_api_id: Option<String>,
    pub stage_name: Option<String>,
}

/// `generateDistinctId`, a no-op at the managed service too, is ignored like any unknown field.
/// No `Debug`: `value` is a secret.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CreateApiKeyIn {
    pub name: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub value: Option<String>,
    pub stage_keys: Vec<StageKeyIn>,
    pub customer_id: Option<String>,
    pub tags: BTreeMap<String, String>,
}

pub fn tags(map: BTreeMap<String, String>) -> Result<Tags, RestError> {
    let mut out = BTreeMap::new();
    for (k, v) in map {
        out.insert(TagKey::new(k)?, TagValue::new(v)?);
    }
    Ok(Tags::new(out)?)
}

pub fn owner(customer_id: Option<String>) -> Result<Option<Owner>, RestError> {
    match customer_id {
        Some(c) if !c.is_empty() => Ok(Some(Owner::new(c)?)),
        _ => Ok(None),
    }
}

pub fn description(d: Option<String>) -> Result<Description, RestError> {
    Ok(Description::new(d.unwrap_or_default())?)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CreateUsagePlanIn {
    pub name: Option<String>,
    pub description: Option<String>,
    pub api_stages: Vec<ApiStageJson>,
    pub throttle: Option<ThrottleJson>,
    pub quota: Option<QuotaJson>,
    pub tags: BTreeMap<String, String>,
}

impl CreateUsagePlanIn {
    pub fn into_spec(self) -> Result<PlanSpec, RestError> {
        let name = self
            .name
            .ok_or_else(|| RestError::bad_request("name must be set"))?;
        if !self.tags.is_empty() {
            return Err(RestError::bad_request(
                "tags: usage plan tags are not supported by quotad",
            ));
        }
        let mut raw = RawPlanSpec::named(Name::new(name)?);
        raw.description = description(self.description)?;
        raw.throttle = self
            .throttle
            .map(|t| t.to_throttle("throttle"))
            .transpose()?;
        raw.quota = self.quota.map(|q| q.to_quota(None)).transpose()?;
        for (i, stage) in self.api_stages.into_iter().enumerate() {
            raw.stages.insert(ApiStage::new(stage.api_id, stage.stage)?);
            for (key, t) in stage.throttle.unwrap_or_default() {
                let route = parse_route_key(&key)?;
                let throttle = t.to_throttle(&format!("apiStages[{i}].throttle.{key}"))?;
                raw.route_throttles.insert(route, throttle);
            }
        }
        Ok(PlanSpec::try_from(raw)?)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PatchOperation {
    pub op: String,
    pub path: String,
    pub value: Option<String>,
    pub from: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PatchIn {
    pub patch_operations: Vec<PatchOperation>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CreateUsagePlanKeyIn {
    pub key_id: String,
    pub key_type: String,
}

/// Parse a JSON request body (an empty body is an empty object).
pub fn parse<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, RestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| RestError::bad_request(format!("invalid request body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Property: method throttle keys convert to routes and back unchanged, including the
    // root resource and the wildcard. Set-up: samples. Pass: round trips; bad keys refused.
    #[test]
    fn route_keys_round_trip() {
        for key in ["/pets/GET", "/pets/{id}/DELETE", "//GET", "/*/*"] {
            let route = parse_route_key(key).unwrap();
            assert_eq!(route_key(&route), key);
        }
        assert_eq!(parse_route_key("/pets/GET").unwrap().as_str(), "GET /pets");
        assert!(parse_route_key("GET").is_err());
        assert!(parse_route_key("/pets/FETCH").is_err());
    }

    // Property: a plan from the create shape shows the same fields back. Set-up: a plan with
    // a stage, a throttle, a quota and a method throttle. Pass: JSON equal on those fields.
    #[test]
    fn plan_round_trip() {
        let input: CreateUsagePlanIn = parse(
            br#"{"name":"gold","description":"d","apiStages":[{"apiId":"a1","stage":"prod","throttle":{"/pets/GET":{"burstLimit":5,"rateLimit":2.5}}}],
                "throttle":{"burstLimit":10,"rateLimit":20.0},"quota":{"limit":1000,"offset":0,"period":"MONTH"}}"#,
        )
        .unwrap();
        let spec = input.into_spec().unwrap();
        let plan = UsagePlan {
            id: quota_core::PlanId(7),
            spec,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        };
        let out = serde_json::to_value(UsagePlanOut::of(&plan)).unwrap();
        assert_eq!(out["id"], "p7");
        assert_eq!(out["quota"]["period"], "MONTH");
        assert_eq!(out["quota"]["limit"], 1000);
        assert_eq!(out["throttle"]["burstLimit"], 10);
        assert_eq!(
            out["apiStages"][0]["throttle"]["/pets/GET"]["rateLimit"],
            2.5
        );
    }

    // Property: bad plan input is refused with a message naming the field. Set-up: bodies.
    // Pass: each error names its field.
    #[test]
    fn plan_errors_name_the_field() {
        let err = |body: &[u8]| {
            parse::<CreateUsagePlanIn>(body)
                .and_then(|i| i.into_spec())
                .err()
                .unwrap()
                .message
        };
        assert!(err(br#"{}"#).contains("name"));
        assert!(err(br#"{"name":"x","quota":{"limit":5,"period":"YEAR"}}"#).contains("YEAR"));
        assert!(
            err(br#"{"name":"x","quota":{"limit":-5,"period":"DAY"}}"#).contains("quota.limit")
        );
        assert!(err(br#"{"name":"x","throttle":{"rateLimit":5}}"#).contains("burstLimit"));
        assert!(err(br#"{"name":"x","tags":{"a":"b"}}"#).contains("tags"));
        assert!(err(br#"{"name":5}"#).contains("invalid request body"));
    }
}
