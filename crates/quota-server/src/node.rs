//! A running node: the Raft instance, a reader of the applied state, and the two things
//! every service needs, a linearizable write and a linearizable read, from any node.
//!
//! Writes: the leader stamps the command with its clock and proposes it; a follower forwards
//! the command to the leader over the internal `Propose` RPC. During an election the write
//! waits and retries (same request id, so it is applied once) until `write_timeout`.
//!
//! Reads (read index): the leader confirms its leadership with a quorum and waits until its
//! state machine has applied everything committed before the read; a follower asks the
//! leader for that index (`ReadIndex`) and waits until it has applied as far itself, then
//! reads its own state.

use crate::error::NodeError;
use crate::network::{Peers, decode, encode};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use quota_core::limits::MAX_COMMANDS_PER_BATCH;
use quota_core::{BatchItem, Command, Entry, Outcome, RequestId, Response, State, Timestamp};
use quota_proto::v1::{Empty, RaftPayload};
use quota_store::{NodeId, Raft, StateReader};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// What a follower sends the leader to have commands proposed: the writes it received
/// meanwhile, each with its request id. The answer is one [`ProposeReply`] per item.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProposeRequest {
    pub items: Vec<BatchItem>,
}

/// The leader's answer to a forwarded command.
#[derive(Debug, Serialize, Deserialize)]
pub enum ProposeReply {
    Applied(Response),
    /// The receiver is not the leader (any more).
    NotLeader {
        leader: Option<NodeId>,
    },
    /// The outcome is unknown; retry with the same request id.
    Unknown(String),
}

pub struct QuotaNode {
    pub id: NodeId,
    pub raft: Raft,
    pub state: StateReader,
    pub peers: Peers,
    pub write_timeout: Duration,
    /// Packs writes into log entries while this node is the leader.
    pub batcher: Batcher,
    /// Packs writes into one `Propose` call to the leader while this node is a follower.
    pub forwarder: Batcher,
    /// Throttle buckets; used while this node is the leader.
    pub throttles: crate::throttle::ThrottleBook,
    /// Becomes `true` when the node starts to stop; long-lived streams end then.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// Commands waiting to be proposed, at most this many (then callers wait: backpressure).
const PROPOSAL_QUEUE_DEPTH: usize = 8192;

/// One command waiting for the batcher.
struct Pending {
    request_id: Option<RequestId>,
    command: Command,
    reply: oneshot::Sender<ProposeReply>,
}

/// Where a batch goes.
#[derive(Clone)]
pub enum Sink {
    /// Into the local Raft log, as one entry (this node is the leader).
    Local(Raft),
    /// To the leader in one `Propose` call (this node is a follower).
    Forward {
        id: NodeId,
        raft: Raft,
        peers: Peers,
        timeout: Duration,
    },
}

/// Packs concurrent proposals together, so that many writes share one log entry
/// ([`Command::Batch`]), one disk flush and one replication round (with 64 clients, one entry
/// per write would mean 64 flushes in a row) — or, on a follower, one forwarding call.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Start the batching task for `sink`.
    pub fn start(sink: Sink) -> Batcher {
        let (tx, rx) = mpsc::channel(PROPOSAL_QUEUE_DEPTH);
        tokio::spawn(run_batcher(sink, rx));
        Batcher { tx }
    }

    /// Queue a command; the answer arrives on the returned channel. Queue several before
    /// awaiting any, and they share a batch.
    pub async fn enqueue(
        &self,
        request_id: Option<RequestId>,
        command: Command,
    ) -> Option<oneshot::Receiver<ProposeReply>> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            request_id,
            command,
            reply,
        };
        self.tx.send(pending).await.ok()?;
        Some(answer)
    }

    pub async fn propose(&self, request_id: Option<RequestId>, command: Command) -> ProposeReply {
        match self.enqueue(request_id, command).await {
            Some(answer) => answer
                .await
                .unwrap_or_else(|_| ProposeReply::Unknown("the proposal was dropped".into())),
            None => ProposeReply::Unknown("the node is shutting down".into()),
        }
    }
}

/// The current leader of `raft` and its membership address.
pub fn leader_of(raft: &Raft) -> Option<(NodeId, String)> {
    // Borrow, not clone: this runs on every write and read.
    let receiver = raft.metrics();
    let metrics = receiver.borrow();
    let leader = metrics.current_leader?;
    let addr = metrics
        .membership_config
        .membership()
        .get_node(&leader)
        .map(|n| n.addr.clone())?;
    Some((leader, addr))
}

