//! A quotad node served in-process on a real socket (port 0) over real sled storage.
#![allow(dead_code)]

use quota_proto::v1::admin_client::AdminClient;
use quota_proto::v1::cluster_client::ClusterClient;
use quota_proto::v1::data_client::DataClient;
use quota_proto::v1::*;
use quota_server::config::{Config, MemberConfig};
use std::net::SocketAddr;
use std::time::Duration;
use tonic::transport::Channel;

pub struct Node {
    pub addr: SocketAddr,
    /// The AWS API Gateway-compatible API, when started with [`Node::start_aws`].
    pub aws: Option<SocketAddr>,
    pub channel: Channel,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Node {
    /// A single-node cluster (node 1), with an admin token if given.
    pub async fn start(token: Option<&str>) -> Node {
        Node::start_with(1, true, token).await
    }

    /// Node `id`; `bootstrap` makes it a one-node cluster of its own, otherwise it waits
    /// to be added to one.
    pub async fn start_with(id: u64, bootstrap: bool, token: Option<&str>) -> Node {
        Node::start_full(id, bootstrap, token, None).await
    }

    /// A single-node cluster that also serves the AWS-compatible API, checking signatures
    /// against `access_keys` (the access keys file's text).
    pub async fn start_aws(access_keys: &str) -> Node {
        Node::start_full(1, true, None, Some(access_keys)).await
    }

    /// A single-node cluster serving the AWS-compatible API without signature checks
    /// (`aws_api.allow_unsigned`, as `--dev` does).
    pub async fn start_aws_unsigned() -> Node {
        Node::start_full(1, true, None, Some("")).await
    }

    async fn start_full(
        id: u64,
        bootstrap: bool,
        token: Option<&str>,
        access_keys: Option<&str>,
    ) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = Config::dev();
        config.aws_api = Default::default();
        config.node_id = id;
        config.listen = addr;
        config.data_dir = dir.path().join("data");
        config.members = if bootstrap {
            vec![MemberConfig {
                id,
                addr: addr.to_string(),
            }]
        } else {
            Vec::new()
        };
        if let Some(t) = token {
            let path = dir.path().join("token");
            std::fs::write(&path, t).unwrap();
            config.admin_token_file = Some(path);
        }
        let mut aws_listener = None;
        if let Some(keys) = access_keys {
            if keys.is_empty() {
                config.aws_api.allow_unsigned = true;
            } else {
                let path = dir.path().join("access-keys.csv");
                std::fs::write(&path, keys).unwrap();
                config.aws_api.access_keys_file = Some(path);
            }
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            config.aws_api.listen = Some(l.local_addr().unwrap());
            aws_listener = Some(l);
        }
        let aws = aws_listener.as_ref().map(|l| l.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            quota_server::server::serve_with(config, listener, aws_listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        // Wait for a bootstrapped node to elect itself.
        let mut cluster = ClusterClient::new(channel.clone());
        for _ in 0..100 {
            if !bootstrap {
                break;
            }
            let mut status = tonic::Request::new(StatusRequest {});
            if let Some(t) = token {
                status
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
            if let Ok(s) = cluster.status(status).await
                && s.into_inner().status.unwrap().leader_id == id
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Node {
            addr,
            aws,
            channel,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    pub fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel.clone())
    }

    pub fn data(&self) -> DataClient<Channel> {
        DataClient::new(self.channel.clone())
    }

    /// Create a plan; panics if refused.
    pub async fn plan(&self, spec: PlanSpec) -> UsagePlan {
        self.admin()
            .create_plan(CreatePlanRequest {
                request_id: vec![],
                spec: Some(spec),
            })
            .await
            .unwrap()
            .into_inner()
            .plan
            .unwrap()
    }

    /// Attach a key to a plan; panics if refused.
    pub async fn attach(&self, plan: Option<PlanSelector>, key: Option<KeySelector>) {
        self.admin()
            .attach(AttachRequest {
                request_id: vec![],
                plan,
                key,
                extra_per_period: 0,
            })
            .await
            .unwrap();
    }

    pub fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel.clone())
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}
