//! The public `quota.v1.Data` service: the direct, linearizable increment, for callers
//! without the client crate (scripts, other languages), one call each or many on a stream.

use crate::node::QuotaNode;
use futures_util::stream::{FuturesUnordered, Stream, StreamExt};
use quota_core::{Command, Outcome};
use quota_proto::ToStatus;
use quota_proto::convert::data::IncrementCall;
use quota_proto::v1::data_server::Data;
use quota_proto::v1::{
    IncrementFailed, IncrementRequest, IncrementResponse, IncrementStreamRequest,
    IncrementStreamResponse, increment_stream_response,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::{Request, Response, Status, Streaming};

/// Increments of one stream being applied at once, at most; the stream reads no more
/// requests until one of them is answered (backpressure that bounds the memory a stream
/// holds).
pub const MAX_INCREMENTS_IN_FLIGHT_PER_STREAM: usize = 1024;

pub struct DataService {
    pub node: Arc<QuotaNode>,
    /// An increment that names its key by id (not by secret) spends that key's quota without
    /// knowing its secret: that needs the admin token, when one is configured.
    pub admin_auth: crate::auth::BearerAuth,
}

/// One increment, from the wire request to the answer: the same for a call of its own and
/// for a stream item. `admin` is whether the caller presented the admin token (checked
/// once per call or stream), needed to name a key by id.
async fn increment(
    node: Arc<QuotaNode>,
    request: IncrementRequest,
    admin: Result<(), Status>,
) -> Result<IncrementResponse, Status> {
    if matches!(
        request.key,
        Some(quota_proto::v1::increment_request::Key::KeyId(_))
    ) {
        admin.map_err(|e| {
            Status::unauthenticated(format!("{} (needed to name a key by id)", e.message()))
        })?;
    }
    let call = IncrementCall::try_from(request).map_err(|e| e.to_status())?;
    let target = match call.target {
        quota_proto::convert::data::IncrementTarget::Plan(quota_proto::Selector::Name(name)) => {
            let found = node
                .read(false, |s| s.plan_by_name(name.as_str()).map(|p| p.id))
                .await?;
            quota_core::Target::Plan(
                found.ok_or_else(|| Status::not_found(format!("no plan is named `{name}`")))?,
            )
        }
        other => other
            .into_target(|_| None)
            .ok_or_else(|| Status::internal("an increment target could not be resolved"))?,
    };
    let command = Command::Increment {
        key: call.key,
        target,
        cost: call.cost,
    };
    match node.write(call.request_id, command).await? {
        Ok(Outcome::Increment(result)) => Ok(IncrementResponse::from(result)),
        Ok(other) => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        Err(e) => Err(e.to_status()),
    }
}

type Pending = Pin<Box<dyn Future<Output = IncrementStreamResponse> + Send>>;

/// The answer stream of `IncrementStream`. It is polled by the task that writes the
/// stream's answers (hyper's task for the HTTP/2 stream), so the increments of a stream need
/// no task of their own: reading a request starts its increment (which waits in the
/// leader's batcher like any other write), and each poll hands out whichever increments have
/// been applied.
struct IncrementAnswers {
    /// The caller's requests; `None` once they ended (or the node began to stop).
    requests: Option<Streaming<IncrementStreamRequest>>,
    in_flight: FuturesUnordered<Pending>,
    node: Arc<QuotaNode>,
    admin: Result<(), Status>,
    /// Ready when the node begins to stop: read no more requests, answer the ones taken.
    stopping: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Why reading requests failed (a malformed or oversized message, a broken stream):
    /// the stream ends with this status once the increments taken are answered.
    failure: Option<Status>,
}

impl IncrementAnswers {
    fn start(&mut self, item: IncrementStreamRequest) {
        let tag = item.tag;
        let node = self.node.clone();
        let admin = self.admin.clone();
        self.in_flight.push(Box::pin(async move {
            let result = match item.increment {
                None => Err(Status::invalid_argument("increment: required")),
                Some(request) => increment(node, request, admin).await,
            };
            IncrementStreamResponse {
                tag,
                result: Some(match result {
                    Ok(response) => increment_stream_response::Result::Response(response),
                    Err(status) => increment_stream_response::Result::Failed(IncrementFailed {
                        code: status.code() as i32,
                        message: status.message().to_owned(),
                    }),
                }),
            }
        }));
    }
}

impl Stream for IncrementAnswers {
    type Item = Result<IncrementStreamResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.requests.is_some() && this.stopping.as_mut().poll(cx).is_ready() {
            this.requests = None;
        }
        // Take requests while there is room; each starts its increment at once, so all of
        // them can join the leader's next batch.
        while this.in_flight.len() < MAX_INCREMENTS_IN_FLIGHT_PER_STREAM {
            let Some(requests) = this.requests.as_mut() else {
                break;
            };
            match Pin::new(requests).poll_next(cx) {
                Poll::Ready(Some(Ok(item))) => this.start(item),
                // A malformed or oversized message, or a broken stream: answer what was
                // taken, then end with the error.
                Poll::Ready(Some(Err(status))) => {
                    this.requests = None;
                    this.failure = Some(status);
                }
                Poll::Ready(None) => this.requests = None,
                Poll::Pending => break,
            }
        }
        match this.in_flight.poll_next_unpin(cx) {
            Poll::Ready(Some(answer)) => Poll::Ready(Some(Ok(answer))),
            // Nothing in flight: done if the requests ended (with their error, if they
            // failed), otherwise the requests' waker (registered above) wakes us for the
            // next one.
            Poll::Ready(None) if this.requests.is_none() => {
                Poll::Ready(this.failure.take().map(Err))
            }
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

#[tonic::async_trait]
impl Data for DataService {
    async fn increment(
        &self,
        request: Request<IncrementRequest>,
    ) -> Result<Response<IncrementResponse>, Status> {
        let admin = self.admin_auth.check_metadata(request.metadata());
        increment(self.node.clone(), request.into_inner(), admin)
            .await
            .map(Response::new)
    }

    type IncrementStreamStream =
        Pin<Box<dyn Stream<Item = Result<IncrementStreamResponse, Status>> + Send>>;

    async fn increment_stream(
        &self,
        request: Request<Streaming<IncrementStreamRequest>>,
    ) -> Result<Response<Self::IncrementStreamStream>, Status> {
        let admin = self.admin_auth.check_metadata(request.metadata());
        let mut stopping = self.node.stopping.clone();
        let answers = IncrementAnswers {
            requests: Some(request.into_inner()),
            in_flight: FuturesUnordered::new(),
            node: self.node.clone(),
            admin,
            stopping: Box::pin(async move {
                while !*stopping.borrow_and_update() {
                    if stopping.changed().await.is_err() {
                        break;
                    }
                }
            }),
            failure: None,
        };
        Ok(Response::new(Box::pin(answers)))
    }
}
