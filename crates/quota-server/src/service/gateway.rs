//! The `quota.v1.Gateway` service, for gateways linking the client crate: batched leases,
//! key lookups by secret hash, a watch stream of key and plan changes, and reports of usage
//! admitted at the safe rate while the cluster was unreachable (one `Command::ReportOffline`
//! entry per report, with the gateway's request id, so a retried report counts once).
//!
//! Watch: subscribe to the state machine's applied feed, then read every plan at the applied
//! index `r` and send it, then `synced`, then a change for each later entry that touched a
//! key, plan or association. A change names what changed; its content is read from the
//! current state when it is sent (so a replayed, deduplicated response can never resend
//! stale data: the gateway always converges on the newest state). A watcher that falls
//! behind, or a snapshot that replaces the state, ends the stream with ABORTED; the gateway
//! reconnects and starts from the full state again.

use crate::node::{QuotaNode, now_ms};
use quota_core::{Command, KeyId, Outcome, PlanId, Response as CoreResponse, State};
use quota_proto::ToStatus;
use quota_proto::convert::lease::{LeaseBatch, gateway_key, secret_hash};
use quota_proto::convert::millis;
use quota_proto::convert::offline::OfflineReport;
use quota_proto::v1::gateway_server::Gateway;
use quota_proto::v1::watch_event::Event;
use quota_proto::v1::*;
use quota_store::AppliedEvent;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub struct GatewayService {
    pub node: Arc<QuotaNode>,
    /// Attached when forwarding throttle requests to the leader.
    pub gateway_token: Option<String>,
}

/// Marks a request one node forwarded to another.
pub const FORWARDED_HEADER: &str = "x-quotad-forwarded";

/// Most buckets in one throttle request.
const MAX_THROTTLE_WANTS: usize = 1024;
/// Most tokens wanted from one bucket at once.
const MAX_THROTTLE_WANT: u64 = 1_000_000;

impl GatewayService {
    /// Answer one want from this (leader) node's buckets.
    fn throttle_one(
        &self,
        state: &State,
        want: &ThrottleWant,
        now: std::time::Instant,
    ) -> ThrottleGrant {
        let failed = |error: String| ThrottleGrant {
            error,
            ..ThrottleGrant::default()
        };
        let plan = match quota_proto::convert::selector::plan_id("plan_id", &want.plan_id) {
            Ok(p) => p,
            Err(e) => return failed(e.to_string()),
        };
        let key = match quota_proto::convert::selector::key_id("key_id", &want.key_id) {
            Ok(k) => k,
            Err(e) => return failed(e.to_string()),
        };
        if want.want == 0 || want.want > MAX_THROTTLE_WANT {
            return failed(format!(
                "want is {}; it must be between 1 and {MAX_THROTTLE_WANT}",
                want.want
            ));
        }
        let Some(p) = state.get_plan(plan) else {
            return failed(format!("plan {plan} not found"));
        };
        let route = if want.route.is_empty() {
            None
        } else {
            match quota_core::Route::new(want.route.clone()) {
                Ok(r) => Some(r),
                Err(e) => return failed(e.to_string()),
            }
        };
        let throttle = match &route {
            Some(r) => p.spec.route_throttles().get(r).copied(),
            None => p.spec.throttle(),
        };
        let Some(throttle) = throttle else {
            return ThrottleGrant {
                granted: want.want,
                unlimited: true,
                ..ThrottleGrant::default()
            };
        };
        let taken = self
            .node
            .throttles
            .take(plan, key, route, throttle, want.want, now);
        ThrottleGrant {
            granted: taken.granted,
            // Rounded up, so a gateway never asks again before a token exists.
            retry_after_ms: taken.retry_after.as_micros().div_ceil(1000) as u64,
            unlimited: false,
            rate_limit: throttle.rate_per_sec(),
            burst_limit: throttle.burst(),
            error: String::new(),
        }
    }
}

/// Events buffered per watcher before it is considered slow.
const WATCH_BUFFER: usize = 1024;

/// What an applied command changed, by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Key(KeyId),
    Rotated(KeyId),
    Plan(PlanId),
    Association(PlanId, KeyId),
}

