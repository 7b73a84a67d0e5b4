//! The internal `quota.v1.Raft` service: openraft's RPCs between nodes, plus forwarding of
//! writes (`Propose`) and read indexes (`ReadIndex`) to the leader.

use crate::error::NodeError;
use crate::network::{decode, encode};
use crate::node::{ProposeReply, ProposeRequest, QuotaNode};
use quota_proto::v1::raft_server::Raft;
use quota_proto::v1::{Empty, RaftPayload, ReadIndexReply};
use quota_store::typ::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct RaftService {
    pub node: Arc<QuotaNode>,
}

fn reply<T: serde::Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    Ok(Response::new(RaftPayload {
        data: encode(value)?,
    }))
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: AppendEntriesRequest = decode(&request.into_inner().data)?;
        reply(&self.node.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest = decode(&request.into_inner().data)?;
        reply(&self.node.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest = decode(&request.into_inner().data)?;
        tracing::info!(
            leader = rpc.vote.leader_id().voted_for(),
            snapshot = %rpc.meta.snapshot_id,
            offset = rpc.offset,
            done = rpc.done,
            "receiving snapshot to install"
        );
        reply(&self.node.raft.install_snapshot(rpc).await)
    }

    async fn propose(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let req: ProposeRequest = decode(&request.into_inner().data)?;
        let answer = match self.node.leader() {
            Some((leader, _)) if leader == self.node.id => {
                self.node.propose_local(req.request_id, req.command).await
            }
            other => ProposeReply::NotLeader {
                leader: other.map(|(id, _)| id),
            },
        };
        reply(&answer)
    }

    async fn read_index(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<ReadIndexReply>, Status> {
        let index = self.node.local_read_index().await.map_err(|e| match e {
            NodeError::NotLeader { .. } => Status::failed_precondition("not the leader"),
            other => Status::from(other),
        })?;
        Ok(Response::new(ReadIndexReply { index }))
    }
}
