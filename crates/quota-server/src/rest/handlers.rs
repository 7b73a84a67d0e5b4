//! One function per operation of the `apigateway` API that quotad serves. Writes go
//! through [`QuotaNode::write`] (the Raft log); reads through a linearizable
//! [`QuotaNode::read`].

use super::json::{self, ApiKeyOut, UsagePlanOut};
use super::{Query, Reply, RestError, csv, patch};
use crate::node::{QuotaNode, now_ms};
use hyper::http::{Method, StatusCode};
use quota_core::limits::DAILY_BUCKET_RETENTION_DAYS;
use quota_core::{
    ApiKey, Command, Date, Extra, KeyId, KeyPatch, KeySpec, Name, Outcome, PlanId, Secret,
    SecretDigest, State,
};
use serde_json::{Value, json};
use std::str::FromStr;
use std::sync::Arc;

/// Page size when `limit` is absent, and the largest accepted (as the managed service).
const DEFAULT_PAGE: usize = 25;
const MAX_PAGE: usize = 500;

type Result<T> = std::result::Result<T, RestError>;

/// Route a request to its operation.
pub async fn dispatch(
    node: &Arc<QuotaNode>,
    method: &Method,
    path: &[&str],
    query: &Query,
    body: &[u8],
) -> Result<Reply> {
    let ctx = Ctx { node };
    match (method.as_str(), path) {
        ("POST", ["apikeys"]) if query.get("mode") == Some("import") => {
            ctx.import_api_keys(query, body).await
        }
        ("POST", ["apikeys"]) => ctx.create_api_key(body).await,
        ("GET", ["apikeys"]) => ctx.get_api_keys(query).await,
        ("GET", ["apikeys", id]) => ctx.get_api_key(id).await,
        ("PATCH", ["apikeys", id]) => ctx.update_api_key(id, body).await,
        ("DELETE", ["apikeys", id]) => ctx.delete_api_key(id).await,
        ("POST", ["usageplans"]) => ctx.create_usage_plan(body).await,
        ("GET", ["usageplans"]) => ctx.get_usage_plans(query).await,
        ("GET", ["usageplans", id]) => ctx.get_usage_plan(id).await,
        ("PATCH", ["usageplans", id]) => ctx.update_usage_plan(id, body).await,
        ("DELETE", ["usageplans", id]) => ctx.delete_usage_plan(id).await,
        ("POST", ["usageplans", id, "keys"]) => ctx.create_usage_plan_key(id, body).await,
        ("GET", ["usageplans", id, "keys"]) => ctx.get_usage_plan_keys(id, query).await,
        ("GET", ["usageplans", id, "keys", key]) => ctx.get_usage_plan_key(id, key).await,
        ("DELETE", ["usageplans", id, "keys", key]) => ctx.delete_usage_plan_key(id, key).await,
        ("GET", ["usageplans", id, "usage"]) => ctx.get_usage(id, query).await,
        ("PATCH", ["usageplans", id, "keys", key, "usage"]) => {
            ctx.update_usage(id, key, body).await
        }
        _ => Err(RestError::not_found(format!(
            "no operation {method} /{}",
            path.join("/")
        ))),
    }
}

fn ok(status: StatusCode, body: impl serde::Serialize) -> Result<Reply> {
    let body = serde_json::to_value(body)
        .map_err(|e| RestError::internal(format!("cannot encode the answer: {e}")))?;
    Ok(Reply {
        status,
        body: Some(body),
    })
}

fn accepted() -> Result<Reply> {
    Ok(Reply {
        status: StatusCode::ACCEPTED,
        body: None,
    })
}

/// A key id from the path or body; one that cannot be ours is simply not found.
fn key_id(id: &str) -> Result<KeyId> {
    KeyId::from_str(id).map_err(|_| no_key(id))
}

fn plan_id(id: &str) -> Result<PlanId> {
    PlanId::from_str(id).map_err(|_| no_plan(id))
}

fn no_key(id: impl std::fmt::Display) -> RestError {
    RestError::not_found(format!("Invalid API Key identifier specified: {id}"))
}

