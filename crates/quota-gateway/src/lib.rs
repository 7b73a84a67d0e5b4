//! quota-gateway: an HTTP authorizer and reverse proxy built on quota-client.
//!
//! A request's key (header `x-api-key` by default, optionally a query parameter) and
//! route (`METHOD /template`, from the route table) are checked by
//! [`quota_client::Client::check`]; an admitted request is forwarded to the upstream
//! (bodies streamed both ways, hop-by-hop headers dropped) and its permit committed or
//! refunded by the upstream's status (`refund_on`, default 5xx; connection failures and
//! timeouts always refund). A denied request is answered here: 403 for a missing,
//! invalid, disabled or expired key or one in no plan for the stage; 429 with
//! `Retry-After` for a throttle or a spent quota; 503 when the cluster cannot be
//! reached; each with a small JSON body `{"error": KIND, "message": TEXT}`. Every answer
//! to a keyed request carries `RateLimit-Policy`, `RateLimit`, `X-RateLimit-Limit`,
//! `X-RateLimit-Remaining` and `X-RateLimit-Reset` when a plan has a quota.
//!
//! Requests under `check_prefix` (default `/_quota/check`) are checks only, for proxies
//! that delegate the decision (nginx `auth_request`, Envoy's HTTP external
//! authorization): 200, 403 or 429 with the same headers, never forwarded; their permit
//! is committed at once (the gateway does not see the upstream's status).
//!
//! # Layout
//! - [`config`]: [`GatewayConfig`] (TOML), defaults, `validate()` naming the field.
//! - [`routes`]: the route table (templates, most specific first) and serverless.yml.
//! - [`answer`]: rate-limit headers and the JSON answers.
//! - `proxy`: one request: route, key, check, forward, commit or refund.
//! - [`serve`]: the accept loop (a connection limit, graceful shutdown).

pub mod answer;
pub mod config;
pub mod routes;

mod proxy;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub use config::{ConfigError, GatewayConfig, Unmatched};
pub use routes::{RouteSpec, RouteTable};

/// How long connections may finish their requests after a shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the gateway could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("quota cluster: {0}")]
    Client(#[from] quota_client::ClientError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

impl GatewayConfig {
    /// Reads the serverless.yml named by `serverless` (once; the field is cleared): its
    /// http events are added to `routes`; `api` defaults to its `service:` and `stage`
    /// to its `provider.stage`, else "dev", as `quotactl apply` does.
    pub fn load_serverless(&mut self) -> Result<(), GatewayError> {
        let Some(path) = self.serverless.take() else {
            return Ok(());
        };
        let text = std::fs::read_to_string(&path).map_err(|source| GatewayError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let s = routes::read_serverless(&text)?;
        if self.api.is_empty() {
            self.api = s.service.unwrap_or_default();
        }
        if self.stage.is_empty() {
            self.stage = s.stage.unwrap_or_else(|| "dev".into());
        }
        self.routes.extend(s.routes);
        Ok(())
    }
}

/// Serves `listener` until `shutdown` completes: connects to the cluster, then accepts
/// connections (at most `max_connections` at once). On shutdown it stops accepting, lets
/// open connections finish their requests (up to 10 s), and returns unused tokens to
/// the cluster.
pub async fn serve(
    mut config: GatewayConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GatewayError> {
    config.load_serverless()?;
    config.validate()?;
    let gateway = Arc::new(proxy::Gateway::connect(&config).await?);
    tracing::info!(
        addr = %listener.local_addr()?,
        upstream = %config.upstream,
        routes = gateway.routes.len(),
        "quota-gateway serving"
    );
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let gw = gateway.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let upstream = proxy::Upstream::default();
            let svc = service_fn(move |req| {
                let gw = gw.clone();
                let upstream = upstream.clone();
                async move { Ok::<_, std::convert::Infallible>(gw.handle(req, peer, &upstream).await) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                }
                _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let all = u32::try_from(config.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, limit.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period");
    }
    let report = gateway.client.shutdown().await;
    tracing::info!(
        returned_tokens = report.returned_tokens,
        "quota-gateway stopped"
    );
    Ok(())
}
