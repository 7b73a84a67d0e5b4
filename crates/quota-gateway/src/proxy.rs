//! One request: find its route, take its key, ask quota-client, then forward it (and
//! commit or refund the permit by the upstream's status) or answer it here.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use quota_client::{Client, ClientConfig, Decision, DenyReason, Permit, RateInfo};
use std::sync::Arc;

use crate::answer::{self, Body};
use crate::config::{GatewayConfig, RefundRule, Unmatched};
use crate::routes::RouteTable;

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1); never
/// forwarded in either direction, nor any header named in `Connection`.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];
/// The client addresses a request passed through (de facto standard).
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Headers with which a delegating proxy names the original request (nginx
/// `auth_request` convention).
const ORIGINAL_METHOD: &str = "x-original-method";
const ORIGINAL_URI: &str = "x-original-uri";

/// One downstream connection's own connection to the upstream (HTTP/1.1, kept alive), made
/// on its first forwarded request and made again when the upstream closed it. Requests on
/// one downstream HTTP/1.1 connection come one at a time, so one upstream connection serves
/// them all, with no pool to check connections out of and back into: the upstream sees as
/// many connections as the gateway has clients, as with a pool under steady load.
#[derive(Clone, Default)]
pub(crate) struct Upstream(Arc<tokio::sync::Mutex<Option<SendRequest<Incoming>>>>);

/// Why a request could not be sent upstream.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("connecting: {0}")]
    Connect(#[from] std::io::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("no answer within the upstream timeout")]
    Timeout,
}

pub(crate) struct Gateway {
    pub(crate) client: Client,
    pub(crate) routes: RouteTable,
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
        Ok(Gateway {
            client,
            routes,
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

    pub(crate) async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        upstream: &Upstream,
    ) -> Response<Body> {
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
        self.forward(req, peer, permit, upstream).await
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

    /// Send `req` on this downstream connection's upstream connection, connecting first
    /// when there is none or the upstream closed it, and wait for the answer's head until
    /// the upstream timeout. After a failure or a timeout the connection is dropped (its
    /// state is unknown: a late answer would otherwise be read as the next request's), so
    /// the next request connects afresh.
    async fn send(
        &self,
        upstream: &Upstream,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut slot = upstream.0.lock().await;
        let sent = tokio::time::timeout(self.timeout, self.send_on(&mut slot, req)).await;
        let sent = sent.unwrap_or(Err(SendError::Timeout));
        if sent.is_err() {
            *slot = None;
        }
        sent
    }

    async fn send_on(
        &self,
        slot: &mut Option<SendRequest<Incoming>>,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, SendError> {
        match self.connection(slot).await?.try_send_request(req).await {
            Ok(response) => Ok(response),
            Err(mut e) => match e.take_message() {
                // A kept-alive connection the upstream closed just as the request was handed
                // to it: the request was not written, so it goes once more on a new one.
                Some(req) => {
                    *slot = None;
                    Ok(self.connection(slot).await?.send_request(req).await?)
                }
                None => Err(SendError::Http(e.into_error())),
            },
        }
    }

    /// The upstream connection in `slot`, ready for a request; a new one when there is
    /// none or it was closed.
    async fn connection<'a>(
        &self,
        slot: &'a mut Option<SendRequest<Incoming>>,
    ) -> Result<&'a mut SendRequest<Incoming>, SendError> {
        if let Some(sender) = slot.as_mut()
            && sender.ready().await.is_err()
        {
            *slot = None;
        }
        match slot {
            Some(sender) => Ok(sender),
            None => {
                let stream = tokio::net::TcpStream::connect(self.upstream.as_str()).await?;
                stream.set_nodelay(true)?;
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "upstream connection ended with an error");
                    }
                });
                Ok(slot.insert(sender))
            }
        }
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        permit: Option<Permit>,
        upstream: &Upstream,
    ) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        // Origin form on the wire; the Host header names the upstream unless the client
        // sent one (a proxy keeps the client's Host).
        let uri = match self
            .upstream_path(&parts.uri)
            .and_then(|pq| Uri::builder().path_and_query(pq).build())
        {
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
        if !parts.headers.contains_key(header::HOST)
            && let Ok(host) = HeaderValue::from_str(self.upstream.as_str())
        {
            parts.headers.insert(header::HOST, host);
        }
        strip_hop_by_hop(&mut parts.headers);
        if self.strip_key {
            parts.headers.remove(&self.key_header);
        }
        let forwarded = match parts.headers.get(&X_FORWARDED_FOR).map(|v| v.to_str()) {
            Some(Ok(prev)) => format!("{prev}, {}", peer.ip()),
            _ => peer.ip().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&forwarded) {
            parts.headers.insert(X_FORWARDED_FOR, v);
        }
        let info = permit.as_ref().map(Permit::info);
        let sent = self.send(upstream, Request::from_parts(parts, body)).await;
        let mut response = match sent {
            Ok(resp) => {
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
            Err(SendError::Timeout) => {
                if let Some(p) = permit {
                    p.refund();
                }
                answer::error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    "the upstream did not answer in time",
                )
            }
            Err(e) => {
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
    for n in &HOP_BY_HOP {
        headers.remove(n);
    }
    // Transfer-Encoding is re-framed by hyper on each side from the body's length.
    headers.remove(header::TRANSFER_ENCODING);
}
