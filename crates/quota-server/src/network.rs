//! Node-to-node transport: openraft's `RaftNetwork` over our gRPC `quota.v1.Raft` service.
//!
//! Payloads are openraft's own messages, encoded with bincode inside a `RaftPayload`; the
//! reply carries the remote `Result`, so a remote Raft error reaches openraft as such. One
//! tonic channel is cached per peer address; channels reconnect by themselves, and HTTP/2
//! keepalive notices a dead link so a channel recovers after a partition heals.

use crate::error::NodeError;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use quota_proto::v1::RaftPayload;
use quota_proto::v1::raft_client::RaftClient;
use quota_store::typ::*;
use quota_store::{Node, NodeId, TypeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Encode a Raft message.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, NodeError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| NodeError::Internal(format!("encoding a Raft message: {e}")))
}

/// Decode a Raft message.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, NodeError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| NodeError::BadRequest(format!("malformed Raft message: {e}")))
}

/// Channels to peers, shared by Raft replication and by request forwarding.
#[derive(Clone)]
pub struct Peers {
    /// Local dial overrides (node id -> address), from the config.
    overrides: Arc<BTreeMap<NodeId, String>>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    max_message_bytes: usize,
}

impl Peers {
    pub fn new(overrides: BTreeMap<NodeId, String>, max_message_bytes: usize) -> Peers {
        Peers {
            overrides: Arc::new(overrides),
            channels: Arc::new(Mutex::new(HashMap::new())),
            max_message_bytes,
        }
    }

    /// The address to dial for `id`, whose membership address is `addr`.
    pub fn address(&self, id: NodeId, addr: &str) -> String {
        self.overrides
            .get(&id)
            .cloned()
            .unwrap_or_else(|| addr.to_owned())
    }

    /// A client for the peer `id` at membership address `addr`.
    pub fn client(&self, id: NodeId, addr: &str) -> Result<RaftClient<Channel>, NodeError> {
        Ok(RaftClient::new(self.channel(id, addr)?)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }

    /// The cached channel to the peer `id` at membership address `addr`.
    pub fn channel(&self, id: NodeId, addr: &str) -> Result<Channel, NodeError> {
        let addr = self.address(id, addr);
        // A std Mutex: held only to look up or insert, never across an await.
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| NodeError::Internal("peer channel table poisoned".into()))?;
        let channel = match channels.get(&addr) {
            Some(c) => c.clone(),
            None => {
                let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| NodeError::Internal(format!("bad peer address {addr}: {e}")))?
                    .connect_timeout(Duration::from_millis(500))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(1))
                    .keep_alive_timeout(Duration::from_secs(2))
                    .keep_alive_while_idle(true);
                let channel = endpoint.connect_lazy();
                channels.insert(addr, channel.clone());
                channel
            }
        };
        Ok(channel)
    }
}

/// Makes a [`PeerNetwork`] per target, as openraft asks.
#[derive(Clone)]
pub struct NetworkFactory {
    pub peers: Peers,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerNetwork {
        PeerNetwork {
            target,
            client: self.peers.client(target, &node.addr),
        }
    }
}

/// The link to one peer.
pub struct PeerNetwork {
    target: NodeId,
    client: Result<RaftClient<Channel>, NodeError>,
}

/// Map a transport failure: refused or unavailable peers are unreachable (openraft backs
/// off), everything else is a network error (openraft retries).
fn transport_error<E: std::error::Error>(status: &tonic::Status) -> RPCError<NodeId, Node, E> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(status))
        }
        _ => RPCError::Network(NetworkError::new(status)),
    }
}

impl PeerNetwork {
    async fn call<Req, Resp, E>(
        &mut self,
        which: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(e))),
        };
        let data = encode(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut req = tonic::Request::new(RaftPayload { data });
        req.set_timeout(option.hard_ttl());
        let mut client = client;
        let reply = match which {
            Rpc::Append => client.append_entries(req).await,
            Rpc::Vote => client.vote(req).await,
            Rpc::Snapshot => client.install_snapshot(req).await,
        }
        .map_err(|s| transport_error(&s))?;
        let result: Result<Resp, RaftError<NodeId, E>> = decode(&reply.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(Rpc::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}
