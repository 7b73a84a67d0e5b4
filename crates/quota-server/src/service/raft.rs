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
        if req.items.len() > quota_core::limits::MAX_COMMANDS_PER_BATCH {
            return Err(Status::invalid_argument(format!(
                "{} forwarded writes; the limit is {}",
                req.items.len(),
                quota_core::limits::MAX_COMMANDS_PER_BATCH
            )));
        }
        let answers = match self.node.leader() {
            Some((leader, _)) if leader == self.node.id => {
                // Queue every item before awaiting any, so they share a batch here too.
                let mut pending = Vec::with_capacity(req.items.len());
                for item in req.items {
                    pending.push(
                        self.node
                            .batcher
                            .enqueue(item.request_id, item.command)
                            .await,
                    );
                }
                let mut answers = Vec::with_capacity(pending.len());
                for answer in pending {
                    answers.push(match answer {
                        Some(rx) => rx.await.unwrap_or_else(|_| {
                            ProposeReply::Unknown("the proposal was dropped".into())
                        }),
                        None => ProposeReply::Unknown("the node is shutting down".into()),
                    });
                }
                answers
            }
            other => {
                let leader = other.map(|(id, _)| id);
                req.items
                    .iter()
                    .map(|_| ProposeReply::NotLeader { leader })
                    .collect()
            }
        };
        reply(&answers)
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
