//! Validated newtypes. Each can only hold a legal value: constructors check the limits in
//! [`crate::limits`], and deserialisation goes through the same checks (`serde(try_from)`),
//! so a value read back from the log or a snapshot is as trustworthy as a fresh one.

use crate::error::ValidationError;
use crate::limits::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ValidationError;

            /// Parses the display form (`k12`, `p3`, `l9`).
            fn from_str(s: &str) -> Result<Self, ValidationError> {
                s.strip_prefix($prefix)
                    .and_then(|n| n.parse::<u64>().ok())
                    .filter(|n| *n > 0)
                    .map($name)
                    .ok_or_else(|| ValidationError::invalid(
                        "id",
                        format!(concat!("`{}` is not an id of the form ", $prefix, "<number>"), s),
                    ))
            }
        }
    };
}

id_type!(
    /// Identifies an API key. Assigned by the state machine, never reused.
    KeyId,
    "k"
);
id_type!(
    /// Identifies a usage plan. Assigned by the state machine, never reused.
    PlanId,
    "p"
);
id_type!(
    /// Identifies a lease. Assigned by the state machine, never reused.
    LeaseId,
    "l"
);

/// Identifies one client write, for deduplication of retries. Chosen by the client
/// (randomly, or as client id and sequence number); unique per write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u128);

