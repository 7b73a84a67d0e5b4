//! The route table: `METHOD /path` templates (`/users/{id}`, a greedy `{proxy+}` last)
//! matched segment by segment, the most specific first; and reading routes from a
//! serverless.yml (`functions.*.events[].http`).

use serde::Deserialize;

use crate::config::{ConfigError, MAX_COST, bad};

/// Most segments in one template.
pub const MAX_SEGMENTS: usize = 64;

/// One route as configured.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// An HTTP method, or "ANY" (also "*").
    pub method: String,
    /// A path template starting with `/`: literal segments, `{name}` (one segment) and a
    /// last `{name+}` (the rest of the path, at least one segment).
    pub path: String,
    /// A key is required (the default); `false` = public, forwarded without a key.
    #[serde(default = "yes")]
    pub private: bool,
    /// Cost of one request. Default 1.
    #[serde(default = "one")]
    pub cost: u64,
}

fn yes() -> bool {
    true
}

fn one() -> u64 {
    1
}

impl RouteSpec {
    /// Checks the method, the template and the cost.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let m = self.method.trim();
        if m.is_empty() || !(m == "*" || m.bytes().all(|b| b.is_ascii_alphabetic())) {
            return Err(bad("method", format!("`{m}`: an HTTP method or ANY")));
        }
        parse_template(&self.path).map_err(|e| bad("path", e))?;
        if self.cost == 0 || self.cost > MAX_COST {
            return Err(bad("cost", format!("1 to {MAX_COST}")));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
    Greedy,
}

impl Segment {
    /// Lower is more specific.
    fn rank(&self) -> u8 {
        match self {
            Segment::Literal(_) => 0,
            Segment::Param => 1,
            Segment::Greedy => 2,
        }
    }
}

fn parse_template(path: &str) -> Result<Vec<Segment>, String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("`{path}`: starts with `/`"));
    };
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    if parts.len() > MAX_SEGMENTS {
        return Err(format!("`{path}`: more than {MAX_SEGMENTS} segments"));
    }
    let mut out = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        let seg = match p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) if name.ends_with('+') && name.len() > 1 => {
                if i + 1 != parts.len() {
                    return Err(format!("`{path}`: `{{{name}}}` must be the last segment"));
                }
                Segment::Greedy
            }
            Some(name) if !name.is_empty() && !name.contains(['{', '}', '+']) => Segment::Param,
            Some(_) => return Err(format!("`{path}`: bad parameter `{p}`")),
            None if p.is_empty() => return Err(format!("`{path}`: empty segment")),
            None if p.contains(['{', '}']) => {
                return Err(format!("`{path}`: a parameter is a whole segment: `{p}`"));
            }
            None => Segment::Literal((*p).to_owned()),
        };
        out.push(seg);
    }
    Ok(out)
}

/// A matched route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The template as configured (`/users/{id}`), for the plan's route name.
    pub template: String,
    /// `None` = any method.
    pub method: Option<String>,
    pub private: bool,
    pub cost: u64,
    segments: Vec<Segment>,
}

impl Route {
    /// The route name given to quota-client: `METHOD /template`, with the request's
    /// method for an ANY route.
    pub fn name(&self, method: &str) -> String {
        format!(
            "{} {}",
            self.method.as_deref().unwrap_or(method),
            self.template
        )
    }

    fn matches(&self, method: &str, path: &[&str]) -> bool {
        if self.method.as_deref().is_some_and(|m| m != method) {
            return false;
        }
        let mut i = 0;
        for seg in &self.segments {
            match seg {
                Segment::Greedy => return path.len() > i,
                Segment::Param if i < path.len() => {}
                Segment::Literal(l) if path.get(i) == Some(&l.as_str()) => {}
                _ => return false,
            }
            i += 1;
        }
        i == path.len()
    }
}

