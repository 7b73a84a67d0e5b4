//! One request: find its route, take its key, ask quota-client, then forward it (and
//! commit or refund the permit by the upstream's status) or answer it here.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use quota_client::{Client, ClientConfig, Decision, DenyReason, Permit, RateInfo};

use crate::answer::{self, Body};
use crate::config::{GatewayConfig, RefundRule, Unmatched};
use crate::routes::RouteTable;

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1); never
/// forwarded in either direction, nor any header named in `Connection`.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];
/// Headers with which a delegating proxy names the original request (nginx
/// `auth_request` convention).
const ORIGINAL_METHOD: &str = "x-original-method";
const ORIGINAL_URI: &str = "x-original-uri";
/// Idle upstream connections kept per host.
const UPSTREAM_IDLE_PER_HOST: usize = 256;
/// An idle upstream connection is closed after this long.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Gateway {
    pub(crate) client: Client,
    pub(crate) routes: RouteTable,
    http: HttpClient<HttpConnector, Incoming>,
    upstream: Authority,
    api: String,
    stage: String,
    key_header: HeaderName,
    key_query: Option<String>,
    strip_key: bool,
    check_prefix: String,
    unmatched: Unmatched,
    refund: RefundRule,
    timeout: Duration,
}

/// What a request is after routing.
enum Plan {
    /// No key needed.
    Public,
    /// Checked against quota-client with this route name and cost.
    Keyed { route: String, cost: u64 },
}

impl Gateway {
    pub(crate) async fn connect(config: &GatewayConfig) -> Result<Gateway, crate::GatewayError> {
        let routes = RouteTable::new(&config.routes)?;
        let upstream = config
            .upstream_uri()?
            .authority()
            .cloned()
            .ok_or_else(|| crate::config::bad("upstream", "no host"))?;
        let mut cc = ClientConfig::new(config.endpoints.clone(), config.gateway_id.clone());
        cc.token.clone_from(&config.token);
        let client = Client::connect(cc).await?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = HttpClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(UPSTREAM_IDLE_PER_HOST)
            .pool_idle_timeout(UPSTREAM_IDLE_TIMEOUT)
            .build(connector);
        Ok(Gateway {
            client,
            routes,
            http,
            upstream,
            api: config.api.clone(),
            stage: config.stage.clone(),
            key_header: HeaderName::from_bytes(config.key_header.as_bytes())
                .map_err(|_| crate::config::bad("key_header", "not a header name"))?,
            key_query: config.key_query.clone(),
            strip_key: config.strip_key,
            check_prefix: config.check_prefix.clone(),
            unmatched: config.unmatched,
            refund: config.refund_rule()?,
            timeout: config.upstream_timeout(),
        })
    }

    /// The original (method, path and query) of a check request, or `None` when `req`
    /// is not under the check prefix.
    fn check_target(&self, req: &Request<Incoming>) -> Option<(Method, String)> {
        if self.check_prefix.is_empty() {
            return None;
        }
        let rest = req.uri().path().strip_prefix(self.check_prefix.as_str())?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        let h = req.headers();
        let method = h
            .get(ORIGINAL_METHOD)
            .and_then(|v| Method::from_bytes(v.as_bytes()).ok())
            .unwrap_or_else(|| req.method().clone());
        let target = match h.get(ORIGINAL_URI).and_then(|v| v.to_str().ok()) {
            Some(uri) => uri.to_owned(),
            None => {
                let path = if rest.is_empty() { "/" } else { rest };
                match req.uri().query() {
                    Some(q) => format!("{path}?{q}"),
                    None => path.to_owned(),
                }
            }
        };
        Some((method, target))
    }