fn no_plan(id: impl std::fmt::Display) -> RestError {
    RestError::not_found(format!("Invalid Usage Plan ID specified: {id}"))
}

fn unexpected(o: Outcome) -> RestError {
    RestError::internal(format!("unexpected outcome {o:?}"))
}

/// `limit` and `position` of a list call. The position is the id of the last item of the
/// previous page (opaque to clients).
struct Page<Id> {
    after: Option<Id>,
    size: usize,
}

impl<Id: FromStr> Page<Id> {
    fn parse(query: &Query) -> Result<Page<Id>> {
        let size = match query.get("limit") {
            None => DEFAULT_PAGE,
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| {
                    RestError::bad_request(format!(
                        "limit: `{l}` is not a number from 1 to {MAX_PAGE}"
                    ))
                })?,
        };
        let after = match query.get("position") {
            None | Some("") => None,
            Some(p) => Some(
                Id::from_str(p)
                    .map_err(|_| RestError::bad_request(format!("Invalid position: `{p}`")))?,
            ),
        };
        Ok(Page { after, size })
    }
}

/// Take one page from `items` (already after the position): the page and the next position.
fn page_of<T, Id: ToString>(
    items: impl Iterator<Item = T>,
    size: usize,
    id: impl Fn(&T) -> Id,
) -> (Vec<T>, Option<String>) {
    let mut items = items.peekable();
    let mut out = Vec::new();
    while out.len() < size {
        match items.next() {
            Some(i) => out.push(i),
            None => break,
        }
    }
    let next = match (items.peek(), out.last()) {
        (Some(_), Some(last)) => Some(id(last).to_string()),
        _ => None,
    };
    (out, next)
}

/// A page of a list answer. The managed service's wire name for the list is `item` (the SDKs
/// show it as `items`).
fn list<T: serde::Serialize>(items: Vec<T>, position: Option<String>) -> Result<Reply> {
    #[derive(serde::Serialize)]
    struct Page<T> {
        item: Vec<T>,
        #[serde(skip_serializing_if = "Option::is_none")]
        position: Option<String>,
    }
    ok(
        StatusCode::OK,
        Page {
            item: items,
            position,
        },
    )
}

/// Daily `[used, remaining]` pairs, as the usage answers carry them.
fn usage_rows(days: &[quota_core::DayReport]) -> Value {
    days.iter().map(|d| json!([d.used, d.remaining])).collect()
}

/// A usage answer: `values` maps key ids to their daily rows.
fn usage_body(
    plan: PlanId,
    from: Date,
    to: Date,
    values: serde_json::Map<String, Value>,
    position: Option<String>,
) -> Result<Reply> {
    let mut body = json!({
        "usagePlanId": plan.to_string(),
        "startDate": from.to_string(),
        "endDate": to.to_string(),
        "values": values,
    });
    if let Some(p) = position {
        body["position"] = Value::String(p);
    }
    ok(StatusCode::OK, body)
}

struct Ctx<'a> {
    node: &'a Arc<QuotaNode>,
}

