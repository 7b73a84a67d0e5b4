//! Starting and stopping a node: open storage, start Raft, bootstrap a new cluster, serve
//! gRPC on a listener until a shutdown future resolves, then stop cleanly.

use crate::auth::BearerAuth;
use crate::config::{Config, ConfigError};
use crate::network::{NetworkFactory, Peers};
use crate::node::{Batcher, QuotaNode, Sink, now_ms};
use crate::service::{
    admin::AdminService, cluster::ClusterService, data::DataService, gateway::GatewayService,
    raft::RaftService,
};
use openraft::BasicNode;
use quota_core::Command;
use quota_proto::v1::admin_server::AdminServer;
use quota_proto::v1::cluster_server::ClusterServer;
use quota_proto::v1::data_server::DataServer;
use quota_proto::v1::gateway_server::GatewayServer;
use quota_proto::v1::raft_server::RaftServer;
use quota_store::Raft;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;

/// Why a node could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("storage: {0}")]
    Store(#[from] quota_store::StoreError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// How long a stopping node waits for open requests to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How often the leader looks for leases to expire.
const LEASE_EXPIRY_TICK: Duration = Duration::from_millis(250);

/// Run a node on `listener` until `shutdown` resolves; the AWS-compatible API, when
/// configured, on a listener bound to `aws_api.listen`.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.validate()?;
    let aws = match config.aws_api.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })?,
        ),
        None => None,
    };
    serve_with(config, listener, aws, shutdown).await
}

/// [`serve`] with the AWS-compatible API on a listener of the caller's (tests bind port 0).
pub async fn serve_with(
    config: Config,
    listener: TcpListener,
    aws_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.validate()?;
    let access_keys = match &config.aws_api.access_keys_file {
        Some(path) => crate::rest::AccessKeys::load(path)?,
        None => crate::rest::AccessKeys::default(),
    };
    let admin_token = config.admin_token()?;
    let gateway_token = config.gateway_token()?;
    let raft_config = Arc::new(config.openraft()?);
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let (log_store, state_machine) = quota_store::open(&config.data_dir).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let reader = state_machine.reader();
    let peers = Peers::new(config.peers.clone(), config.limits.max_raft_message_bytes);
    let network = NetworkFactory {
        peers: peers.clone(),
    };
    let raft = Raft::new(
        config.node_id,
        raft_config,
        network,
        log_store,
        state_machine,
    )
    .await
    .map_err(|e| ServerError::Raft(e.to_string()))?;
    let node = Arc::new(QuotaNode {
        id: config.node_id,
        raft: raft.clone(),
        state: reader,
        peers: peers.clone(),
        write_timeout: Duration::from_millis(config.limits.write_timeout_ms),
        batcher: Batcher::start(Sink::Local(raft.clone())),
        forwarder: Batcher::start(Sink::Forward {
            id: config.node_id,
            raft: raft.clone(),
            peers: peers.clone(),
            timeout: Duration::from_millis(config.limits.write_timeout_ms),
        }),
        throttles: crate::throttle::ThrottleBook::default(),
        stopping: stop_rx.clone(),
    });
    bootstrap(&config, &raft).await?;
    let expiry = tokio::spawn(expire_leases(node.clone()));
    let aws = aws_listener.map(|listener| {
        if config.aws_api.allow_unsigned {
            tracing::warn!(
                "aws api: aws_api.allow_unsigned is set: requests are NOT authenticated (development only)"
            );
        }
        tracing::info!(
            listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            access_keys = access_keys.len(),
            "aws api: serving the API Gateway-compatible REST API"
        );
        let api = Arc::new(crate::rest::RestApi {
            node: node.clone(),
            keys: access_keys,
            allow_unsigned: config.aws_api.allow_unsigned,
            max_body_bytes: config.limits.max_request_bytes,
        });
        tokio::spawn(crate::rest::serve(listener, api, stop_rx.clone()))
    });

    let auth = BearerAuth::new(admin_token.as_deref(), "admin");
    let max_request = config.limits.max_request_bytes;
    let max_raft = config.limits.max_raft_message_bytes;
    let admin = AdminServer::new(AdminService { node: node.clone() })
        .max_decoding_message_size(max_request)
        .max_encoding_message_size(max_raft);
    let cluster = ClusterServer::new(ClusterService {
        node: node.clone(),
        admin_token: admin_token.clone(),
    })
    .max_decoding_message_size(max_request);
    let gateway = GatewayServer::new(GatewayService {
        node: node.clone(),
        gateway_token: gateway_token.clone(),
    })
    .max_decoding_message_size(max_request)
    .max_encoding_message_size(max_raft);
    let gateway_auth = BearerAuth::new(gateway_token.as_deref(), "gateway");
    let data = DataServer::new(DataService {
        node: node.clone(),
        admin_auth: auth.clone(),
    })
    .max_decoding_message_size(max_request);
    let raft_service = RaftServer::new(RaftService { node: node.clone() })
        .max_decoding_message_size(max_raft)
        .max_encoding_message_size(max_raft);
    let admin_auth = auth.clone();
    let cluster_auth = auth.clone();
    tracing::info!(
        node = config.node_id,
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        admin_auth = auth.enabled(),
        "serving"
    );
    let served = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(config.limits.max_concurrent_requests_per_connection)
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(raft_service)
        .add_service(data)
        .add_service(InterceptedService::new(admin, move |r| admin_auth.check(r)))
        .add_service(InterceptedService::new(cluster, move |r| {
            cluster_auth.check(r)
        }))
        .add_service(InterceptedService::new(gateway, move |r| {
            gateway_auth.check(r)
        }))
        .serve_with_incoming_shutdown(
            // The builder's `tcp_nodelay` applies only to listeners it opens itself: set it on
            // every accepted socket, or Nagle and delayed ACKs add ~40 ms to some answers.
            tokio_stream::StreamExt::map(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                |conn| {
                    if let Ok(socket) = &conn {
                        let _ = socket.set_nodelay(true);
                    }
                    conn
                },
            ),
            async move {
                shutdown.await;
                // Ends every watch stream, so that their connections can close.
                let _ = stop_tx.send(true);
            },
        );
    // A graceful stop waits for open requests; give them `SHUTDOWN_GRACE`, then go anyway.
    let mut stopping = stop_rx;
    let served = tokio::select! {
        served = served => served,
        _ = async {
            let _ = stopping.wait_for(|stop| *stop).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("requests still open {SHUTDOWN_GRACE:?} after the stop signal; closing anyway");
            Ok(())
        }
    };
    tracing::info!(node = config.node_id, "shutting down");
    expiry.abort();
    if let Some(aws) = aws {
        aws.abort();
    }
    // Bounded too: a stop must end. Leaving without it is as safe as a crash, since every
    // acknowledged write is already durable.
    match tokio::time::timeout(SHUTDOWN_GRACE, raft.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "raft did not shut down cleanly"),
        Err(_) => tracing::warn!("raft did not stop within {SHUTDOWN_GRACE:?}; exiting anyway"),
    }
    served?;
    Ok(())
}

