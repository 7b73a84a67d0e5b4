//! The gateway's configuration: a TOML file whose every field has a doc comment and a
//! default, overridden by the binary's flags, and checked once by
//! [`GatewayConfig::validate`], which names the field at fault.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hyper::Uri;
use serde::Deserialize;

use crate::routes::RouteSpec;

/// Longest configured key header or query parameter name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Most routes in one table.
pub const MAX_ROUTES: usize = 10_000;
/// Largest cost of one request (the client's own limit).
pub const MAX_COST: u64 = 1_000_000;

/// What to do with a request whose route is in no table entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// Answer 404 with a JSON body (the default).
    #[default]
    NotFound,
    /// Forward it without a key, as if it were a public route.
    Forward,
}

/// Everything the gateway needs. Every field has a default, so an empty file is a valid
/// start; `validate` says what is still missing (`upstream`, `endpoints`, `api`, `stage`).
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address to listen on (used by the binary; tests hand `serve` a listener).
    /// Default 127.0.0.1:8080.
    pub listen: SocketAddr,
    /// Where admitted requests go: `http://host:port` (plain HTTP; no path). Required.
    pub upstream: String,
    /// Cluster node addresses, `http://host:port`. Required.
    pub endpoints: Vec<String>,
    /// This gateway's identity towards the cluster (stable across restarts).
    /// Default "quota-gateway".
    pub gateway_id: String,
    /// Sent to the cluster as a bearer token; set by the binary from the environment or
    /// a file, never read from this file (so it does not end up in a repository).
    #[serde(skip)]
    pub token: Option<String>,
    /// The API name the plans cover (a serverless.yml's `service:` when routes come from
    /// one). Required.
    pub api: String,
    /// The API stage the plans cover (`--stage`, else a serverless.yml's
    /// `provider.stage`, else "dev").
    pub stage: String,
    /// Header carrying the key. Default "x-api-key".
    pub key_header: String,
    /// Query parameter carrying the key when the header is absent; none by default.
    pub key_query: Option<String>,
    /// Whether the key header (or query parameter) is removed before forwarding.
    /// Default true: the upstream never sees secrets.
    pub strip_key: bool,
    /// Requests under this path prefix are checks only (nginx `auth_request`, Envoy's
    /// HTTP external authorization): answered 200, 403 or 429 with the same headers and
    /// never forwarded. The original request is `x-original-method` and
    /// `x-original-uri` when present, else this request's method and the path after the
    /// prefix. Default "/_quota/check"; empty = no check endpoint.
    pub check_prefix: String,
    /// What to do with requests matching no route. Default `not_found`.
    pub unmatched: Unmatched,
    /// Upstream statuses that refund the permit instead of committing it: "5xx" (a
    /// class) or a code such as "429". Connection failures and timeouts always refund.
    /// Default ["5xx"].
    pub refund_on: Vec<String>,
    /// How long the upstream may take to send its response headers, in ms. Default 30000.
    pub upstream_timeout_ms: u64,
    /// Most client connections served at once; more wait in the accept queue.
    /// Default 10000.
    pub max_connections: usize,
    /// A serverless.yml whose `functions.*.events[].http` entries are the routes (in
    /// addition to `routes`).
    pub serverless: Option<PathBuf>,
    /// Routes: `{ method = "GET", path = "/users/{id}", private = true, cost = 1 }`.
    pub routes: Vec<RouteSpec>,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("listen", &self.listen)
            .field("upstream", &self.upstream)
            .field("endpoints", &self.endpoints)
            .field("gateway_id", &self.gateway_id)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("api", &self.api)
            .field("stage", &self.stage)
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            upstream: String::new(),
            endpoints: Vec::new(),
            gateway_id: "quota-gateway".into(),
            token: None,
            api: String::new(),
            stage: String::new(),
            key_header: "x-api-key".into(),
            key_query: None,
            strip_key: true,
            check_prefix: "/_quota/check".into(),
            unmatched: Unmatched::NotFound,
            refund_on: vec!["5xx".into()],
            upstream_timeout_ms: 30_000,
            max_connections: 10_000,
            serverless: None,
            routes: Vec::new(),
        }
    }
}

/// A configuration field that is missing or out of range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("config field `{field}`: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

