//! The public `quota.v1.Admin` service: keys, plans, associations and usage.
//! Requests are converted into validated domain types at the edge (quota-proto); writes go
//! through the Raft log; reads are linearizable unless the caller allows stale ones.

use crate::node::{QuotaNode, now_ms};
use quota_core::{Command, KeyId, Outcome, PlanId, Secret, SecretDigest, State};
use quota_proto::convert::{self, Page, required};
use quota_proto::v1::admin_server::Admin;
use quota_proto::v1::*;
use quota_proto::{Selector, ToStatus};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AdminService {
    pub node: Arc<QuotaNode>,
}

type Reply<T> = Result<Response<T>, Status>;

fn bad(e: quota_core::ValidationError) -> Status {
    e.to_status()
}

fn rid(bytes: &[u8]) -> Result<Option<quota_core::RequestId>, Status> {
    convert::request_id(bytes).map_err(bad)
}

fn unexpected(o: Outcome) -> Status {
    Status::internal(format!("unexpected outcome {o:?}"))
}

impl AdminService {
    async fn write(&self, request_id: &[u8], command: Command) -> Result<Outcome, Status> {
        let response = self.node.write(rid(request_id)?, command).await?;
        response.map_err(|e| e.to_status())
    }

    /// Resolve a key selector. Names are resolved after a read barrier, so a key renamed
    /// just before is found under its new name.
    async fn key(&self, field: &str, sel: Option<KeySelector>) -> Result<KeyId, Status> {
        let sel: Selector<KeyId> = required(field, sel).map_err(bad)?;
        match sel {
            Selector::Id(id) => Ok(id),
            Selector::Name(name) => self
                .node
                .read(false, |s| s.key_by_name(name.as_str()).map(|k| k.id))
                .await?
                .ok_or_else(|| Status::not_found(format!("no key is named `{name}`"))),
        }
    }

    async fn plan(&self, field: &str, sel: Option<PlanSelector>) -> Result<PlanId, Status> {
        let sel: Selector<PlanId> = required(field, sel).map_err(bad)?;
        match sel {
            Selector::Id(id) => Ok(id),
            Selector::Name(name) => self
                .node
                .read(false, |s| s.plan_by_name(name.as_str()).map(|p| p.id))
                .await?
                .ok_or_else(|| Status::not_found(format!("no plan is named `{name}`"))),
        }
    }

    async fn read<R>(&self, allow_stale: bool, f: impl FnOnce(&State) -> R) -> Result<R, Status> {
        Ok(self.node.read(allow_stale, f).await?)
    }

    fn generate_secret() -> Result<Secret, Status> {
        Secret::generate().map_err(|e| Status::internal(e.to_string()))
    }