    pub(crate) async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let check = self.check_target(&req);
        let (method, path, query) = match &check {
            Some((m, target)) => {
                let (p, q) = target.split_once('?').unwrap_or((target, ""));
                (m.clone(), p.to_owned(), q.to_owned())
            }
            None => (
                req.method().clone(),
                req.uri().path().to_owned(),
                req.uri().query().unwrap_or("").to_owned(),
            ),
        };
        let plan = match self.routes.find(method.as_str(), &path) {
            Some(r) if r.private => Plan::Keyed {
                route: r.name(method.as_str()),
                cost: r.cost,
            },
            Some(_) => Plan::Public,
            None if self.unmatched == Unmatched::Forward => Plan::Public,
            None => {
                return answer::error(
                    StatusCode::NOT_FOUND,
                    "no_route",
                    "no route matches this method and path",
                );
            }
        };
        let permit = match plan {
            Plan::Public => None,
            Plan::Keyed { route, cost } => {
                let Some(secret) = self.secret(req.headers(), &query) else {
                    return answer::denied(&DenyReason::MissingKey, &RateInfo::default());
                };
                let decision = match self.client.try_check(
                    secret.as_bytes(),
                    &self.api,
                    &self.stage,
                    &route,
                    cost,
                ) {
                    Some(d) => d,
                    None => {
                        self.client
                            .check(secret.as_bytes(), &self.api, &self.stage, &route, cost)
                            .await
                    }
                };
                match decision {
                    Decision::Allow(p) => Some(p),
                    Decision::Deny(d) => return answer::denied(&d.reason, &d.info),
                }
            }
        };
        if check.is_some() {
            let mut r = Response::new(answer::full(""));
            if let Some(p) = permit {
                answer::rate_headers(r.headers_mut(), &p.info());
                p.commit();
            }
            return r;
        }
        self.forward(req, peer, permit).await
    }

    /// The key: the header, else the query parameter when one is configured.
    fn secret<'a>(&self, headers: &'a HeaderMap, query: &'a str) -> Option<&'a str> {
        if let Some(v) = headers.get(&self.key_header) {
            return v.to_str().ok().filter(|s| !s.is_empty());
        }
        let name = self.key_query.as_deref()?;
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
            .filter(|v| !v.is_empty())
    }

    /// The path and query sent upstream: the key parameter removed when `strip_key`.
    fn upstream_path(&self, uri: &Uri) -> Result<PathAndQuery, hyper::http::Error> {
        let pq = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let (Some(name), true, Some(q)) = (self.key_query.as_deref(), self.strip_key, uri.query())
        else {
            return Ok(PathAndQuery::try_from(pq)?);
        };
        let kept: Vec<&str> = q
            .split('&')
            .filter(|kv| kv.split_once('=').map_or(*kv, |(k, _)| k) != name)
            .collect();
        let mut out = uri.path().to_owned();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
        Ok(PathAndQuery::try_from(out)?)
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        permit: Option<Permit>,
    ) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        let uri = match self.upstream_path(&parts.uri).and_then(|pq| {
            Uri::builder()
                .scheme("http")
                .authority(self.upstream.clone())
                .path_and_query(pq)
                .build()
        }) {
            Ok(u) => u,
            Err(_) => {
                if let Some(p) = permit {
                    p.refund();
                }
                return answer::error(StatusCode::BAD_REQUEST, "bad_request", "bad request URI");
            }
        };
        parts.uri = uri;
        parts.version = hyper::Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        if self.strip_key {
            parts.headers.remove(&self.key_header);
        }
        let forwarded = match parts.headers.get("x-forwarded-for").map(|v| v.to_str()) {
            Some(Ok(prev)) => format!("{prev}, {}", peer.ip()),
            _ => peer.ip().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&forwarded) {
            parts.headers.insert("x-forwarded-for", v);
        }
        let info = permit.as_ref().map(Permit::info);
        let sent = tokio::time::timeout(
            self.timeout,
            self.http.request(Request::from_parts(parts, body)),
        )
        .await;
        let mut response = match sent {
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                if let Some(p) = permit {
                    if self.refund.refunds(parts.status.as_u16()) {
                        p.refund();
                    } else {
                        p.commit();
                    }
                }
                Response::from_parts(parts, http_body_util::Either::Left(body))
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "upstream request failed");
                if let Some(p) = permit {
                    p.refund();
                }
                answer::error(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unavailable",
                    "the upstream could not be reached",
                )
            }
            Err(_) => {
                if let Some(p) = permit {
                    p.refund();
                }
                answer::error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    "the upstream did not answer in time",
                )
            }
        };
        if let Some(info) = info {
            answer::rate_headers(response.headers_mut(), &info);
        }
        response
    }
}

/// Removes the hop-by-hop headers, and every header the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
    // Transfer-Encoding is re-framed by hyper on each side from the body's length.
    headers.remove(header::TRANSFER_ENCODING);
}