fn check_text(
    field: &str,
    value: &str,
    max: usize,
    allow_empty: bool,
) -> Result<(), ValidationError> {
    if value.is_empty() && !allow_empty {
        return Err(ValidationError::empty(field));
    }
    if value.len() > max {
        return Err(ValidationError::too_long(field, value.len(), max));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::invalid(
            field,
            "control characters are not allowed",
        ));
    }
    Ok(())
}

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr, $allow_empty:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validate `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, ValidationError> {
                let value = value.into();
                check_text($field, &value, $max, $allow_empty)?;
                Ok($name(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(value: String) -> Result<Self, ValidationError> {
                $name::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

text_type!(
    /// A key or plan name: 1 to 128 bytes, no control characters.
    Name, "name", MAX_NAME_LEN, false
);
text_type!(
    /// Free text, up to 1024 bytes.
    Description, "description", MAX_DESCRIPTION_LEN, true
);
text_type!(
    /// The customer a key belongs to (the managed gateways' `customerId`).
    Owner, "owner", MAX_OWNER_LEN, false
);
text_type!(
    /// A tag key.
    TagKey, "tags.key", MAX_TAG_LEN, false
);
text_type!(
    /// A tag value.
    TagValue, "tags.value", MAX_TAG_LEN, true
);
text_type!(
    /// The identity a gateway presents when it asks for leases.
    GatewayId, "gateway", MAX_GATEWAY_ID_LEN, false
);

/// Tags on a key, at most [`MAX_TAGS_PER_KEY`].
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<TagKey, TagValue>",
    into = "BTreeMap<TagKey, TagValue>"
)]
pub struct Tags(BTreeMap<TagKey, TagValue>);

impl Tags {
    pub fn new(tags: BTreeMap<TagKey, TagValue>) -> Result<Tags, ValidationError> {
        if tags.len() > MAX_TAGS_PER_KEY {
            return Err(ValidationError::too_many(
                "tags",
                tags.len(),
                MAX_TAGS_PER_KEY,
            ));
        }
        Ok(Tags(tags))
    }

    /// Validate tags given as plain strings.
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Tags, ValidationError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            map.insert(TagKey::new(k)?, TagValue::new(v)?);
            if map.len() > MAX_TAGS_PER_KEY {
                return Err(ValidationError::too_many(
                    "tags",
                    map.len(),
                    MAX_TAGS_PER_KEY,
                ));
            }
        }
        Ok(Tags(map))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&TagKey, &TagValue)> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<BTreeMap<TagKey, TagValue>> for Tags {
    type Error = ValidationError;
    fn try_from(tags: BTreeMap<TagKey, TagValue>) -> Result<Self, ValidationError> {
        Tags::new(tags)
    }
}

impl From<Tags> for BTreeMap<TagKey, TagValue> {
    fn from(tags: Tags) -> Self {
        tags.0
    }
}

fn check_ident(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::empty(field));
    }
    if value.len() > MAX_API_STAGE_LEN {
        return Err(ValidationError::too_long(
            field,
            value.len(),
            MAX_API_STAGE_LEN,
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(ValidationError::invalid(
            field,
            format!("`{value}` may only contain letters, digits, '_', '-' and '.'"),
        ));
    }
    Ok(())
}

/// An API stage a plan covers: which API (`api`) and which deployment of it (`stage`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "(String, String)", into = "(String, String)")]
pub struct ApiStage {
    api: String,
    stage: String,
}

impl ApiStage {
    pub fn new(api: impl Into<String>, stage: impl Into<String>) -> Result<Self, ValidationError> {
        let (api, stage) = (api.into(), stage.into());
        check_ident("api", &api)?;
        check_ident("stage", &stage)?;
        Ok(ApiStage { api, stage })
    }

    pub fn api(&self) -> &str {
        &self.api
    }

    pub fn stage(&self) -> &str {
        &self.stage
    }
}

impl TryFrom<(String, String)> for ApiStage {
    type Error = ValidationError;
    fn try_from((api, stage): (String, String)) -> Result<Self, ValidationError> {
        ApiStage::new(api, stage)
    }
}

impl From<ApiStage> for (String, String) {
    fn from(s: ApiStage) -> Self {
        (s.api, s.stage)
    }
}

impl fmt::Display for ApiStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.api, self.stage)
    }
}

impl fmt::Debug for ApiStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// HTTP methods a route can name; `Any` (`*`) matches every method.
pub const ROUTE_METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "*",
];

/// A route, `METHOD /path` (for example `GET /users/{id}`), as used for per-route throttles.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Route(String);

impl Route {
    pub fn new(value: impl Into<String>) -> Result<Route, ValidationError> {
        let value = value.into();
        let (method, path) = value.split_once(' ').ok_or_else(|| {
            ValidationError::invalid(
                "route",
                format!("`{value}` is not of the form `METHOD /path`"),
            )
        })?;
        if !ROUTE_METHODS.contains(&method) {
            return Err(ValidationError::invalid(
                "route",
                format!("`{method}` is not one of {}", ROUTE_METHODS.join(", ")),
            ));
        }
        if !path.starts_with('/') {
            return Err(ValidationError::invalid(
                "route",
                "the path must start with '/'",
            ));
        }
        if path.len() > MAX_ROUTE_PATH_LEN {
            return Err(ValidationError::too_long(
                "route",
                path.len(),
                MAX_ROUTE_PATH_LEN,
            ));
        }
        if path.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(ValidationError::invalid(
                "route",
                "the path may only contain printable ASCII characters without spaces",
            ));
        }
        Ok(Route(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn method(&self) -> &str {
        self.0.split_once(' ').map_or("", |(m, _)| m)
    }

    pub fn path(&self) -> &str {
        self.0.split_once(' ').map_or("", |(_, p)| p)
    }
}

impl TryFrom<String> for Route {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, ValidationError> {
        Route::new(value)
    }
}

impl From<Route> for String {
    fn from(r: Route) -> String {
        r.0
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// What one request costs: 1 to [`MAX_COST`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Cost(u64);

impl Cost {
    pub const ONE: Cost = Cost(1);

    pub fn new(value: u64) -> Result<Cost, ValidationError> {
        if value == 0 || value > MAX_COST {
            return Err(ValidationError::out_of_range("cost", value, 1, MAX_COST));
        }
        Ok(Cost(value))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for Cost {
    type Error = ValidationError;
    fn try_from(value: u64) -> Result<Self, ValidationError> {
        Cost::new(value)
    }
}

impl From<Cost> for u64 {
    fn from(c: Cost) -> u64 {
        c.0
    }
}

/// A throttle: a token bucket refilled at `rate_per_sec` and holding at most `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "(f64, u64)", into = "(f64, u64)")]
pub struct Throttle {
    rate_per_sec: f64,
    burst: u64,
}