/// Send a follower's batch to the leader in one `Propose` call.
async fn forward_batch(
    id: NodeId,
    raft: &Raft,
    peers: &Peers,
    timeout: Duration,
    batch: Vec<Pending>,
) {
    let (items, replies): (Vec<BatchItem>, Vec<_>) = batch
        .into_iter()
        .map(|p| {
            (
                BatchItem {
                    request_id: p.request_id,
                    command: p.command,
                },
                p.reply,
            )
        })
        .unzip();
    let answers = async {
        let (leader, addr) = match leader_of(raft) {
            Some((leader, _)) if leader == id => {
                return Err(ProposeReply::NotLeader { leader: Some(id) });
            }
            Some(found) => found,
            None => return Err(ProposeReply::NotLeader { leader: None }),
        };
        let data =
            encode(&ProposeRequest { items }).map_err(|e| ProposeReply::Unknown(e.to_string()))?;
        let mut client = peers
            .client(leader, &addr)
            .map_err(|e| ProposeReply::Unknown(e.to_string()))?;
        let mut req = tonic::Request::new(RaftPayload { data });
        req.set_timeout(timeout);
        // A failed call may or may not have been applied: the outcome is unknown, and the
        // callers retry with the same request ids.
        let reply = client.propose(req).await.map_err(|status| {
            ProposeReply::Unknown(format!(
                "forwarding to leader {leader} failed: {}",
                status.message()
            ))
        })?;
        decode::<Vec<ProposeReply>>(&reply.into_inner().data)
            .map_err(|e| ProposeReply::Unknown(e.to_string()))
    }
    .await;
    match answers {
        Ok(answers) if answers.len() == replies.len() => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
        Ok(answers) => {
            let m = format!(
                "the leader answered {} of {} forwarded writes",
                answers.len(),
                replies.len()
            );
            for reply in replies {
                let _ = reply.send(ProposeReply::Unknown(m.clone()));
            }
        }
        Err(failure) => {
            for reply in replies {
                let _ = reply.send(match &failure {
                    ProposeReply::NotLeader { leader } => {
                        ProposeReply::NotLeader { leader: *leader }
                    }
                    ProposeReply::Unknown(m) => ProposeReply::Unknown(m.clone()),
                    ProposeReply::Applied(_) => ProposeReply::Unknown("unexpected answer".into()),
                });
            }
        }
    }
}

/// One batch at a time: whatever arrives while a batch is proposed waits and goes in the
/// next one, so batches grow with the load (up to `MAX_COMMANDS_PER_BATCH`) and every entry
/// pays its flush and replication round for as many commands as possible. Measured with
/// incr-bench (BENCHMARKS.md), 64 clients on the three-node loopback cluster: one batch in
/// flight beat two, three and four (streams: ~19,000 vs ~17,500, ~17,000 and ~16,100
/// increments/s), since on two cores more, smaller entries cost more CPU than their overlap
/// gains. The batch is proposed here, not in a task of its own: one hand-off less per batch.
async fn run_batcher(sink: Sink, mut rx: mpsc::Receiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_COMMANDS_PER_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        match &sink {
            Sink::Local(raft) => propose_batch(raft, batch).await,
            Sink::Forward {
                id,
                raft,
                peers,
                timeout,
            } => forward_batch(*id, raft, peers, *timeout, batch).await,
        }
    }
}

async fn propose_batch(raft: &Raft, mut batch: Vec<Pending>) {
    if batch.len() == 1 {
        if let Some(p) = batch.pop() {
            let reply = client_write(raft, p.request_id, p.command).await;
            let _ = p.reply.send(reply);
        }
        return;
    }
    let (items, replies): (Vec<BatchItem>, Vec<_>) = batch
        .into_iter()
        .map(|p| {
            (
                BatchItem {
                    request_id: p.request_id,
                    command: p.command,
                },
                p.reply,
            )
        })
        .unzip();
    match client_write(raft, None, Command::Batch(items)).await {
        ProposeReply::Applied(Ok(Outcome::Batch(responses)))
            if responses.len() == replies.len() =>
        {
            for (reply, response) in replies.into_iter().zip(responses) {
                let _ = reply.send(ProposeReply::Applied(response));
            }
        }
        ProposeReply::Applied(other) => {
            let message = format!("a batch was answered with {other:?}");
            tracing::error!("{message}");
            for reply in replies {
                let _ = reply.send(ProposeReply::Unknown(message.clone()));
            }
        }
        ProposeReply::NotLeader { leader } => {
            for reply in replies {
                let _ = reply.send(ProposeReply::NotLeader { leader });
            }
        }
        ProposeReply::Unknown(m) => {
            for reply in replies {
                let _ = reply.send(ProposeReply::Unknown(m.clone()));
            }
        }
    }
}

/// Stamp a command with this (leader) node's clock and write it through Raft.
async fn client_write(
    raft: &Raft,
    request_id: Option<RequestId>,
    command: Command,
) -> ProposeReply {
    let entry = Entry {
        request_id,
        at: now_ms(),
        command,
    };
    match raft.client_write(entry).await {
        Ok(reply) => ProposeReply::Applied(reply.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => ProposeReply::NotLeader {
            leader: f.leader_id,
        },
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
            ProposeReply::Unknown(e.to_string())
        }
        Err(RaftError::Fatal(e)) => ProposeReply::Unknown(e.to_string()),
    }
}