/// Routes in order of specificity: segment by segment a literal before a parameter
/// before a greedy parameter, then a longer template first, then a named method before
/// ANY. The first match wins.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Builds the table; a template configured twice for the same method is an error.
    pub fn new(specs: &[RouteSpec]) -> Result<RouteTable, ConfigError> {
        let mut routes = Vec::with_capacity(specs.len());
        for (i, s) in specs.iter().enumerate() {
            s.validate().map_err(|mut e| {
                e.field = format!("routes[{i}].{}", e.field);
                e
            })?;
            let m = s.method.trim().to_ascii_uppercase();
            let method = (m != "ANY" && m != "*").then_some(m);
            let template = normalise(&s.path);
            let r = Route {
                segments: parse_template(&template).map_err(|e| bad("path", e))?,
                template,
                method,
                private: s.private,
                cost: s.cost,
            };
            if routes
                .iter()
                .any(|o: &Route| o.method == r.method && o.segments == r.segments)
            {
                return Err(bad(
                    format!("routes[{i}]"),
                    format!("{} is configured twice", r.name("ANY")),
                ));
            }
            routes.push(r);
        }
        routes.sort_by(|a, b| {
            let ra = a.segments.iter().map(Segment::rank);
            let rb = b.segments.iter().map(Segment::rank);
            ra.cmp(rb)
                .then(b.segments.len().cmp(&a.segments.len()))
                .then(b.method.is_some().cmp(&a.method.is_some()))
        });
        Ok(RouteTable { routes })
    }

    /// The most specific route matching `method` and `path` (no query).
    pub fn find(&self, method: &str, path: &str) -> Option<&Route> {
        let trimmed = path.strip_prefix('/').unwrap_or(path).trim_end_matches('/');
        let mut parts: [&str; MAX_SEGMENTS] = [""; MAX_SEGMENTS];
        let mut n = 0;
        if !trimmed.is_empty() {
            for p in trimmed.split('/') {
                if n == MAX_SEGMENTS {
                    // Deeper than any template can be, except a greedy one.
                    break;
                }
                parts[n] = p;
                n += 1;
            }
        }
        self.routes.iter().find(|r| r.matches(method, &parts[..n]))
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// A leading `/` added (serverless paths omit it), a trailing one removed.
fn normalise(path: &str) -> String {
    let p = path.trim().trim_end_matches('/');
    if p.starts_with('/') {
        p.to_owned()
    } else {
        format!("/{p}")
    }
}

/// What a serverless.yml gives the gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Serverless {
    /// `service:` (or `service.name`): the API.
    pub service: Option<String>,
    /// `provider.stage`.
    pub stage: Option<String>,
    /// One route per `http` event.
    pub routes: Vec<RouteSpec>,
}

