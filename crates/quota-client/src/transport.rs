//! Channels to the nodes, the bearer token, and the retry loop that moves to the next node
//! after a retryable failure (resending the same request, hence the same request id).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quota_proto::status::is_permanent;
use quota_proto::v1::gateway_client::GatewayClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::config::ClientConfig;
use crate::error::{ClientError, ConfigError};

/// How long a TCP connection to a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 keepalive: a dead link is noticed within about two of these.
const KEEPALIVE: Duration = Duration::from_secs(1);
/// Pauses between attempts, doubling from the first to the second.
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(20);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(250);

/// Adds `authorization: Bearer <token>` when a token is configured.
#[derive(Clone, Default)]
pub(crate) struct Auth {
    header: Option<MetadataValue<Ascii>>,
}

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

pub(crate) type Gateway = GatewayClient<InterceptedService<Channel, Auth>>;

/// One Gateway client per endpoint (for unary calls, with a deadline), and one per
/// endpoint for the watch stream (no deadline: the stream lives as long as the node).
pub(crate) struct Transport {
    unary: Vec<Gateway>,
    streams: Vec<Gateway>,
    /// The node that answered last; calls start there.
    next: AtomicUsize,
}

impl Transport {
    pub(crate) fn new(config: &ClientConfig) -> Result<Transport, ClientError> {
        let header = config
            .token
            .as_ref()
            .map(|t| format!("Bearer {t}").parse::<MetadataValue<Ascii>>())
            .transpose()
            .map_err(|_| ConfigError::BadToken)?;
        let auth = Auth { header };
        let mut unary = Vec::new();
        let mut streams = Vec::new();
        for e in &config.endpoints {
            let endpoint = Endpoint::from_shared(e.clone())
                .map_err(|err| ConfigError::BadEndpoint {
                    endpoint: e.clone(),
                    reason: err.to_string(),
                })?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(KEEPALIVE)
                .keep_alive_timeout(KEEPALIVE)
                .keep_alive_while_idle(true);
            streams.push(GatewayClient::with_interceptor(
                endpoint.connect_lazy(),
                auth.clone(),
            ));
            unary.push(GatewayClient::with_interceptor(
                endpoint.timeout(config.request_timeout).connect_lazy(),
                auth.clone(),
            ));
        }
        Ok(Transport {
            unary,
            streams,
            next: AtomicUsize::new(0),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.unary.len()
    }

    /// The streaming client of endpoint `i` (modulo the number of endpoints).
    pub(crate) fn stream_client(&self, i: usize) -> Gateway {
        self.streams[i % self.streams.len()].clone()
    }

    /// Calls `op` on one node after another until it succeeds, fails for good, or
    /// `deadline` passes. `op` must resend the same request each time.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        deadline: Duration,
        mut op: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Gateway) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let until = tokio::time::Instant::now() + deadline;
        let mut pause = RETRY_PAUSE_MIN;
        let mut i = self.next.load(Ordering::Relaxed);
        loop {
            let idx = i % self.unary.len();
            match op(self.unary[idx].clone()).await {
                Ok(reply) => {
                    self.next.store(idx, Ordering::Relaxed);
                    return Ok(reply.into_inner());
                }
                Err(status) if is_permanent(status.code()) => {
                    return Err(ClientError::Refused(format!(
                        "{:?}: {}",
                        status.code(),
                        status.message()
                    )));
                }
                Err(status) => {
                    if tokio::time::Instant::now() + pause > until {
                        return Err(ClientError::Unavailable(format!(
                            "no node answered within {deadline:?}; last: {:?}: {}",
                            status.code(),
                            status.message()
                        )));
                    }
                }
            }
            i = idx + 1;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_PAUSE_MAX);
        }
    }
}