impl Ctx<'_> {
    async fn write(&self, command: Command) -> Result<Outcome> {
        Ok(self.node.write(None, command).await??)
    }

    async fn read<R>(&self, f: impl FnOnce(&State) -> R) -> Result<R> {
        Ok(self.node.read(false, f).await?)
    }

    async fn write_key(&self, command: Command) -> Result<ApiKey> {
        match self.write(command).await? {
            Outcome::Key(k) => Ok(*k),
            o => Err(unexpected(o)),
        }
    }

    // ---- API keys ----

    async fn create_api_key(&self, body: &[u8]) -> Result<Reply> {
        let input: json::CreateApiKeyIn = json::parse(body)?;
        if !input.stage_keys.is_empty() {
            return Err(RestError::bad_request(
                "stageKeys are not supported by quotad: attach the key to a usage plan that covers the stage",
            ));
        }
        let (secret, imported) = match &input.value {
            Some(v) => (Secret::import(v)?, true),
            None => (
                Secret::generate()
                    .map_err(|e| RestError::internal(format!("cannot generate a key: {e}")))?,
                false,
            ),
        };
        let digest = SecretDigest::of(&secret);
        // The managed service allows a key without a name; ours are unique, so such a key
        // is named after its hash.
        let name = match input.name {
            Some(n) if !n.is_empty() => n,
            _ => format!("key-{}", &digest.hash.to_hex()[..12]),
        };
        let spec = KeySpec {
            name: Name::new(name)?,
            description: json::description(input.description)?,
            owner: json::owner(input.customer_id)?,
            // The managed service creates keys disabled unless asked otherwise.
            enabled: input.enabled.unwrap_or(false),
            expires_at: None,
            tags: json::tags(input.tags)?,
        };
        let command = if imported {
            Command::KeyImport {
                spec,
                secret: digest,
            }
        } else {
            Command::KeyCreate {
                spec,
                secret: digest,
            }
        };
        let key = self.write_key(command).await?;
        ok(
            StatusCode::CREATED,
            ApiKeyOut::of(&key, Some(secret.expose().to_owned())),
        )
    }

    async fn get_api_key(&self, id: &str) -> Result<Reply> {
        self.key_reply(key_id(id)?).await
    }

    async fn key_reply(&self, id: KeyId) -> Result<Reply> {
        let key = self
            .read(|s| s.get_key(id).map(|k| ApiKeyOut::of(k, None)))
            .await?
            .ok_or_else(|| no_key(id))?;
        ok(StatusCode::OK, key)
    }

    async fn get_api_keys(&self, query: &Query) -> Result<Reply> {
        let page: Page<KeyId> = Page::parse(query)?;
        let name = query.get("name").unwrap_or("").to_owned();
        let customer = query.get("customerId").map(str::to_owned);
        let (items, next) = self
            .read(|s| {
                let matching = s.keys(page.after).filter(|k| {
                    k.spec.name.as_str().starts_with(&name)
                        && customer
                            .as_deref()
                            .is_none_or(|c| k.spec.owner.as_ref().is_some_and(|o| o.as_str() == c))
                });
                let (keys, next) = page_of(matching, page.size, |k| k.id);
                let items: Vec<ApiKeyOut> =
                    keys.into_iter().map(|k| ApiKeyOut::of(k, None)).collect();
                (items, next)
            })
            .await?;
        list(items, next)
    }

    async fn update_api_key(&self, id: &str, body: &[u8]) -> Result<Reply> {
        let id = key_id(id)?;
        let input: json::PatchIn = json::parse(body)?;
        let patch = patch::key_patch(input.patch_operations)?;
        if patch == KeyPatch::default() {
            return self.key_reply(id).await;
        }
        let key = self
            .write_key(Command::KeyUpdate { key: id, patch })
            .await?;
        ok(StatusCode::OK, ApiKeyOut::of(&key, None))
    }

    async fn delete_api_key(&self, id: &str) -> Result<Reply> {
        let key = key_id(id)?;
        self.write(Command::KeyDelete { key }).await?;
        accepted()
    }

    async fn import_api_keys(&self, query: &Query, body: &[u8]) -> Result<Reply> {
        match query.get("format") {
            Some("csv") => {}
            other => {
                return Err(RestError::bad_request(format!(
                    "format: `{}` is not supported; the only format is csv",
                    other.unwrap_or("")
                )));
            }
        }
        let fail_on_warnings = query.flag("failonwarnings")?;
        let text = std::str::from_utf8(body)
            .map_err(|_| RestError::bad_request("the import file is not UTF-8 text"))?;
        let file = csv::parse(text).map_err(RestError::bad_request)?;
        let mut warnings = file.warnings;
        // Check every row before changing anything: first on its own, then against the
        // state, all in one read.
        let mut rows = Vec::new();
        for row in file.rows {
            match CheckedRow::check(&row) {
                Ok(checked) => rows.push(checked),
                Err(w) => warnings.push(format!("line {}: {w}", row.line)),
            }
        }
        let now = now_ms();
        let (rows, refused) = self
            .read(move |s| {
                let mut ok = Vec::new();
                let mut refused = Vec::new();
                for mut row in rows {
                    if let Some(p) = row.plans.iter().find(|p| s.get_plan(**p).is_none()) {
                        refused.push(format!("line {}: no usage plan {p}", row.line));
                        continue;
                    }
                    row.existing = s
                        .key_by_hash(&SecretDigest::of(&row.secret).hash, now)
                        .map(|k| k.id);
                    if let Some(key) = row.existing {
                        row.plans.retain(|p| s.association(*p, key).is_none());
                    }
                    ok.push(row);
                }
                (ok, refused)
            })
            .await?;
        warnings.extend(refused);
        if fail_on_warnings && !warnings.is_empty() {
            return Err(RestError::bad_request(format!(
                "nothing was imported: {}",
                warnings.join("; ")
            )));
        }
        // The writes run concurrently so that the leader packs them into few log entries;
        // the answer lists the ids in the file's order.
        let mut ids: Vec<Option<String>> = vec![None; rows.len()];
        let mut pending = rows.into_iter().enumerate();
        let mut running = tokio::task::JoinSet::new();
        loop {
            while running.len() < IMPORT_CONCURRENCY {
                let Some((i, row)) = pending.next() else {
                    break;
                };
                let node = self.node.clone();
                running.spawn(async move { (i, row.line, import_row(&node, row).await) });
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            let (i, line, result) =
                done.map_err(|e| RestError::internal(format!("an import task failed: {e}")))?;
            match result {
                Ok(id) => ids[i] = Some(id.to_string()),
                Err(e) => warnings.push(format!("line {line}: {}", e.message)),
            }
        }
        let ids: Vec<String> = ids.into_iter().flatten().collect();
        ok(
            StatusCode::CREATED,
            json!({ "ids": ids, "warnings": warnings }),
        )
    }

    // ---- Usage plans ----

    async fn create_usage_plan(&self, body: &[u8]) -> Result<Reply> {
        let input: json::CreateUsagePlanIn = json::parse(body)?;
        let spec = input.into_spec()?;
        match self.write(Command::PlanCreate { spec }).await? {
            Outcome::Plan(p) => ok(StatusCode::CREATED, UsagePlanOut::of(&p)),
            o => Err(unexpected(o)),
        }
    }

    async fn get_usage_plan(&self, id: &str) -> Result<Reply> {
        self.plan_reply(plan_id(id)?).await
    }

    async fn plan_reply(&self, id: PlanId) -> Result<Reply> {
        let plan = self
            .read(|s| s.get_plan(id).map(UsagePlanOut::of))
            .await?
            .ok_or_else(|| no_plan(id))?;
        ok(StatusCode::OK, plan)
    }

    async fn get_usage_plans(&self, query: &Query) -> Result<Reply> {
        let page: Page<PlanId> = Page::parse(query)?;
        let key = query.get("keyId").map(key_id).transpose()?;
        let (items, next) = self
            .read(|s| {
                let matching = s
                    .plans(page.after)
                    .filter(|p| key.is_none_or(|k| s.association(p.id, k).is_some()));
                let (plans, next) = page_of(matching, page.size, |p| p.id);
                let items: Vec<UsagePlanOut> = plans.into_iter().map(UsagePlanOut::of).collect();
                (items, next)
            })
            .await?;
        list(items, next)
    }

    async fn update_usage_plan(&self, id: &str, body: &[u8]) -> Result<Reply> {
        let id = plan_id(id)?;
        let input: json::PatchIn = json::parse(body)?;
        let current = self
            .read(|s| s.get_plan(id).map(|p| p.spec.clone()))
            .await?
            .ok_or_else(|| no_plan(id))?;
        let spec = patch::plan_patch(&current, input.patch_operations)?;
        if spec == current {
            return self.plan_reply(id).await;
        }
        match self.write(Command::PlanUpdate { plan: id, spec }).await? {
            Outcome::Plan(p) => ok(StatusCode::OK, UsagePlanOut::of(&p)),
            o => Err(unexpected(o)),
        }
    }

    async fn delete_usage_plan(&self, id: &str) -> Result<Reply> {
        let plan = plan_id(id)?;
        self.write(Command::PlanDelete { plan }).await?;
        accepted()
    }

    // ---- Usage plan keys ----

    fn plan_key_json(key: &ApiKey) -> Value {
        json!({ "id": key.id.to_string(), "type": "API_KEY", "name": key.spec.name.as_str() })
    }

    async fn create_usage_plan_key(&self, id: &str, body: &[u8]) -> Result<Reply> {
        let plan = plan_id(id)?;
        let input: json::CreateUsagePlanKeyIn = json::parse(body)?;
        if input.key_type != "API_KEY" {
            return Err(RestError::bad_request(format!(
                "keyType: `{}` is not supported; the only key type is API_KEY",
                input.key_type
            )));
        }
        let key = key_id(&input.key_id)?;
        // Attach also changes an existing attachment; the managed service refuses it instead.
        let body = self
            .read(|s| {
                s.get_plan(plan).ok_or_else(|| no_plan(plan))?;
                let body = s
                    .get_key(key)
                    .map(Self::plan_key_json)
                    .ok_or_else(|| no_key(key))?;
                match s.association(plan, key) {
                    Some(_) => Err(RestError::conflict(format!(
                        "Usage Plan {plan} already has API Key {key}"
                    ))),
                    None => Ok(body),
                }
            })
            .await??;
        self.write(Command::Attach {
            plan,
            key,
            extra_per_period: Extra::default(),
        })
        .await?;
        ok(StatusCode::CREATED, body)
    }

    async fn get_usage_plan_key(&self, id: &str, key: &str) -> Result<Reply> {
        let plan = plan_id(id)?;
        let key = key_id(key)?;
        let body = self
            .read(|s| {
                s.get_plan(plan).ok_or_else(|| no_plan(plan))?;
                s.association(plan, key).ok_or_else(|| {
                    RestError::not_found(format!(
                        "Invalid Usage Plan Key specified: {key} is not in usage plan {plan}"
                    ))
                })?;
                s.get_key(key)
                    .map(Self::plan_key_json)
                    .ok_or_else(|| no_key(key))
            })
            .await??;
        ok(StatusCode::OK, body)
    }

    async fn get_usage_plan_keys(&self, id: &str, query: &Query) -> Result<Reply> {
        let plan = plan_id(id)?;
        let page: Page<KeyId> = Page::parse(query)?;
        let name = query.get("name").unwrap_or("").to_owned();
        let (items, next) = self
            .read(|s| {
                s.get_plan(plan).ok_or_else(|| no_plan(plan))?;
                let matching = s
                    .plan_associations(plan)
                    .filter(|a| page.after.is_none_or(|after| a.key > after))
                    .filter_map(|a| s.get_key(a.key))
                    .filter(|k| k.spec.name.as_str().starts_with(&name));
                let (keys, next) = page_of(matching, page.size, |k| k.id);
                Ok::<_, RestError>((
                    keys.into_iter()
                        .map(Self::plan_key_json)
                        .collect::<Vec<_>>(),
                    next,
                ))
            })
            .await??;
        list(items, next)
    }

    async fn delete_usage_plan_key(&self, id: &str, key: &str) -> Result<Reply> {
        let plan = plan_id(id)?;
        let key = key_id(key)?;
        self.write(Command::Detach { plan, key }).await?;
        accepted()
    }

    // ---- Usage ----

    async fn get_usage(&self, id: &str, query: &Query) -> Result<Reply> {
        let plan = plan_id(id)?;
        let date = |name: &str| -> Result<Date> {
            let v = query.get(name).ok_or_else(|| {
                RestError::bad_request(format!("{name} is required (YYYY-MM-DD)"))
            })?;
            Date::from_str(v).map_err(|_| {
                RestError::bad_request(format!("{name}: `{v}` is not a YYYY-MM-DD date"))
            })
        };
        let (from, to) = (date("startDate")?, date("endDate")?);
        if to < from {
            return Err(RestError::bad_request(
                "endDate must not be before startDate",
            ));
        }
        let days = to.day_number() - from.day_number() + 1;
        if days > DAILY_BUCKET_RETENTION_DAYS {
            return Err(RestError::bad_request(format!(
                "the date range covers {days} days; at most {DAILY_BUCKET_RETENTION_DAYS} are kept"
            )));
        }
        let only = query.get("keyId").map(key_id).transpose()?;
        let page: Page<KeyId> = Page::parse(query)?;
        let (values, next) = self
            .read(|s| {
                s.get_plan(plan).ok_or_else(|| no_plan(plan))?;
                let keys = s
                    .plan_associations(plan)
                    .map(|a| a.key)
                    .filter(|k| only.is_none_or(|o| o == *k))
                    .filter(|k| page.after.is_none_or(|after| *k > after));
                let (keys, next) = page_of(keys, page.size, |k| *k);
                let mut values = serde_json::Map::new();
                for k in keys {
                    if let Some(report) = s.usage_report(plan, k, from, to) {
                        values.insert(k.to_string(), usage_rows(&report));
                    }
                }
                Ok::<_, RestError>((values, next))
            })
            .await??;
        usage_body(plan, from, to, values, next)
    }

    async fn update_usage(&self, id: &str, key: &str, body: &[u8]) -> Result<Reply> {
        let plan = plan_id(id)?;
        let key = key_id(key)?;
        let input: json::PatchIn = json::parse(body)?;
        let remaining = patch::remaining(input.patch_operations)?;
        self.write(Command::UsageSetRemaining {
            plan,
            key,
            remaining,
        })
        .await?;
        let today = now_ms().date();
        let report = self
            .read(|s| s.usage_report(plan, key, today, today))
            .await?
            .ok_or_else(|| no_key(key))?;
        let mut values = serde_json::Map::new();
        values.insert(key.to_string(), usage_rows(&report));
        usage_body(plan, today, today, values, None)
    }
}