/// Reads `service`, `provider.stage` and `functions.*.events[].http` (a mapping with
/// `path`, `method` and `private`, or the short form `"GET users/{id}"`). `private`
/// defaults to false, as in the Framework: such a route is public.
pub fn read_serverless(text: &str) -> Result<Serverless, ConfigError> {
    use saphyr::{LoadableYamlNode, Yaml};
    let docs = Yaml::load_from_str(text).map_err(|e| bad("serverless", e.to_string()))?;
    let Some(root) = docs.first() else {
        return Err(bad("serverless", "empty file"));
    };
    let service = match root.as_mapping_get("service") {
        Some(s) if s.is_mapping() => s
            .as_mapping_get("name")
            .and_then(Yaml::as_str)
            .map(str::to_owned),
        Some(s) => s.as_str().map(str::to_owned),
        None => None,
    };
    let stage = root
        .as_mapping_get("provider")
        .and_then(|p| p.as_mapping_get("stage"))
        .and_then(Yaml::as_str)
        .filter(|s| !s.contains("${"))
        .map(str::to_owned);
    let mut routes = Vec::new();
    if let Some(functions) = root.as_mapping_get("functions").and_then(Yaml::as_mapping) {
        for (name, f) in functions {
            let fname = name.as_str().unwrap_or("?");
            let Some(events) = f.as_mapping_get("events").and_then(Yaml::as_sequence) else {
                continue;
            };
            for (i, ev) in events.iter().enumerate() {
                let Some(http) = ev.as_mapping_get("http") else {
                    continue;
                };
                let field = format!("functions.{fname}.events[{i}].http");
                let spec = if let Some(short) = http.as_str() {
                    let (method, path) = short
                        .split_once(char::is_whitespace)
                        .ok_or_else(|| bad(&field, format!("`{short}`: `METHOD path`")))?;
                    RouteSpec {
                        method: method.trim().to_owned(),
                        path: normalise(path),
                        private: false,
                        cost: 1,
                    }
                } else {
                    let get = |k: &str| http.as_mapping_get(k).and_then(Yaml::as_str);
                    let path =
                        get("path").ok_or_else(|| bad(format!("{field}.path"), "missing"))?;
                    RouteSpec {
                        method: get("method").unwrap_or("ANY").to_owned(),
                        path: normalise(path),
                        private: http
                            .as_mapping_get("private")
                            .and_then(Yaml::as_bool)
                            .unwrap_or(false),
                        cost: 1,
                    }
                };
                spec.validate().map_err(|mut e| {
                    e.field = format!("{field}.{}", e.field);
                    e
                })?;
                routes.push(spec);
            }
        }
    }
    Ok(Serverless {
        service,
        stage,
        routes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(method: &str, path: &str) -> RouteSpec {
        RouteSpec {
            method: method.into(),
            path: path.into(),
            private: true,
            cost: 1,
        }
    }

    // Property: templates match segment-wise and the most specific route wins, whatever
    // the configured order.
    // Set-up: overlapping templates in a deliberately unhelpful order. Pass: each path
    // finds the expected template.
    #[test]
    fn most_specific_first() {
        let t = RouteTable::new(&[
            spec("ANY", "/{proxy+}"),
            spec("GET", "/users/{id}"),
            spec("ANY", "/users/me"),
            spec("GET", "/users/me"),
            spec("GET", "/users/{id}/orders/{order}"),
            spec("GET", "/"),
        ])
        .unwrap();
        let name = |m: &str, p: &str| t.find(m, p).map(|r| r.name(m));
        assert_eq!(name("GET", "/users/me").unwrap(), "GET /users/me");
        assert_eq!(name("POST", "/users/me").unwrap(), "POST /users/me");
        assert_eq!(name("GET", "/users/42").unwrap(), "GET /users/{id}");
        assert_eq!(name("GET", "/users/42/").unwrap(), "GET /users/{id}");
        assert_eq!(
            name("GET", "/users/4/orders/9").unwrap(),
            "GET /users/{id}/orders/{order}"
        );
        assert_eq!(name("DELETE", "/users/42").unwrap(), "DELETE /{proxy+}");
        assert_eq!(name("GET", "/").unwrap(), "GET /");
        assert_eq!(name("POST", "/").as_deref(), None);
        let t = RouteTable::new(&[spec("GET", "/a/{b}")]).unwrap();
        assert!(t.find("GET", "/a").is_none());
        assert!(t.find("GET", "/a/b/c").is_none());
        assert!(RouteTable::new(&[spec("GET", "/a/{x}"), spec("GET", "/a/{y}")]).is_err());
        assert!(RouteTable::new(&[spec("GET", "/a/{x+}/b")]).is_err());
        assert!(RouteTable::new(&[spec("GET", "/a/x{y}")]).is_err());
    }

    // Property: a serverless.yml's http events become routes, in both forms, with
    // `private` defaulting to false; service and provider.stage are read.
    // Set-up: two functions, three events. Pass: the routes and names as written.
    #[test]
    fn serverless_events() {
        let s = read_serverless(
            r#"
service: orders
provider:
  name: aws
  stage: prod
functions:
  users:
    handler: users.handler
    events:
      - http:
          path: users/{id}
          method: get
          private: true
      - http: POST users
  health:
    handler: h.handler
    events:
      - http:
          path: /health
          method: get
      - schedule: rate(1 minute)
"#,
        )
        .unwrap();
        assert_eq!(s.service.as_deref(), Some("orders"));
        assert_eq!(s.stage.as_deref(), Some("prod"));
        assert_eq!(
            s.routes,
            vec![
                RouteSpec {
                    method: "get".into(),
                    path: "/users/{id}".into(),
                    private: true,
                    cost: 1
                },
                RouteSpec {
                    method: "POST".into(),
                    path: "/users".into(),
                    private: false,
                    cost: 1
                },
                RouteSpec {
                    method: "get".into(),
                    path: "/health".into(),
                    private: false,
                    cost: 1
                },
            ]
        );
        let t = RouteTable::new(&s.routes).unwrap();
        assert_eq!(
            t.find("GET", "/users/7").unwrap().name("GET"),
            "GET /users/{id}"
        );
        let e = read_serverless(
            "functions:\n  f:\n    events:\n      - http:\n          method: get\n",
        )
        .unwrap_err();
        assert_eq!(e.field, "functions.f.events[0].http.path");
    }
}