/// The changes of one applied command (recursing into batches). Refused commands change
/// nothing.
fn changes(command: &Command, response: &CoreResponse, out: &mut Vec<Change>) {
    if response.is_err() {
        return;
    }
    match (command, response) {
        (Command::Batch(items), Ok(Outcome::Batch(responses))) => {
            for (item, response) in items.iter().zip(responses) {
                changes(&item.command, response, out);
            }
        }
        (Command::KeyCreate { .. } | Command::KeyImport { .. }, Ok(Outcome::Key(k))) => {
            out.push(Change::Key(k.id))
        }
        (
            Command::KeyUpdate { key, .. }
            | Command::KeySetEnabled { key, .. }
            | Command::KeyDelete { key },
            _,
        ) => out.push(Change::Key(*key)),
        (Command::KeyRotate { key, .. }, _) => out.push(Change::Rotated(*key)),
        (Command::PlanCreate { .. }, Ok(Outcome::Plan(p))) => out.push(Change::Plan(p.id)),
        (Command::PlanUpdate { plan, .. } | Command::PlanDelete { plan }, _) => {
            out.push(Change::Plan(*plan))
        }
        (Command::Attach { plan, key, .. } | Command::Detach { plan, key }, _) => {
            out.push(Change::Association(*plan, *key))
        }
        _ => {}
    }
}

/// The event for a change, as the state now stands.
fn event(state: &State, change: Change) -> Event {
    match change {
        Change::Key(id) => match state.get_key(id) {
            Some(k) => Event::KeyUpserted(ApiKey::from(k)),
            None => Event::KeyDeleted(id.to_string()),
        },
        Change::Rotated(id) => match state.get_key(id) {
            Some(k) => Event::KeyRotated(KeyRotated {
                key_id: id.to_string(),
                previous_valid_until: millis(k.previous.as_ref().map(|p| p.valid_until)),
            }),
            None => Event::KeyDeleted(id.to_string()),
        },
        Change::Plan(id) => match state.get_plan(id) {
            Some(p) => Event::PlanUpserted(UsagePlan::from(p)),
            None => Event::PlanDeleted(id.to_string()),
        },
        Change::Association(plan, key) => match state.association(plan, key) {
            Some(a) => Event::Attached(Association::from(a)),
            None => Event::Detached(Detached {
                plan_id: plan.to_string(),
                key_id: key.to_string(),
            }),
        },
    }
}