// Validation rejects NaN, so equality is total.
impl Eq for Throttle {}

impl Throttle {
    pub fn new(rate_per_sec: f64, burst: u64) -> Result<Throttle, ValidationError> {
        if !(rate_per_sec.is_finite() && rate_per_sec > 0.0 && rate_per_sec <= MAX_RATE_PER_SEC) {
            return Err(ValidationError::out_of_range(
                "throttle.rate_limit",
                rate_per_sec,
                "more than 0",
                MAX_RATE_PER_SEC,
            ));
        }
        if burst == 0 || burst > MAX_BURST {
            return Err(ValidationError::out_of_range(
                "throttle.burst_limit",
                burst,
                1,
                MAX_BURST,
            ));
        }
        Ok(Throttle {
            rate_per_sec,
            burst,
        })
    }

    pub fn rate_per_sec(&self) -> f64 {
        self.rate_per_sec
    }

    pub fn burst(&self) -> u64 {
        self.burst
    }
}

impl TryFrom<(f64, u64)> for Throttle {
    type Error = ValidationError;
    fn try_from((rate, burst): (f64, u64)) -> Result<Self, ValidationError> {
        Throttle::new(rate, burst)
    }
}

impl From<Throttle> for (f64, u64) {
    fn from(t: Throttle) -> Self {
        (t.rate_per_sec, t.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Property: every newtype refuses what breaks its limit and names the field.
    // Set-up: one bad value per rule. Pass: the error names the expected field.
    #[test]
    fn bad_values_name_their_field() {
        assert_eq!(Name::new("").unwrap_err().field(), "name");
        assert_eq!(
            Name::new("x".repeat(MAX_NAME_LEN + 1)).unwrap_err().field(),
            "name"
        );
        assert_eq!(Name::new("a\nb").unwrap_err().field(), "name");
        assert!(Description::new("").is_ok());
        assert_eq!(Owner::new("").unwrap_err().field(), "owner");
        assert_eq!(ApiStage::new("api", "st age").unwrap_err().field(), "stage");
        assert_eq!(ApiStage::new("", "prod").unwrap_err().field(), "api");
        assert_eq!(Route::new("GET users").unwrap_err().field(), "route");
        assert_eq!(Route::new("FETCH /users").unwrap_err().field(), "route");
        assert!(Route::new("GET /users/{id}").is_ok());
        assert_eq!(Cost::new(0).unwrap_err().field(), "cost");
        assert_eq!(Cost::new(MAX_COST + 1).unwrap_err().field(), "cost");
        assert_eq!(
            Throttle::new(f64::NAN, 1).unwrap_err().field(),
            "throttle.rate_limit"
        );
        assert_eq!(
            Throttle::new(1.0, 0).unwrap_err().field(),
            "throttle.burst_limit"
        );
        let too_many = (0..=MAX_TAGS_PER_KEY).map(|i| (format!("t{i}"), String::new()));
        assert_eq!(Tags::from_pairs(too_many).unwrap_err().field(), "tags");
        assert_eq!("k0".parse::<KeyId>().unwrap_err().field(), "id");
        assert_eq!("k12".parse::<KeyId>().unwrap(), KeyId(12));
        assert!("p12".parse::<KeyId>().is_err());
    }

    // Property: deserialisation validates exactly like construction.
    #[test]
    fn deserialisation_validates() {
        let cfg = bincode::config::standard();
        let bad = bincode::serde::encode_to_vec(String::new(), cfg).unwrap();
        assert!(bincode::serde::decode_from_slice::<Name, _>(&bad, cfg).is_err());
        let bad_cost = bincode::serde::encode_to_vec(0u64, cfg).unwrap();
        assert!(bincode::serde::decode_from_slice::<Cost, _>(&bad_cost, cfg).is_err());
    }
}