/// Initialise a brand-new cluster from the configured members, with no manual step: the
/// member with the smallest id does it, once, when its log is empty.
async fn bootstrap(config: &Config, raft: &Raft) -> Result<(), ServerError> {
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| ServerError::Raft(e.to_string()))?;
    let smallest = config.members.iter().map(|m| m.id).min();
    if initialized || smallest != Some(config.node_id) {
        return Ok(());
    }
    let members: BTreeMap<u64, BasicNode> = config
        .members
        .iter()
        .map(|m| {
            (
                m.id,
                BasicNode {
                    addr: m.addr.clone(),
                },
            )
        })
        .collect();
    match raft.initialize(members).await {
        Ok(()) => {
            tracing::info!(node = config.node_id, "initialised a new cluster");
            Ok(())
        }
        // Someone else's vote or log reached us first: the cluster exists.
        Err(openraft::error::RaftError::APIError(
            openraft::error::InitializeError::NotAllowed(e),
        )) => {
            tracing::info!(reason = %e, "cluster already initialised");
            Ok(())
        }
        Err(e) => Err(ServerError::Raft(e.to_string())),
    }
}

/// On the leader, propose `ExpireLeases` whenever a lease is due, so their tokens count as
/// used even if no gateway ever settles them.
async fn expire_leases(node: Arc<QuotaNode>) {
    let mut tick = tokio::time::interval(LEASE_EXPIRY_TICK);
    loop {
        tick.tick().await;
        if node.leader().map(|(id, _)| id) != Some(node.id) {
            continue;
        }
        let due = node
            .state
            .read(|s| s.next_lease_expiry())
            .ok()
            .flatten()
            .is_some_and(|at| at <= now_ms());
        if due && let Err(e) = node.write(None, Command::ExpireLeases).await {
            tracing::warn!(error = %e, "expiring leases failed; will retry");
        }
    }
}