/// Import writes running at once.
const IMPORT_CONCURRENCY: usize = 128;

/// One import row, validated.
struct CheckedRow {
    line: usize,
    secret: Secret,
    name: Name,
    description: quota_core::Description,
    enabled: bool,
    /// Plans to attach the key to (those it is not attached to yet).
    plans: Vec<PlanId>,
    /// The key that already has this value: importing it again updates that key.
    existing: Option<KeyId>,
}

impl CheckedRow {
    /// Validate a row on its own; the error is a warning for its line.
    fn check(row: &csv::ImportRow) -> std::result::Result<CheckedRow, String> {
        let secret = Secret::import(&row.key).map_err(|e| e.to_string())?;
        let name = Name::new(row.name.clone()).map_err(|e| e.to_string())?;
        let description =
            quota_core::Description::new(row.description.clone()).map_err(|e| e.to_string())?;
        let enabled = match row.enabled.as_deref() {
            None => true,
            Some(e) if e.eq_ignore_ascii_case("true") => true,
            Some(e) if e.eq_ignore_ascii_case("false") => false,
            Some(e) => return Err(format!("Enabled: `{e}` is not true or false")),
        };
        let plans = row
            .usage_plan_ids
            .iter()
            .map(|p| PlanId::from_str(p).map_err(|_| format!("no usage plan {p}")))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(CheckedRow {
            line: row.line,
            secret,
            name,
            description,
            enabled,
            plans,
            existing: None,
        })
    }
}

/// Create or update one imported key (the same value imported again updates the key that
/// has it) and attach it to its plans.
async fn import_row(node: &QuotaNode, row: CheckedRow) -> Result<KeyId> {
    let command = match row.existing {
        Some(key) => Command::KeyUpdate {
            key,
            patch: KeyPatch {
                name: Some(row.name),
                description: Some(row.description),
                enabled: Some(row.enabled),
                ..KeyPatch::default()
            },
        },
        None => Command::KeyImport {
            spec: KeySpec {
                name: row.name,
                description: row.description,
                owner: None,
                enabled: row.enabled,
                expires_at: None,
                tags: Default::default(),
            },
            secret: SecretDigest::of(&row.secret),
        },
    };
    let key = match node.write(None, command).await?? {
        Outcome::Key(k) => k.id,
        o => return Err(unexpected(o)),
    };
    for plan in row.plans {
        node.write(
            None,
            Command::Attach {
                plan,
                key,
                extra_per_period: Extra::default(),
            },
        )
        .await??;
    }
    Ok(key)
}
