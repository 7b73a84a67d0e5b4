//! The public `quota.v1.Data` service: the direct, linearizable increment, for callers
//! without the client crate (scripts, other languages).

use crate::node::QuotaNode;
use quota_core::{Command, Outcome};
use quota_proto::ToStatus;
use quota_proto::convert::data::IncrementCall;
use quota_proto::v1::data_server::Data;
use quota_proto::v1::{IncrementRequest, IncrementResponse};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct DataService {
    pub node: Arc<QuotaNode>,
    /// An increment that names its key by id (not by secret) spends that key's quota without
    /// knowing its secret: that needs the admin token, when one is configured.
    pub admin_auth: crate::auth::BearerAuth,
}

#[tonic::async_trait]
impl Data for DataService {
    async fn increment(
        &self,
        request: Request<IncrementRequest>,
    ) -> Result<Response<IncrementResponse>, Status> {
        let by_id = matches!(
            request.get_ref().key,
            Some(quota_proto::v1::increment_request::Key::KeyId(_))
        );
        if by_id {
            self.admin_auth
                .check_metadata(request.metadata())
                .map_err(|e| {
                    Status::unauthenticated(format!("{} (needed to name a key by id)", e.message()))
                })?;
        }
        let call = IncrementCall::try_from(request.into_inner()).map_err(|e| e.to_status())?;
        let target = match call.target {
            quota_proto::convert::data::IncrementTarget::Plan(quota_proto::Selector::Name(
                name,
            )) => {
                let found = self
                    .node
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
        match self.node.write(call.request_id, command).await? {
            Ok(Outcome::Increment(result)) => Ok(Response::new(IncrementResponse::from(result))),
            Ok(other) => Err(Status::internal(format!("unexpected outcome {other:?}"))),
            Err(e) => Err(e.to_status()),
        }
    }
}