    /// The key a create or rotate produced, checking that it carries the secret we made. If a
    /// retried request id returned an earlier attempt's key, that secret was shown then and
    /// cannot be shown again.
    fn key_with_secret(outcome: Outcome, secret: &Secret) -> Result<(ApiKey, String), Status> {
        let Outcome::Key(key) = outcome else {
            return Err(unexpected(outcome));
        };
        if key.secret.hash != secret.hash() {
            return Err(Status::already_exists(format!(
                "this request id was already used for key {}; its secret was shown once then and cannot be shown again",
                key.id
            )));
        }
        Ok((ApiKey::from(&*key), secret.expose().to_owned()))
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_key(&self, request: Request<CreateKeyRequest>) -> Reply<CreateKeyResponse> {
        let req = request.into_inner();
        let spec = required("spec", req.spec).map_err(bad)?;
        let secret = Self::generate_secret()?;
        let outcome = self
            .write(
                &req.request_id,
                Command::KeyCreate {
                    spec,
                    secret: SecretDigest::of(&secret),
                },
            )
            .await?;
        let (key, secret) = Self::key_with_secret(outcome, &secret)?;
        Ok(Response::new(CreateKeyResponse {
            key: Some(key),
            secret,
        }))
    }

    async fn import_key(&self, request: Request<ImportKeyRequest>) -> Reply<ImportKeyResponse> {
        let req = request.into_inner();
        let spec = required("spec", req.spec).map_err(bad)?;
        let secret = Secret::import(&req.value).map_err(bad)?;
        let outcome = self
            .write(
                &req.request_id,
                Command::KeyImport {
                    spec,
                    secret: SecretDigest::of(&secret),
                },
            )
            .await?;
        let Outcome::Key(key) = outcome else {
            return Err(unexpected(outcome));
        };
        Ok(Response::new(ImportKeyResponse {
            key: Some(ApiKey::from(&*key)),
        }))
    }

    async fn get_key(&self, request: Request<GetKeyRequest>) -> Reply<GetKeyResponse> {
        let req = request.into_inner();
        let id = self.key("key", req.key).await?;
        let found = self
            .read(req.allow_stale, |s| {
                s.get_key(id).map(|k| {
                    (
                        ApiKey::from(k),
                        s.key_associations(id)
                            .map(Association::from)
                            .collect::<Vec<_>>(),
                    )
                })
            })
            .await?;
        let (key, plans) = found.ok_or_else(|| Status::not_found(format!("key {id} not found")))?;
        Ok(Response::new(GetKeyResponse {
            key: Some(key),
            plans,
        }))
    }

    async fn list_keys(&self, request: Request<ListKeysRequest>) -> Reply<ListKeysResponse> {
        let req = request.into_inner();
        let page: Page<KeyId> = Page::parse(&req.page_token, req.page_size).map_err(bad)?;
        let (keys, more) = self
            .read(req.allow_stale, |s| {
                let mut matching = s.keys(page.after).filter(|k| {
                    k.spec.name.as_str().starts_with(&req.name_prefix)
                        && req.owner.as_ref().is_none_or(|o| {
                            k.spec.owner.as_ref().is_some_and(|ko| ko.as_str() == o)
                        })
                });
                let keys: Vec<_> = matching
                    .by_ref()
                    .take(page.size)
                    .map(|k| (k.id, ApiKey::from(k)))
                    .collect();
                (keys, matching.next().is_some())
            })
            .await?;
        let last = keys.last().map(|(id, _)| *id);
        Ok(Response::new(ListKeysResponse {
            keys: keys.into_iter().map(|(_, k)| k).collect(),
            next_page_token: convert::next_page_token(last, more),
        }))
    }

    async fn update_key(&self, request: Request<UpdateKeyRequest>) -> Reply<UpdateKeyResponse> {
        let req = request.into_inner();
        let patch = required("patch", req.patch).map_err(bad)?;
        let key = self.key("key", req.key).await?;
        match self
            .write(&req.request_id, Command::KeyUpdate { key, patch })
            .await?
        {
            Outcome::Key(k) => Ok(Response::new(UpdateKeyResponse {
                key: Some(ApiKey::from(&*k)),
            })),
            o => Err(unexpected(o)),
        }
    }

    async fn set_key_enabled(
        &self,
        request: Request<SetKeyEnabledRequest>,
    ) -> Reply<SetKeyEnabledResponse> {
        let req = request.into_inner();
        let key = self.key("key", req.key).await?;
        let command = Command::KeySetEnabled {
            key,
            enabled: req.enabled,
        };
        match self.write(&req.request_id, command).await? {
            Outcome::Key(k) => Ok(Response::new(SetKeyEnabledResponse {
                key: Some(ApiKey::from(&*k)),
            })),
            o => Err(unexpected(o)),
        }
    }

    async fn rotate_key(&self, request: Request<RotateKeyRequest>) -> Reply<RotateKeyResponse> {
        let req = request.into_inner();
        let key = self.key("key", req.key).await?;
        let secret = Self::generate_secret()?;
        let command = Command::KeyRotate {
            key,
            secret: SecretDigest::of(&secret),
            grace_ms: req.grace_period_ms,
        };
        let outcome = self.write(&req.request_id, command).await?;
        let (key, secret) = Self::key_with_secret(outcome, &secret)?;
        Ok(Response::new(RotateKeyResponse {
            key: Some(key),
            secret,
        }))
    }

    async fn delete_key(&self, request: Request<DeleteKeyRequest>) -> Reply<DeleteKeyResponse> {
        let req = request.into_inner();
        let key = self.key("key", req.key).await?;
        self.write(&req.request_id, Command::KeyDelete { key })
            .await?;
        Ok(Response::new(DeleteKeyResponse {}))
    }

    async fn create_plan(&self, request: Request<CreatePlanRequest>) -> Reply<CreatePlanResponse> {
        let req = request.into_inner();
        let spec = required("spec", req.spec).map_err(bad)?;
        match self
            .write(&req.request_id, Command::PlanCreate { spec })
            .await?
        {
            Outcome::Plan(p) => Ok(Response::new(CreatePlanResponse {
                plan: Some(UsagePlan::from(&*p)),
            })),
            o => Err(unexpected(o)),
        }
    }

    async fn get_plan(&self, request: Request<GetPlanRequest>) -> Reply<GetPlanResponse> {
        let req = request.into_inner();
        let id = self.plan("plan", req.plan).await?;
        let plan = self
            .read(req.allow_stale, |s| s.get_plan(id).map(UsagePlan::from))
            .await?
            .ok_or_else(|| Status::not_found(format!("plan {id} not found")))?;
        Ok(Response::new(GetPlanResponse { plan: Some(plan) }))
    }

    async fn list_plans(&self, request: Request<ListPlansRequest>) -> Reply<ListPlansResponse> {
        let req = request.into_inner();
        let page: Page<PlanId> = Page::parse(&req.page_token, req.page_size).map_err(bad)?;
        let (plans, more) = self
            .read(req.allow_stale, |s| {
                let mut matching = s
                    .plans(page.after)
                    .filter(|p| p.spec.name().as_str().starts_with(&req.name_prefix));
                let plans: Vec<_> = matching
                    .by_ref()
                    .take(page.size)
                    .map(|p| (p.id, UsagePlan::from(p)))
                    .collect();
                (plans, matching.next().is_some())
            })
            .await?;
        let last = plans.last().map(|(id, _)| *id);
        Ok(Response::new(ListPlansResponse {
            plans: plans.into_iter().map(|(_, p)| p).collect(),
            next_page_token: convert::next_page_token(last, more),
        }))
    }

    async fn update_plan(&self, request: Request<UpdatePlanRequest>) -> Reply<UpdatePlanResponse> {
        let req = request.into_inner();
        let spec = required("spec", req.spec).map_err(bad)?;
        let plan = self.plan("plan", req.plan).await?;
        match self
            .write(&req.request_id, Command::PlanUpdate { plan, spec })
            .await?
        {
            Outcome::Plan(p) => Ok(Response::new(UpdatePlanResponse {
                plan: Some(UsagePlan::from(&*p)),
            })),
            o => Err(unexpected(o)),
        }
    }

    async fn delete_plan(&self, request: Request<DeletePlanRequest>) -> Reply<DeletePlanResponse> {
        let req = request.into_inner();
        let plan = self.plan("plan", req.plan).await?;
        self.write(&req.request_id, Command::PlanDelete { plan })
            .await?;
        Ok(Response::new(DeletePlanResponse {}))
    }

    async fn attach(&self, request: Request<AttachRequest>) -> Reply<AttachResponse> {
        let req = request.into_inner();
        let extra_per_period =
            convert::usage::extra("extra_per_period", req.extra_per_period).map_err(bad)?;
        let plan = self.plan("plan", req.plan).await?;
        let key = self.key("key", req.key).await?;
        let command = Command::Attach {
            plan,
            key,
            extra_per_period,
        };
        match self.write(&req.request_id, command).await? {
            Outcome::Association(a) => Ok(Response::new(AttachResponse {
                association: Some(Association::from(&a)),
            })),
            o => Err(unexpected(o)),
        }
    }

    async fn detach(&self, request: Request<DetachRequest>) -> Reply<DetachResponse> {
        let req = request.into_inner();
        let plan = self.plan("plan", req.plan).await?;
        let key = self.key("key", req.key).await?;
        self.write(&req.request_id, Command::Detach { plan, key })
            .await?;
        Ok(Response::new(DetachResponse {}))
    }

    async fn list_plan_keys(
        &self,
        request: Request<ListPlanKeysRequest>,
    ) -> Reply<ListPlanKeysResponse> {
        let req = request.into_inner();
        let page: Page<KeyId> = Page::parse(&req.page_token, req.page_size).map_err(bad)?;
        let plan = self.plan("plan", req.plan).await?;
        let listing = self
            .read(req.allow_stale, |s| {
                s.get_plan(plan)?;
                let mut matching = s
                    .plan_associations(plan)
                    .filter(|a| page.after.is_none_or(|after| a.key > after));
                let keys: Vec<_> = matching
                    .by_ref()
                    .take(page.size)
                    .map(|a| {
                        (
                            a.key,
                            PlanKey {
                                association: Some(Association::from(a)),
                                key: s.get_key(a.key).map(ApiKey::from),
                            },
                        )
                    })
                    .collect();
                Some((keys, matching.next().is_some()))
            })
            .await?;
        let (keys, more) =
            listing.ok_or_else(|| Status::not_found(format!("plan {plan} not found")))?;
        let last = keys.last().map(|(id, _)| *id);
        Ok(Response::new(ListPlanKeysResponse {
            keys: keys.into_iter().map(|(_, k)| k).collect(),
            next_page_token: convert::next_page_token(last, more),
        }))
    }

    async fn get_usage(&self, request: Request<GetUsageRequest>) -> Reply<GetUsageResponse> {
        let query = convert::usage::UsageQuery::try_from(request.into_inner()).map_err(bad)?;
        let plan = self
            .plan("plan", Some(PlanSelector::from(query.plan.clone())))
            .await?;
        let key = match &query.key {
            Some(sel) => Some(
                self.key("key", Some(KeySelector::from(sel.clone())))
                    .await?,
            ),
            None => None,
        };
        let now = now_ms();
        let report = self
            .read(query.allow_stale, |s| {
                s.get_plan(plan)?;
                let keys: Vec<KeyId> = match key {
                    Some(k) => vec![k],
                    None => s
                        .plan_associations(plan)
                        .map(|a| a.key)
                        .filter(|k| query.page.after.is_none_or(|after| *k > after))
                        .take(query.page.size + 1)
                        .collect(),
                };
                let more = key.is_none() && keys.len() > query.page.size;
                let rows: Vec<(KeyId, KeyUsage)> = keys
                    .into_iter()
                    .take(query.page.size)
                    .filter_map(|k| {
                        let days = s.usage_report(plan, k, query.from, query.to)?;
                        Some((
                            k,
                            KeyUsage {
                                key_id: k.to_string(),
                                key_name: s
                                    .get_key(k)
                                    .map(|x| x.spec.name.to_string())
                                    .unwrap_or_default(),
                                days: days.into_iter().map(DayUsage::from).collect(),
                                current: s.usage(plan, k, now).map(Usage::from),
                            },
                        ))
                    })
                    .collect();
                Some((rows, more))
            })
            .await?;
        let (rows, more) =
            report.ok_or_else(|| Status::not_found(format!("plan {plan} not found")))?;
        if let (Some(k), true) = (key, rows.is_empty()) {
            return Err(Status::not_found(format!("key {k} is not in plan {plan}")));
        }
        let last = rows.last().map(|(id, _)| *id);
        Ok(Response::new(GetUsageResponse {
            plan_id: plan.to_string(),
            keys: rows.into_iter().map(|(_, r)| r).collect(),
            next_page_token: convert::next_page_token(last, more),
        }))
    }

    async fn grant_usage(&self, request: Request<GrantUsageRequest>) -> Reply<GrantUsageResponse> {
        let req = request.into_inner();
        let extra = convert::usage::grant(req.extra).map_err(bad)?;
        let plan = self.plan("plan", req.plan).await?;
        let key = self.key("key", req.key).await?;
        match self
            .write(&req.request_id, Command::UsageGrant { plan, key, extra })
            .await?
        {
            Outcome::Usage(u) => Ok(Response::new(GrantUsageResponse {
                usage: Some(Usage::from(u)),
            })),
            o => Err(unexpected(o)),
        }
    }

    async fn set_remaining(
        &self,
        request: Request<SetRemainingRequest>,
    ) -> Reply<SetRemainingResponse> {
        let req = request.into_inner();
        let remaining = convert::usage::remaining(req.remaining).map_err(bad)?;
        let plan = self.plan("plan", req.plan).await?;
        let key = self.key("key", req.key).await?;
        let command = Command::UsageSetRemaining {
            plan,
            key,
            remaining,
        };
        match self.write(&req.request_id, command).await? {
            Outcome::Usage(u) => Ok(Response::new(SetRemainingResponse {
                usage: Some(Usage::from(u)),
            })),
            o => Err(unexpected(o)),
        }
    }
}
