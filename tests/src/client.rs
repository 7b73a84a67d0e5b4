//! gRPC clients of one node, with the admin token attached when the cluster has one.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use quota_proto::v1::admin_client::AdminClient;
use quota_proto::v1::cluster_client::ClusterClient;
use quota_proto::v1::data_client::DataClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// How long a client waits for a TCP connection to a node. Nodes are local: a node that
/// does not accept within this is down or wedged.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Adds `authorization: Bearer <token>` to every call when a token is configured.
#[derive(Clone, Debug, Default)]
pub struct AuthInterceptor {
    header: Option<MetadataValue<Ascii>>,
}

impl AuthInterceptor {
    /// An interceptor for `token` (None: calls go out without the header).
    pub fn new(token: Option<&str>) -> anyhow::Result<Self> {
        let header = token
            .map(|t| format!("Bearer {t}").parse::<MetadataValue<Ascii>>())
            .transpose()
            .context("admin token is not valid header text")?;
        Ok(Self { header })
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

/// The transport every client uses: one lazily connected channel per node.
pub type Svc = InterceptedService<Channel, AuthInterceptor>;

/// Admin, Data and Cluster clients of one node, sharing one HTTP/2 channel. Cheap to clone.
#[derive(Clone, Debug)]
pub struct NodeClient {
    /// The node these clients talk to.
    pub id: u64,
    /// `quota.v1.Admin`.
    pub admin: AdminClient<Svc>,
    /// `quota.v1.Data`.
    pub data: DataClient<Svc>,
    /// `quota.v1.Cluster`.
    pub cluster: ClusterClient<Svc>,
}

impl NodeClient {
    /// Clients of node `id` at `addr`. The channel connects on first use and reconnects
    /// after failures, so one client outlives restarts of its node. Every call has
    /// `request_timeout` as its deadline. Must be called inside a tokio runtime.
    pub fn new(
        id: u64,
        addr: SocketAddr,
        admin_token: Option<&str>,
        request_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .context("endpoint")?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(request_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        let auth = AuthInterceptor::new(admin_token)?;
        Ok(Self {
            id,
            admin: AdminClient::with_interceptor(channel.clone(), auth.clone()),
            data: DataClient::with_interceptor(channel.clone(), auth.clone()),
            cluster: ClusterClient::with_interceptor(channel, auth),
        })
    }
}
