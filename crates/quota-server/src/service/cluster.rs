//! The public `quota.v1.Cluster` service: status, and membership changes. Membership
//! changes run on the leader; a follower forwards the call there.

use crate::error::NodeError;
use crate::node::QuotaNode;
use openraft::{BasicNode, ChangeMembers};
use quota_proto::v1::cluster_client::ClusterClient;
use quota_proto::v1::cluster_server::Cluster;
use quota_proto::v1::*;
use std::collections::BTreeSet;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ClusterService {
    pub node: Arc<QuotaNode>,
    /// The admin token, attached when forwarding to the leader.
    pub admin_token: Option<String>,
}

/// Longest node address accepted, in bytes.
const MAX_ADDR_LEN: usize = 256;

impl ClusterService {
    fn status(&self) -> ClusterStatus {
        let m = self.node.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let replication = m.replication.clone().unwrap_or_default();
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let matched = replication.get(id).and_then(|l| l.map(|l| l.index));
                Member {
                    id: *id,
                    raft_address: node.addr.clone(),
                    public_address: node.addr.clone(),
                    role: if voters.contains(id) {
                        Role::Voter
                    } else {
                        Role::Learner
                    } as i32,
                    leader: m.current_leader == Some(*id),
                    last_applied_index: if *id == m.id {
                        Some(m.last_applied.map_or(0, |l| l.index))
                    } else {
                        matched
                    },
                    matched_index: matched,
                }
            })
            .collect();
        ClusterStatus {
            node_id: m.id,
            leader_id: m.current_leader.unwrap_or(0),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            committed_index: m.last_applied.map_or(0, |l| l.index),
            members,
        }
    }

    /// The leader's Cluster client, when this node is not the leader.
    fn leader_client(&self) -> Result<Option<ClusterClient<tonic::transport::Channel>>, Status> {
        let (leader, addr) = self
            .node
            .leader()
            .ok_or_else(|| Status::from(NodeError::NoLeader("no leader is known".into())))?;
        if leader == self.node.id {
            return Ok(None);
        }
        let channel = self.node.peers.channel(leader, &addr)?;
        Ok(Some(ClusterClient::new(channel)))
    }

    fn forwarded<T>(&self, message: T) -> Result<Request<T>, Status> {
        let mut req = Request::new(message);
        if let Some(token) = &self.admin_token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| Status::internal("the admin token is not a valid header value"))?;
            req.metadata_mut().insert("authorization", value);
        }
        req.metadata_mut().insert(
            super::gateway::FORWARDED_HEADER,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        Ok(req)
    }
}

fn membership_error(e: impl std::fmt::Display) -> Status {
    Status::failed_precondition(format!("membership change failed: {e}"))
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(StatusResponse {
            status: Some(self.status()),
        }))
    }

    async fn add_node(
        &self,
        request: Request<AddNodeRequest>,
    ) -> Result<Response<AddNodeResponse>, Status> {
        let was_forwarded = request
            .metadata()
            .contains_key(super::gateway::FORWARDED_HEADER);
        let req = request.into_inner();
        if req.id == 0 {
            return Err(Status::invalid_argument("id: must be 1 or more"));
        }
        let addr = req.raft_address.trim().to_owned();
        if addr.is_empty() || addr.len() > MAX_ADDR_LEN || !addr.contains(':') {
            return Err(Status::invalid_argument(format!(
                "raft_address: `{addr}` is not a host:port address"
            )));
        }
        if let Some(mut leader) = self.leader_client()? {
            if was_forwarded {
                // Forward once only: two nodes with stale views must not bounce it.
                return Err(Status::unavailable("leadership is moving; retry"));
            }
            let forwarded = self.forwarded(req)?;
            return leader.add_node(forwarded).await;
        }
        let raft = &self.node.raft;
        raft.add_learner(req.id, BasicNode { addr }, true)
            .await
            .map_err(membership_error)?;
        if !req.learner_only {
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([req.id])), false)
                .await
                .map_err(membership_error)?;
        }
        tracing::info!(node = req.id, learner_only = req.learner_only, "node added");
        Ok(Response::new(AddNodeResponse {
            status: Some(self.status()),
        }))
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        let was_forwarded = request
            .metadata()
            .contains_key(super::gateway::FORWARDED_HEADER);
        let req = request.into_inner();
        if let Some(mut leader) = self.leader_client()? {
            if was_forwarded {
                // Forward once only: two nodes with stale views must not bounce it.
                return Err(Status::unavailable("leadership is moving; retry"));
            }
            let forwarded = self.forwarded(req)?;
            return leader.remove_node(forwarded).await;
        }
        let membership = self
            .node
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone();
        if membership.get_node(&req.id).is_none() {
            // Removing a node that is not a member is not an error: the outcome is reached.
            return Ok(Response::new(RemoveNodeResponse {
                status: Some(self.status()),
            }));
        }
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        if voters.contains(&req.id) && voters.len() == 1 {
            return Err(Status::failed_precondition("cannot remove the last voter"));
        }
        let raft = &self.node.raft;
        if voters.contains(&req.id) {
            raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([req.id])), false)
                .await
                .map_err(membership_error)?;
        }
        raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([req.id])), false)
            .await
            .map_err(membership_error)?;
        tracing::info!(node = req.id, "node removed");
        Ok(Response::new(RemoveNodeResponse {
            status: Some(self.status()),
        }))
    }
}