async fn run_watch(
    node: Arc<QuotaNode>,
    mut feed: broadcast::Receiver<Arc<AppliedEvent>>,
    tx: mpsc::Sender<Result<WatchEvent, Status>>,
) {
    let initial = node.state.read_with_applied(|s, applied| {
        let plans: Vec<UsagePlan> = s.plans(None).map(UsagePlan::from).collect();
        (applied.map_or(0, |l| l.index), plans)
    });
    let (start, plans) = match initial {
        Ok(x) => x,
        Err(e) => {
            let _ = tx.send(Err(Status::internal(e.to_string()))).await;
            return;
        }
    };
    for plan in plans {
        let ev = WatchEvent {
            revision: start,
            event: Some(Event::PlanUpserted(plan)),
        };
        if tx.send(Ok(ev)).await.is_err() {
            return;
        }
    }
    let synced = WatchEvent {
        revision: start,
        event: Some(Event::Synced(Synced {})),
    };
    if tx.send(Ok(synced)).await.is_err() {
        return;
    }
    let mut pending = Vec::new();
    let mut stopping = node.stopping.clone();
    loop {
        let received = tokio::select! {
            received = feed.recv() => received,
            changed = stopping.changed() => {
                if changed.is_err() || *stopping.borrow() {
                    let msg = "this node is shutting down; reconnect to another node";
                    let _ = tx.send(Err(Status::unavailable(msg))).await;
                    return;
                }
                continue;
            }
        };
        let applied = match received {
            Ok(a) => a,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                let msg = format!(
                    "this watcher fell {n} changes behind; reconnect to start from the full state"
                );
                let _ = tx.send(Err(Status::aborted(msg))).await;
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let (index, entry, response) = match &*applied {
            AppliedEvent::Entry {
                index,
                entry,
                response,
            } => (*index, entry, response),
            AppliedEvent::Reset { .. } => {
                let msg = "the node installed a snapshot; reconnect to start from the full state";
                let _ = tx.send(Err(Status::aborted(msg))).await;
                return;
            }
        };
        if index <= start {
            continue;
        }
        pending.clear();
        changes(&entry.command, response, &mut pending);
        if pending.is_empty() {
            continue;
        }
        let events = node
            .state
            .read(|s| pending.iter().map(|c| event(s, *c)).collect::<Vec<_>>());
        let Ok(events) = events else { return };
        for ev in events {
            let ev = WatchEvent {
                revision: index,
                event: Some(ev),
            };
            if tx.send(Ok(ev)).await.is_err() {
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl Gateway for GatewayService {
    async fn leases(
        &self,
        request: Request<LeasesRequest>,
    ) -> Result<Response<LeasesResponse>, Status> {
        let batch = LeaseBatch::try_from(request.into_inner()).map_err(|e| e.to_status())?;
        let command = Command::Leases {
            gateway: batch.gateway,
            ops: batch.ops,
        };
        match self.node.write(batch.request_id, command).await? {
            Ok(Outcome::Leases(results)) => Ok(Response::new(LeasesResponse {
                results: results.into_iter().map(LeaseResult::from).collect(),
            })),
            Ok(other) => Err(Status::internal(format!("unexpected outcome {other:?}"))),
            Err(e) => Err(e.to_status()),
        }
    }

    async fn report_offline_usage(
        &self,
        request: Request<ReportOfflineUsageRequest>,
    ) -> Result<Response<ReportOfflineUsageResponse>, Status> {
        let report = OfflineReport::try_from(request.into_inner()).map_err(|e| e.to_status())?;
        let gateway = report.gateway.clone();
        let command = Command::ReportOffline {
            gateway: report.gateway,
            usage: report.usage,
        };
        match self.node.write(report.request_id, command).await? {
            Ok(Outcome::OfflineUsage(results)) => {
                let refused = results.iter().filter(|r| r.is_err()).count();
                // Usage that may pass the quota is the exception operators should see. Logged
                // per call: a retried report is logged again, but counted once.
                tracing::info!(
                    gateway = %gateway,
                    items = results.len(),
                    refused,
                    "usage admitted at the safe rate while the cluster was unreachable reported"
                );
                Ok(Response::new(ReportOfflineUsageResponse {
                    results: results.into_iter().map(OfflineUsageResult::from).collect(),
                }))
            }
            Ok(other) => Err(Status::internal(format!("unexpected outcome {other:?}"))),
            Err(e) => Err(e.to_status()),
        }
    }

    async fn lookup_key(
        &self,
        request: Request<LookupKeyRequest>,
    ) -> Result<Response<LookupKeyResponse>, Status> {
        let req = request.into_inner();
        let hash = secret_hash(&req.secret_hash).map_err(|e| e.to_status())?;
        let now = now_ms();
        let key = self
            .node
            .read(req.allow_stale, |s| {
                s.key_by_hash(&hash, now)
                    .map(|k| gateway_key(k, &hash, s.key_associations(k.id)))
            })
            .await?;
        Ok(Response::new(LookupKeyResponse { key }))
    }

    async fn throttle(
        &self,
        request: Request<ThrottleRequest>,
    ) -> Result<Response<ThrottleResponse>, Status> {
        let request_was_forwarded = request.metadata().contains_key(FORWARDED_HEADER);
        let req = request.into_inner();
        if req.wants.len() > MAX_THROTTLE_WANTS {
            return Err(Status::invalid_argument(format!(
                "wants has {} entries; the limit is {MAX_THROTTLE_WANTS}",
                req.wants.len()
            )));
        }
        let (leader, addr) = self
            .node
            .leader()
            .ok_or_else(|| Status::unavailable("no leader is known; retry"))?;
        if leader != self.node.id {
            // The buckets live on the leader: forward, once. A forwarded request that reaches
            // a node which is not the leader either (leadership moved) is refused, so two
            // nodes with stale views cannot bounce it between them.
            if request_was_forwarded {
                return Err(Status::unavailable("leadership is moving; retry"));
            }
            let channel = self.node.peers.channel(leader, &addr)?;
            let mut forwarded = Request::new(req);
            if let Some(token) = &self.gateway_token {
                let value = format!("Bearer {token}").parse().map_err(|_| {
                    Status::internal("the gateway token is not a valid header value")
                })?;
                forwarded.metadata_mut().insert("authorization", value);
            }
            forwarded.metadata_mut().insert(
                FORWARDED_HEADER,
                tonic::metadata::MetadataValue::from_static("1"),
            );
            return quota_proto::v1::gateway_client::GatewayClient::new(channel)
                .throttle(forwarded)
                .await;
        }
        let now = std::time::Instant::now();
        let grants = self
            .node
            .state
            .read(|s| {
                req.wants
                    .iter()
                    .map(|w| self.throttle_one(s, w, now))
                    .collect::<Vec<_>>()
            })
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ThrottleResponse { grants }))
    }

    type WatchStream = ReceiverStream<Result<WatchEvent, Status>>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let gateway = request.into_inner().gateway_id;
        if gateway.len() > quota_core::limits::MAX_GATEWAY_ID_LEN {
            return Err(Status::invalid_argument(format!(
                "gateway_id is {} bytes long; the limit is {}",
                gateway.len(),
                quota_core::limits::MAX_GATEWAY_ID_LEN
            )));
        }
        // Subscribe before reading, so no change between the read and the subscription is lost.
        let feed = self.node.state.subscribe();
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(run_watch(self.node.clone(), feed, tx));
        tracing::debug!(gateway = %gateway, "watch started");
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