/// Wall-clock milliseconds, for stamping entries. Only the leader calls this.
pub fn now_ms() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Timestamp(ms)
}

/// A fresh random request id, for writes that arrive without one.
pub fn random_request_id() -> Result<RequestId, NodeError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| NodeError::Internal(format!("random source: {e}")))?;
    Ok(RequestId(u128::from_be_bytes(bytes)))
}

enum Attempt<T> {
    Done(T),
    /// Worth retrying after a pause.
    Retry(NodeError),
}

impl QuotaNode {
    /// The current leader and its membership address.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        leader_of(&self.raft)
    }

    /// Apply a command through the Raft log, from any node, and return the state machine's
    /// response. Retries through elections until the write timeout.
    pub async fn write(
        &self,
        request_id: Option<RequestId>,
        command: Command,
    ) -> Result<Response, NodeError> {
        // Every write gets an id, so that our own retries below are applied once.
        let request_id = Some(match request_id {
            Some(id) => id,
            None => random_request_id()?,
        });
        let deadline = Instant::now() + self.write_timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            let last_error = match self.try_write(request_id, &command).await? {
                Attempt::Done(response) => return Ok(response),
                Attempt::Retry(e) => e,
            };
            if Instant::now() + pause >= deadline {
                return Err(last_error);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    async fn try_write(
        &self,
        request_id: Option<RequestId>,
        command: &Command,
    ) -> Result<Attempt<Response>, NodeError> {
        let Some((leader, _)) = self.leader() else {
            return Ok(Attempt::Retry(NodeError::NoLeader(
                "no leader is known".into(),
            )));
        };
        // The leader batches into its log; a follower batches into one call to the leader.
        let batcher = if leader == self.id {
            &self.batcher
        } else {
            &self.forwarder
        };
        Ok(match batcher.propose(request_id, command.clone()).await {
            ProposeReply::Applied(r) => Attempt::Done(r),
            ProposeReply::NotLeader { .. } => {
                Attempt::Retry(NodeError::NoLeader("leadership changed".into()))
            }
            ProposeReply::Unknown(m) => Attempt::Retry(NodeError::Unknown(m)),
        })
    }

    /// Propose on this node, which believes it is the leader: stamp and write.
    pub async fn propose_local(
        &self,
        request_id: Option<RequestId>,
        command: Command,
    ) -> ProposeReply {
        self.batcher.propose(request_id, command).await
    }

    /// Wait until this node's state reflects every write committed before the call.
    pub async fn read_barrier(&self) -> Result<(), NodeError> {
        let deadline = Instant::now() + self.write_timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            let err = match self.try_read_index().await {
                Ok(index) => {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    return self
                        .raft
                        .wait(Some(wait))
                        .applied_index_at_least(Some(index), "read barrier")
                        .await
                        .map(drop)
                        .map_err(|e| NodeError::NoLeader(format!("catching up for a read: {e}")));
                }
                Err(e) => e,
            };
            if Instant::now() + pause >= deadline {
                return Err(err);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// The index a linearizable read must wait for, from the leader.
    async fn try_read_index(&self) -> Result<u64, NodeError> {
        let (leader, addr) = self
            .leader()
            .ok_or_else(|| NodeError::NoLeader("no leader is known".into()))?;
        if leader == self.id {
            return self.local_read_index().await;
        }
        let mut client = self.peers.client(leader, &addr)?;
        let mut req = tonic::Request::new(Empty {});
        req.set_timeout(self.write_timeout);
        client
            .read_index(req)
            .await
            .map(|r| r.into_inner().index)
            .map_err(|s| {
                NodeError::NoLeader(format!("read index from leader {leader}: {}", s.message()))
            })
    }

    /// As the leader: confirm leadership with a quorum and return the read index.
    pub async fn local_read_index(&self) -> Result<u64, NodeError> {
        match self.raft.get_read_log_id().await {
            Ok((read, _applied)) => Ok(read.map_or(0, |l| l.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {
                Err(NodeError::NotLeader {
                    leader_id: None,
                    leader_addr: None,
                })
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => Err(
                NodeError::NoLeader(format!("leadership not confirmed: {e}")),
            ),
            Err(RaftError::Fatal(e)) => Err(NodeError::Internal(e.to_string())),
        }
    }

    /// Read the state, after a read barrier unless `allow_stale`.
    pub async fn read<R>(
        &self,
        allow_stale: bool,
        f: impl FnOnce(&State) -> R,
    ) -> Result<R, NodeError> {
        if !allow_stale {
            self.read_barrier().await?;
        }
        Ok(self.state.read(f)?)
    }
}