pub(crate) fn bad(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

/// Statuses that refund a permit.
#[derive(Clone, Debug, Default)]
pub struct RefundRule {
    classes: [bool; 6],
    codes: Vec<u16>,
}

impl RefundRule {
    /// Whether a response with `status` refunds its permit.
    pub fn refunds(&self, status: u16) -> bool {
        self.classes
            .get(usize::from(status / 100))
            .copied()
            .unwrap_or(false)
            || self.codes.contains(&status)
    }
}

impl GatewayConfig {
    /// Reads a TOML file (unknown fields are errors).
    pub fn from_toml(text: &str) -> Result<GatewayConfig, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let msg = e.message().to_owned();
            let field = msg
                .split('`')
                .nth(1)
                .filter(|_| msg.starts_with("unknown field"))
                .unwrap_or("file")
                .to_owned();
            bad(field, e.to_string())
        })
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.upstream_uri()?;
        if self.endpoints.is_empty() {
            return Err(bad("endpoints", "at least one cluster node is required"));
        }
        for e in &self.endpoints {
            e.parse::<Uri>()
                .map_err(|err| bad("endpoints", format!("`{e}`: {err}")))?;
        }
        if self.gateway_id.is_empty() || self.gateway_id.len() > 128 {
            return Err(bad("gateway_id", "1 to 128 bytes"));
        }
        if self.api.is_empty() {
            return Err(bad(
                "api",
                "required (or the `service:` of a serverless.yml)",
            ));
        }
        if self.stage.is_empty() {
            return Err(bad("stage", "required"));
        }
        if self.key_header.is_empty()
            || self.key_header.len() > MAX_NAME_LEN
            || hyper::header::HeaderName::from_bytes(self.key_header.as_bytes()).is_err()
        {
            return Err(bad("key_header", "a valid header name of 1 to 128 bytes"));
        }
        if let Some(q) = &self.key_query
            && (q.is_empty() || q.len() > MAX_NAME_LEN || q.contains(['&', '=']))
        {
            return Err(bad("key_query", "1 to 128 bytes, no `&` or `=`"));
        }
        if !self.check_prefix.is_empty() && !self.check_prefix.starts_with('/') {
            return Err(bad("check_prefix", "starts with `/` (or is empty)"));
        }
        self.refund_rule()?;
        if self.upstream_timeout_ms == 0 {
            return Err(bad("upstream_timeout_ms", "more than 0"));
        }
        if self.max_connections == 0 {
            return Err(bad("max_connections", "at least 1"));
        }
        if self.routes.len() > MAX_ROUTES {
            return Err(bad("routes", format!("at most {MAX_ROUTES}")));
        }
        for (i, r) in self.routes.iter().enumerate() {
            r.validate().map_err(|mut e| {
                e.field = format!("routes[{i}].{}", e.field);
                e
            })?;
        }
        Ok(())
    }

    /// The upstream as a URI with scheme and authority.
    pub fn upstream_uri(&self) -> Result<Uri, ConfigError> {
        if self.upstream.is_empty() {
            return Err(bad("upstream", "required, `http://host:port`"));
        }
        let uri: Uri = self
            .upstream
            .parse()
            .map_err(|e| bad("upstream", format!("`{}`: {e}", self.upstream)))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(bad(
                "upstream",
                "`http://host:port` (plain HTTP; TLS is not supported)",
            ));
        }
        if !matches!(uri.path(), "" | "/") {
            return Err(bad("upstream", "no path: requests keep their own path"));
        }
        Ok(uri)
    }

    /// `refund_on` parsed.
    pub fn refund_rule(&self) -> Result<RefundRule, ConfigError> {
        let mut rule = RefundRule::default();
        for s in &self.refund_on {
            let s = s.trim();
            let class = s
                .strip_suffix("xx")
                .or_else(|| s.strip_suffix("XX"))
                .and_then(|c| c.parse::<usize>().ok());
            match (class, s.parse::<u16>()) {
                (Some(c @ 1..=5), _) => rule.classes[c] = true,
                (_, Ok(code @ 100..=599)) => rule.codes.push(code),
                _ => {
                    return Err(bad(
                        "refund_on",
                        format!("`{s}`: a class such as \"5xx\" or a code from 100 to 599"),
                    ));
                }
            }
        }
        Ok(rule)
    }

    /// The upstream's response-header deadline.
    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> GatewayConfig {
        GatewayConfig {
            upstream: "http://127.0.0.1:9000".into(),
            endpoints: vec!["http://127.0.0.1:7000".into()],
            api: "orders".into(),
            stage: "prod".into(),
            ..Default::default()
        }
    }

    // Property: a filled-in default is valid; each bad value is refused with its field
    // named; Debug hides the token.
    // Set-up: `valid()`, then one bad field at a time. Pass: the named field matches.
    #[test]
    fn validate_names_the_field() {
        let mut c = valid();
        c.validate().unwrap();
        c.token = Some("sekrit".into());
        assert!(!format!("{c:?}").contains("sekrit"));
        type Edit = Box<dyn Fn(&mut GatewayConfig)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("upstream", Box::new(|c| c.upstream = "https://x:1".into())),
            (
                "upstream",
                Box::new(|c| c.upstream = "http://x:1/base".into()),
            ),
            ("endpoints", Box::new(|c| c.endpoints.clear())),
            ("api", Box::new(|c| c.api.clear())),
            ("stage", Box::new(|c| c.stage.clear())),
            (
                "key_header",
                Box::new(|c| c.key_header = "bad header".into()),
            ),
            ("key_query", Box::new(|c| c.key_query = Some("a=b".into()))),
            (
                "check_prefix",
                Box::new(|c| c.check_prefix = "check".into()),
            ),
            ("refund_on", Box::new(|c| c.refund_on = vec!["6xx".into()])),
            (
                "upstream_timeout_ms",
                Box::new(|c| c.upstream_timeout_ms = 0),
            ),
            (
                "routes[0].path",
                Box::new(|c| {
                    c.routes = vec![RouteSpec {
                        method: "GET".into(),
                        path: "no-slash".into(),
                        private: true,
                        cost: 1,
                    }]
                }),
            ),
        ];
        for (field, edit) in cases {
            let mut c = valid();
            edit(&mut c);
            assert_eq!(c.validate().unwrap_err().field, field);
        }
    }

    // Property: the file format reads every field and refuses unknown ones.
    // Set-up: a small TOML file. Pass: values read; a misspelt field is named.
    #[test]
    fn toml_file() {
        let c = GatewayConfig::from_toml(
            r#"
            upstream = "http://127.0.0.1:9000"
            endpoints = ["http://127.0.0.1:7000"]
            api = "orders"
            stage = "prod"
            refund_on = ["5xx", "429"]
            [[routes]]
            method = "GET"
            path = "/users/{id}"
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.routes[0].cost, 1);
        assert!(c.routes[0].private);
        let rule = c.refund_rule().unwrap();
        assert!(rule.refunds(503) && rule.refunds(429) && !rule.refunds(404));
        let e = GatewayConfig::from_toml("upstreem = \"x\"").unwrap_err();
        assert_eq!(e.field, "upstreem");
    }
}
