//! Running each command: build the request, call the cluster, print the answer.

use crate::cli::*;
use crate::client::{Client, new_request_id, parse_request_id};
use crate::error::CliError;
use crate::manifest;
use crate::output::*;
use crate::when::{now_ms, parse_duration_ms, parse_time_ms, today};
use quota_core::{Date, KeyId, PlanId};
use quota_proto::v1;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Read;

/// A key named on the command line: `k12` is an id, `name:k12` forces a name, anything
/// else is a name.
pub fn key_selector(s: &str) -> v1::KeySelector {
    use v1::key_selector::By;
    let by = match s.strip_prefix("name:") {
        Some(name) => By::Name(name.to_owned()),
        None if s.parse::<KeyId>().is_ok() => By::Id(s.to_owned()),
        None => By::Name(s.to_owned()),
    };
    v1::KeySelector { by: Some(by) }
}

/// A plan named on the command line: `p3` is an id, `name:p3` forces a name.
pub fn plan_selector(s: &str) -> v1::PlanSelector {
    use v1::plan_selector::By;
    let by = match s.strip_prefix("name:") {
        Some(name) => By::Name(name.to_owned()),
        None if s.parse::<PlanId>().is_ok() => By::Id(s.to_owned()),
        None => By::Name(s.to_owned()),
    };
    v1::PlanSelector { by: Some(by) }
}

/// Call an Admin method with a cloned request on every attempt.
macro_rules! admin {
    ($client:expr, $method:ident, $req:expr) => {{
        let req = $req;
        $client
            .call(|c| {
                let req = req.clone();
                async move { c.admin().$method(req).await }
            })
            .await
    }};
}

macro_rules! cluster {
    ($client:expr, $method:ident, $req:expr) => {{
        let req = $req;
        $client
            .call(|c| {
                let req = req.clone();
                async move { c.cluster().$method(req).await }
            })
            .await
    }};
}

pub async fn run(client: &Client, command: Command, json: bool) -> Result<(), CliError> {
    match command {
        Command::Cluster(c) => cluster(client, c, json).await,
        Command::Key(c) => key(client, c, json).await,
        Command::Plan(c) => plan(client, c, json).await,
        Command::Usage(u) => usage(client, u, json).await,
        Command::Incr(i) => incr(client, i, json).await,
        Command::Apply(a) => apply(client, a, json).await,
        // Handled in main, before a client exists.
        Command::Completions { .. } => Ok(()),
    }
}

// ----- cluster -----

#[derive(Serialize)]
struct MemberView {
    id: u64,
    raft_address: String,
    public_address: String,
    role: &'static str,
    leader: bool,
    last_applied_index: Option<u64>,
    matched_index: Option<u64>,
}

#[derive(Serialize)]
struct StatusView {
    node_id: u64,
    leader_id: Option<u64>,
    term: u64,
    last_log_index: u64,
    committed_index: u64,
    members: Vec<MemberView>,
}

fn print_status(s: &v1::ClusterStatus, json: bool) {
    let view = StatusView {
        node_id: s.node_id,
        leader_id: (s.leader_id != 0).then_some(s.leader_id),
        term: s.term,
        last_log_index: s.last_log_index,
        committed_index: s.committed_index,
        members: s
            .members
            .iter()
            .map(|m| MemberView {
                id: m.id,
                raft_address: m.raft_address.clone(),
                public_address: m.public_address.clone(),
                role: match v1::Role::try_from(m.role) {
                    Ok(v1::Role::Voter) => "voter",
                    Ok(v1::Role::Learner) => "learner",
                    _ => "unknown",
                },
                leader: m.leader,
                last_applied_index: m.last_applied_index,
                matched_index: m.matched_index,
            })
            .collect(),
    };
    if json {
        return print_json(&view);
    }
    let leader = view.leader_id.map_or_else(
        || "none (an election is under way)".into(),
        |l| format!("node {l}"),
    );
    println!(
        "leader: {leader}   term: {}   answered by: node {}   last log index: {}   committed: {}",
        view.term, view.node_id, view.last_log_index, view.committed_index
    );
    let mut t = Table::new(&["ID", "ROLE", "LEADER", "ADDRESS", "APPLIED", "MATCHED"]);
    for m in &view.members {
        t.row(vec![
            m.id.to_string(),
            m.role.into(),
            if m.leader { "*" } else { "" }.into(),
            m.public_address.clone(),
            opt_num(m.last_applied_index),
            opt_num(m.matched_index),
        ]);
    }
    t.print();
}

async fn cluster(client: &Client, cmd: ClusterCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        ClusterCmd::Status => {
            let resp = cluster!(client, status, v1::StatusRequest {})?;
            print_status(&resp.status.unwrap_or_default(), json);
        }
        ClusterCmd::AddNode {
            id,
            address,
            public_address,
            learner_only,
        } => {
            let req = v1::AddNodeRequest {
                request_id: new_request_id()?,
                id,
                public_address: public_address.unwrap_or_else(|| address.clone()),
                raft_address: address,
                learner_only,
            };
            let resp = cluster!(client, add_node, req)?;
            if !json {
                println!(
                    "Node {id} added{}.",
                    if learner_only { " as a learner" } else { "" }
                );
            }
            print_status(&resp.status.unwrap_or_default(), json);
        }
        ClusterCmd::RemoveNode { id } => {
            let req = v1::RemoveNodeRequest {
                request_id: new_request_id()?,
                id,
            };
            let resp = cluster!(client, remove_node, req)?;
            if !json {
                println!("Node {id} removed.");
            }
            print_status(&resp.status.unwrap_or_default(), json);
        }
    }
    Ok(())
}

// ----- keys -----

fn parse_tags(tags: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    let mut out = BTreeMap::new();
    for t in tags {
        let (k, v) = t
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("--tag `{t}` is not NAME=VALUE")))?;
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

fn parse_expiry(s: &str) -> Result<u64, CliError> {
    parse_time_ms(s, Some(now_ms())).map_err(|e| CliError::usage(format!("--expires: {e}")))
}

fn key_spec(args: &KeySpecArgs) -> Result<v1::KeySpec, CliError> {
    Ok(v1::KeySpec {
        name: args.name.clone(),
        description: args.description.clone(),
        owner: args.owner.clone(),
        enabled: Some(!args.disabled),
        expires_at: args
            .expires
            .as_deref()
            .map(parse_expiry)
            .transpose()?
            .unwrap_or(0),
        tags: parse_tags(&args.tags)?,
    })
}

#[derive(Serialize)]
struct KeyWithSecret {
    #[serde(flatten)]
    key: KeyView,
    secret: String,
}

#[derive(Serialize)]
struct KeyWithPlans {
    #[serde(flatten)]
    key: KeyView,
    plans: Vec<AssociationView>,
}

fn print_key(k: &v1::ApiKey, json: bool) {
    if json {
        print_json(&KeyView::from(k));
    } else {
        print_fields(&key_fields(k));
    }
}

fn print_secret(what: &str, k: &v1::ApiKey, secret: String, json: bool) {
    if json {
        print_json(&KeyWithSecret {
            key: KeyView::from(k),
            secret,
        });
        return;
    }
    println!("{what} key {} ({}).", k.name, k.id);
    println!(
        "Secret (shown this once: the cluster keeps only its hash, so it cannot be shown again):"
    );
    println!("  {secret}");
}

fn read_secret(path: &std::path::Path) -> Result<String, CliError> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| CliError::Io {
                what: "cannot read the secret from standard input".into(),
                source,
            })?;
    } else {
        text = std::fs::read_to_string(path).map_err(|source| CliError::Io {
            what: format!("cannot read the secret from {}", path.display()),
            source,
        })?;
    }
    Ok(text.trim().to_owned())
}

async fn key(client: &Client, cmd: KeyCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        KeyCmd::Create(args) => {
            let req = v1::CreateKeyRequest {
                request_id: new_request_id()?,
                spec: Some(key_spec(&args)?),
            };
            let resp = admin!(client, create_key, req)?;
            print_secret("Created", &resp.key.unwrap_or_default(), resp.secret, json);
        }
        KeyCmd::Import { spec, value_file } => {
            let value = read_secret(&value_file)?;
            let req = v1::ImportKeyRequest {
                request_id: new_request_id()?,
                spec: Some(key_spec(&spec)?),
                value,
            };
            let resp = admin!(client, import_key, req)?;
            let k = resp.key.unwrap_or_default();
            if !json {
                println!("Imported key {} ({}).", k.name, k.id);
            }
            print_key(&k, json);
        }
        KeyCmd::List { name_prefix, owner } => {
            let mut keys = Vec::new();
            let mut token = String::new();
            loop {
                let req = v1::ListKeysRequest {
                    page_token: token.clone(),
                    page_size: 1000,
                    name_prefix: name_prefix.clone().unwrap_or_default(),
                    owner: owner.clone(),
                    allow_stale: false,
                };
                let page = admin!(client, list_keys, req)?;
                keys.extend(page.keys);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            if json {
                print_json(&keys.iter().map(KeyView::from).collect::<Vec<_>>());
            } else if keys.is_empty() {
                println!("No keys. Create one with `quotactl key create NAME`.");
            } else {
                keys_table(&keys).print();
            }
        }
        KeyCmd::Get { key } => {
            let req = v1::GetKeyRequest {
                key: Some(key_selector(&key)),
                allow_stale: false,
            };
            let resp = admin!(client, get_key, req)?;
            let k = resp.key.unwrap_or_default();
            if json {
                print_json(&KeyWithPlans {
                    key: KeyView::from(&k),
                    plans: resp.plans.iter().map(AssociationView::from).collect(),
                });
            } else {
                print_fields(&key_fields(&k));
                let plans = if resp.plans.is_empty() {
                    "-".to_owned()
                } else {
                    resp.plans
                        .iter()
                        .map(|a| {
                            if a.extra_per_period > 0 {
                                format!("{} (+{} per period)", a.plan_id, a.extra_per_period)
                            } else {
                                a.plan_id.clone()
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                print_fields(&[("plans", plans)]);
            }
        }
        KeyCmd::Update {
            key,
            name,
            description,
            owner,
            clear_owner,
            expires,
            no_expiry,
            tags,
            clear_tags,
        } => {
            let patch = v1::KeyPatch {
                name,
                description,
                owner: if clear_owner {
                    Some(String::new())
                } else {
                    owner
                },
                enabled: None,
                expires_at: if no_expiry {
                    Some(0)
                } else {
                    expires.as_deref().map(parse_expiry).transpose()?
                },
                tags: if clear_tags {
                    Some(v1::TagSet::default())
                } else if tags.is_empty() {
                    None
                } else {
                    Some(v1::TagSet {
                        tags: parse_tags(&tags)?,
                    })
                },
            };
            if patch == v1::KeyPatch::default() {
                return Err(CliError::usage(
                    "nothing to change: give at least one of --name, --description, --owner, \
                     --clear-owner, --expires, --no-expiry, --tag, --clear-tags",
                ));
            }
            let req = v1::UpdateKeyRequest {
                request_id: new_request_id()?,
                key: Some(key_selector(&key)),
                patch: Some(patch),
            };
            let resp = admin!(client, update_key, req)?;
            print_key(&resp.key.unwrap_or_default(), json);
        }
        KeyCmd::Enable { key } => set_enabled(client, &key, true, json).await?,
        KeyCmd::Disable { key } => set_enabled(client, &key, false, json).await?,
        KeyCmd::Rotate { key, grace } => {
            let grace_period_ms =
                parse_duration_ms(&grace).map_err(|e| CliError::usage(format!("--grace: {e}")))?;
            let req = v1::RotateKeyRequest {
                request_id: new_request_id()?,
                key: Some(key_selector(&key)),
                grace_period_ms,
            };
            let resp = admin!(client, rotate_key, req)?;
            let k = resp.key.unwrap_or_default();
            print_secret("Rotated", &k, resp.secret, json);
            if !json {
                match time(k.previous_valid_until) {
                    Some(until) => println!("The previous secret keeps working until {until}."),
                    None => println!("The previous secret no longer works."),
                }
            }
        }
        KeyCmd::Delete { key } => {
            let req = v1::DeleteKeyRequest {
                request_id: new_request_id()?,
                key: Some(key_selector(&key)),
            };
            admin!(client, delete_key, req)?;
            if json {
                print_json(&serde_json::json!({ "deleted": key }));
            } else {
                println!("Deleted key {key}.");
            }
        }
    }
    Ok(())
}

async fn set_enabled(
    client: &Client,
    key: &str,
    enabled: bool,
    json: bool,
) -> Result<(), CliError> {
    let req = v1::SetKeyEnabledRequest {
        request_id: new_request_id()?,
        key: Some(key_selector(key)),
        enabled,
    };
    let resp = admin!(client, set_key_enabled, req)?;
    let k = resp.key.unwrap_or_default();
    if json {
        print_json(&KeyView::from(&k));
    } else {
        println!(
            "Key {} ({}) is {}.",
            k.name,
            k.id,
            if k.enabled { "enabled" } else { "disabled" }
        );
    }
    Ok(())
}

// ----- plans -----

fn parse_stage(s: &str) -> Result<v1::ApiStage, CliError> {
    let (api, stage) = s.split_once('/').ok_or_else(|| {
        CliError::usage(format!("--stage `{s}` is not API/STAGE, e.g. shop/prod"))
    })?;
    Ok(v1::ApiStage {
        api: api.to_owned(),
        stage: stage.to_owned(),
    })
}

fn parse_route_throttle(s: &str) -> Result<(String, v1::Throttle), CliError> {
    let bad = || {
        CliError::usage(format!(
            "--route-throttle `{s}` is not ROUTE=RATE:BURST, e.g. \"GET /users/{{id}}=10:20\""
        ))
    };
    let (route, rest) = s.rsplit_once('=').ok_or_else(bad)?;
    let (rate, burst) = rest.split_once(':').ok_or_else(bad)?;
    Ok((
        route.trim().to_owned(),
        v1::Throttle {
            rate_limit: rate.trim().parse().map_err(|_| bad())?,
            burst_limit: burst.trim().parse().map_err(|_| bad())?,
        },
    ))
}

fn period(p: PeriodArg) -> v1::Period {
    match p {
        PeriodArg::Day => v1::Period::Day,
        PeriodArg::Week => v1::Period::Week,
        PeriodArg::Month => v1::Period::Month,
    }
}

fn weekday(d: WeekdayArg) -> v1::Weekday {
    match d {
        WeekdayArg::Monday => v1::Weekday::Monday,
        WeekdayArg::Tuesday => v1::Weekday::Tuesday,
        WeekdayArg::Wednesday => v1::Weekday::Wednesday,
        WeekdayArg::Thursday => v1::Weekday::Thursday,
        WeekdayArg::Friday => v1::Weekday::Friday,
        WeekdayArg::Saturday => v1::Weekday::Saturday,
        WeekdayArg::Sunday => v1::Weekday::Sunday,
    }
}

/// Apply the flags to `spec`: given parts replace, absent parts are kept.
fn apply_plan_flags(spec: &mut v1::PlanSpec, args: &PlanSpecArgs) -> Result<(), CliError> {
    if let Some(d) = &args.description {
        spec.description = d.clone();
    }
    if let Some(rate) = args.safe_rate {
        spec.safe_rate = rate;
    }
    if let (Some(rate), Some(burst)) = (args.rate, args.burst) {
        spec.throttle = Some(v1::Throttle {
            rate_limit: rate,
            burst_limit: burst,
        });
    }
    let touches_quota = args.limit.is_some()
        || args.period.is_some()
        || args.offset.is_some()
        || args.week_start.is_some()
        || args.month_start_day.is_some();
    if touches_quota {
        let mut quota = match spec.quota.take() {
            Some(q) => q,
            None => {
                let (Some(_), Some(_)) = (args.limit, args.period) else {
                    return Err(CliError::usage(
                        "a quota needs both --limit and --period (day, week or month)",
                    ));
                };
                v1::Quota::default()
            }
        };
        if let Some(l) = args.limit {
            quota.limit = l;
        }
        if let Some(p) = args.period {
            quota.period = period(p).into();
        }
        if let Some(o) = args.offset {
            quota.offset = o;
        }
        if let Some(w) = args.week_start {
            quota.week_start = weekday(w).into();
        }
        if let Some(d) = args.month_start_day {
            quota.month_start_day = d;
        }
        spec.quota = Some(quota);
    }
    for s in &args.stages {
        let stage = parse_stage(s)?;
        if !spec.stages.contains(&stage) {
            spec.stages.push(stage);
        }
    }
    for r in &args.route_throttles {
        let (route, throttle) = parse_route_throttle(r)?;
        spec.route_throttles.insert(route, throttle);
    }
    Ok(())
}

#[derive(Serialize)]
struct PlanKeyView {
    key_id: String,
    key_name: String,
    extra_per_period: u64,
    attached_at: Option<String>,
}

#[derive(Serialize)]
struct PlanWithKeys {
    #[serde(flatten)]
    plan: PlanView,
    keys: Vec<PlanKeyView>,
}

fn print_plan(p: &v1::UsagePlan, json: bool) {
    if json {
        print_json(&PlanView::from(p));
    } else {
        print_fields(&plan_fields(p));
    }
}

async fn get_plan(client: &Client, plan: &str) -> Result<v1::UsagePlan, CliError> {
    let req = v1::GetPlanRequest {
        plan: Some(plan_selector(plan)),
        allow_stale: false,
    };
    Ok(admin!(client, get_plan, req)?.plan.unwrap_or_default())
}

async fn plan(client: &Client, cmd: PlanCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        PlanCmd::Create { name, spec } => {
            let mut plan = v1::PlanSpec {
                name,
                ..Default::default()
            };
            apply_plan_flags(&mut plan, &spec)?;
            let req = v1::CreatePlanRequest {
                request_id: new_request_id()?,
                spec: Some(plan),
            };
            let p = admin!(client, create_plan, req)?.plan.unwrap_or_default();
            if !json {
                println!("Created plan {}.", p.id);
            }
            print_plan(&p, json);
        }
        PlanCmd::List { name_prefix } => {
            let plans = manifest::apply::list_all_plans(client).await?;
            let prefix = name_prefix.unwrap_or_default();
            let plans: Vec<_> = plans
                .into_iter()
                .filter(|p| p.spec.as_ref().is_some_and(|s| s.name.starts_with(&prefix)))
                .collect();
            if json {
                print_json(&plans.iter().map(PlanView::from).collect::<Vec<_>>());
            } else if plans.is_empty() {
                println!(
                    "No plans. Create one with `quotactl plan create NAME --limit N --period day`."
                );
            } else {
                plans_table(&plans).print();
            }
        }
        PlanCmd::Get { plan } => {
            let p = get_plan(client, &plan).await?;
            let mut keys = Vec::new();
            let mut token = String::new();
            loop {
                let req = v1::ListPlanKeysRequest {
                    plan: Some(plan_selector(&p.id)),
                    page_token: token.clone(),
                    page_size: 1000,
                    allow_stale: false,
                };
                let page = admin!(client, list_plan_keys, req)?;
                keys.extend(page.keys);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            let views: Vec<PlanKeyView> = keys
                .iter()
                .map(|k| {
                    let a = k.association.clone().unwrap_or_default();
                    PlanKeyView {
                        key_id: a.key_id.clone(),
                        key_name: k.key.as_ref().map(|k| k.name.clone()).unwrap_or_default(),
                        extra_per_period: a.extra_per_period,
                        attached_at: time(a.attached_at),
                    }
                })
                .collect();
            if json {
                print_json(&PlanWithKeys {
                    plan: PlanView::from(&p),
                    keys: views,
                });
            } else {
                print_fields(&plan_fields(&p));
                println!();
                if views.is_empty() {
                    println!(
                        "No keys attached. Attach one with `quotactl plan attach {} KEY`.",
                        p.id
                    );
                } else {
                    let mut t = Table::new(&["KEY", "NAME", "EXTRA/PERIOD", "ATTACHED"]);
                    for v in views {
                        t.row(vec![
                            v.key_id,
                            v.key_name,
                            v.extra_per_period.to_string(),
                            v.attached_at.unwrap_or_else(|| "-".into()),
                        ]);
                    }
                    t.print();
                }
            }
        }
        PlanCmd::Update {
            plan,
            name,
            spec,
            no_throttle,
            no_quota,
            remove_stages,
            remove_route_throttles,
        } => {
            let current = get_plan(client, &plan).await?;
            let mut new = current.spec.clone().unwrap_or_default();
            if let Some(n) = name {
                new.name = n;
            }
            if no_throttle {
                new.throttle = None;
            }
            if no_quota {
                new.quota = None;
            }
            for s in &remove_stages {
                let stage = parse_stage(s)?;
                let before = new.stages.len();
                new.stages.retain(|x| *x != stage);
                if new.stages.len() == before {
                    return Err(CliError::usage(format!(
                        "--remove-stage {s}: the plan does not cover that stage"
                    )));
                }
            }
            for r in &remove_route_throttles {
                if new.route_throttles.remove(r.trim()).is_none() {
                    return Err(CliError::usage(format!(
                        "--remove-route-throttle {r}: the plan has no throttle for that route"
                    )));
                }
            }
            apply_plan_flags(&mut new, &spec)?;
            if Some(&new) == current.spec.as_ref() {
                if !json {
                    println!(
                        "Nothing to change: plan {} already looks like that.",
                        current.id
                    );
                }
                print_plan(&current, json);
                return Ok(());
            }
            let req = v1::UpdatePlanRequest {
                request_id: new_request_id()?,
                plan: Some(plan_selector(&current.id)),
                spec: Some(new),
            };
            let p = admin!(client, update_plan, req)?.plan.unwrap_or_default();
            print_plan(&p, json);
        }
        PlanCmd::Delete { plan } => {
            let req = v1::DeletePlanRequest {
                request_id: new_request_id()?,
                plan: Some(plan_selector(&plan)),
            };
            admin!(client, delete_plan, req)?;
            if json {
                print_json(&serde_json::json!({ "deleted": plan }));
            } else {
                println!("Deleted plan {plan}.");
            }
        }
        PlanCmd::Attach { plan, key, extra } => {
            let req = v1::AttachRequest {
                request_id: new_request_id()?,
                plan: Some(plan_selector(&plan)),
                key: Some(key_selector(&key)),
                extra_per_period: extra,
            };
            let a = admin!(client, attach, req)?.association.unwrap_or_default();
            if json {
                print_json(&AssociationView::from(&a));
            } else {
                println!(
                    "Key {} is attached to plan {}{}.",
                    a.key_id,
                    a.plan_id,
                    if a.extra_per_period > 0 {
                        format!(" with {} extra per period", a.extra_per_period)
                    } else {
                        String::new()
                    }
                );
            }
        }
        PlanCmd::Detach { plan, key } => {
            let req = v1::DetachRequest {
                request_id: new_request_id()?,
                plan: Some(plan_selector(&plan)),
                key: Some(key_selector(&key)),
            };
            admin!(client, detach, req)?;
            if json {
                print_json(&serde_json::json!({ "detached": { "plan": plan, "key": key } }));
            } else {
                println!("Key {key} is detached from plan {plan}.");
            }
        }
    }
    Ok(())
}

// ----- usage -----

#[derive(Serialize)]
struct DayView {
    date: String,
    used: u64,
    remaining: Option<u64>,
}

#[derive(Serialize)]
struct KeyUsageView {
    key_id: String,
    key_name: String,
    days: Vec<DayView>,
    current: Option<UsageView>,
}

#[derive(Serialize)]
struct UsageReportView {
    plan_id: String,
    start_date: String,
    end_date: String,
    keys: Vec<KeyUsageView>,
}

fn parse_date(flag: &str, s: &str) -> Result<Date, CliError> {
    s.parse::<Date>()
        .map_err(|e| CliError::usage(format!("{flag}: {e}")))
}

async fn usage_report(client: &Client, args: UsageReportArgs, json: bool) -> Result<(), CliError> {
    let Some(plan) = args.plan else {
        return Err(CliError::usage("name the plan: quotactl usage PLAN"));
    };
    let to = match &args.to {
        Some(s) => parse_date("--to", s)?,
        None => today(),
    };
    let from = match &args.from {
        Some(s) => parse_date("--from", s)?,
        None => Date::from_day_number(to.day_number() - 6),
    };
    let mut report = UsageReportView {
        plan_id: String::new(),
        start_date: from.to_string(),
        end_date: to.to_string(),
        keys: Vec::new(),
    };
    let mut token = String::new();
    loop {
        let req = v1::GetUsageRequest {
            plan: Some(plan_selector(&plan)),
            key: args.key.as_deref().map(key_selector),
            start_date: from.to_string(),
            end_date: to.to_string(),
            page_token: token.clone(),
            page_size: 1000,
            allow_stale: false,
        };
        let page = admin!(client, get_usage, req)?;
        report.plan_id = page.plan_id;
        for k in page.keys {
            report.keys.push(KeyUsageView {
                key_id: k.key_id,
                key_name: k.key_name,
                days: k
                    .days
                    .into_iter()
                    .map(|d| DayView {
                        date: d.date,
                        used: d.used,
                        remaining: d.remaining,
                    })
                    .collect(),
                current: k.current.as_ref().map(UsageView::from),
            });
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    if json {
        print_json(&report);
        return Ok(());
    }
    println!(
        "Usage of plan {} from {} to {} (UTC days; remaining = quota left at the end of the day)",
        report.plan_id, report.start_date, report.end_date
    );
    if report.keys.is_empty() {
        println!("No keys are attached to this plan.");
        return Ok(());
    }
    let mut t = Table::new(&["KEY", "NAME", "DATE", "USED", "REMAINING"]);
    for k in &report.keys {
        for d in &k.days {
            t.row(vec![
                k.key_id.clone(),
                k.key_name.clone(),
                d.date.clone(),
                d.used.to_string(),
                opt_num(d.remaining),
            ]);
        }
    }
    t.print();
    println!();
    let mut t = Table::new(&["KEY", "LIMIT", "USED", "RESERVED", "REMAINING", "RESETS"]);
    for k in &report.keys {
        if let Some(c) = &k.current {
            t.row(vec![
                k.key_id.clone(),
                opt_num(c.limit),
                c.used.to_string(),
                c.reserved.to_string(),
                opt_num(c.remaining),
                c.reset_at.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    println!("Current period:");
    t.print();
    Ok(())
}

fn print_usage(u: &v1::Usage, json: bool) {
    if json {
        print_json(&UsageView::from(u));
    } else {
        print_fields(&usage_fields(u));
    }
}

async fn usage(client: &Client, args: UsageArgs, json: bool) -> Result<(), CliError> {
    match args.action {
        None => usage_report(client, args.report, json).await,
        Some(UsageCmd::Report(r)) => usage_report(client, r, json).await,
        Some(UsageCmd::Grant { plan, key, amount }) => {
            let req = v1::GrantUsageRequest {
                request_id: new_request_id()?,
                plan: Some(plan_selector(&plan)),
                key: Some(key_selector(&key)),
                extra: amount,
            };
            let u = admin!(client, grant_usage, req)?.usage.unwrap_or_default();
            if !json {
                println!("Granted {amount} extra for the current period.");
            }
            print_usage(&u, json);
            Ok(())
        }
        Some(UsageCmd::SetRemaining {
            plan,
            key,
            remaining,
        }) => {
            let req = v1::SetRemainingRequest {
                request_id: new_request_id()?,
                plan: Some(plan_selector(&plan)),
                key: Some(key_selector(&key)),
                remaining,
            };
            let u = admin!(client, set_remaining, req)?
                .usage
                .unwrap_or_default();
            print_usage(&u, json);
            Ok(())
        }
    }
}

// ----- incr -----

#[derive(Serialize)]
struct IncrView {
    allowed: bool,
    reason: Option<&'static str>,
    key_id: String,
    used: u64,
    remaining: Option<u64>,
    limit: Option<u64>,
    reset_at: Option<String>,
    denied_plan_id: Option<String>,
    retry_after_ms: Option<u64>,
    usage: Vec<UsageView>,
}

async fn incr(client: &Client, args: IncrArgs, json: bool) -> Result<(), CliError> {
    use v1::increment_request::{Key, Target};
    let key = if args.secret_stdin {
        let mut secret = String::new();
        std::io::stdin()
            .read_to_string(&mut secret)
            .map_err(|source| CliError::Io {
                what: "cannot read the secret from standard input".into(),
                source,
            })?;
        Key::Secret(secret.trim().to_owned())
    } else {
        let name = args
            .key
            .ok_or_else(|| CliError::usage("name the key, or pass --secret-stdin"))?;
        let sel = key_selector(&name);
        match sel.by {
            Some(v1::key_selector::By::Id(id)) => Key::KeyId(id),
            _ => {
                // The Data service takes an id or a secret: look the name up first.
                let req = v1::GetKeyRequest {
                    key: Some(sel),
                    allow_stale: false,
                };
                let k = admin!(client, get_key, req)?.key.unwrap_or_default();
                Key::KeyId(k.id)
            }
        }
    };
    let target = match (args.plan, args.api, args.stage) {
        (Some(plan), _, _) => Target::Plan(plan_selector(&plan)),
        (None, Some(api), Some(stage)) => Target::Route(v1::RouteTarget {
            api,
            stage,
            route: args.route.unwrap_or_default(),
        }),
        _ => return Err(CliError::usage("give --plan, or --api and --stage")),
    };
    let request_id = match &args.request_id {
        Some(hex) => {
            parse_request_id(hex).map_err(|e| CliError::usage(format!("--request-id: {e}")))?
        }
        None => new_request_id()?,
    };
    let req = v1::IncrementRequest {
        key: Some(key),
        target: Some(target),
        cost: args.cost,
        request_id,
    };
    let resp = client
        .call(|c| {
            let req = req.clone();
            async move { c.data().increment(req).await }
        })
        .await?;
    let view = IncrView {
        allowed: resp.allowed,
        reason: reason_name(resp.reason),
        key_id: resp.key_id.clone(),
        used: resp.used,
        remaining: resp.remaining,
        limit: resp.limit,
        reset_at: time(resp.reset_at),
        denied_plan_id: (!resp.denied_plan_id.is_empty()).then(|| resp.denied_plan_id.clone()),
        retry_after_ms: (resp.retry_after_ms > 0).then_some(resp.retry_after_ms),
        usage: resp.usage.iter().map(UsageView::from).collect(),
    };
    if json {
        print_json(&view);
    } else {
        let verdict = match view.reason {
            None => "allowed".to_owned(),
            Some(r) => format!("denied: {r}"),
        };
        print_fields(&[
            ("result", verdict),
            ("key", or_dash_owned(&view.key_id)),
            ("used", view.used.to_string()),
            ("remaining", opt_num(view.remaining)),
            ("limit", opt_num(view.limit)),
            (
                "resets",
                view.reset_at.clone().unwrap_or_else(|| "-".into()),
            ),
        ]);
        if let Some(plan) = &view.denied_plan_id {
            print_fields(&[("refused by plan", plan.clone())]);
        }
        if let Some(ms) = view.retry_after_ms {
            print_fields(&[("retry after", format!("{ms} ms"))]);
        }
    }
    if view.allowed {
        Ok(())
    } else {
        Err(CliError::Denied {
            reason: view.reason.unwrap_or("UNKNOWN").to_owned(),
        })
    }
}

fn or_dash_owned(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_owned()
    }
}

// ----- apply -----

async fn apply(client: &Client, args: ApplyArgs, json: bool) -> Result<(), CliError> {
    let desired = manifest::load(&args.file, args.format, args.stage.as_deref())?;
    let file = args.file.display().to_string();
    let heading = format!(
        "{} ({} format{}): {} plan(s), {} key(s).{}",
        file,
        desired.format,
        match (&args.stage, desired.format) {
            (Some(s), _) => format!(", stage {s}"),
            _ => String::new(),
        },
        desired.plans.len(),
        desired.keys.len(),
        if args.dry_run {
            " Dry run: nothing will be changed."
        } else {
            ""
        }
    );
    manifest::apply::apply(
        client,
        &desired,
        manifest::apply::ApplyOptions {
            file: &file,
            dry_run: args.dry_run,
            prune: args.prune,
            json,
            heading,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    // Property: ids are recognised, names pass through, name: forces a name.
    // Set-up: k12, alice, name:k12, p3, gold. Pass: the selector kinds below.
    #[test]
    fn selectors() {
        use v1::key_selector::By as K;
        use v1::plan_selector::By as P;
        assert_eq!(key_selector("k12").by, Some(K::Id("k12".into())));
        assert_eq!(key_selector("alice").by, Some(K::Name("alice".into())));
        assert_eq!(key_selector("name:k12").by, Some(K::Name("k12".into())));
        assert_eq!(plan_selector("p3").by, Some(P::Id("p3".into())));
        assert_eq!(plan_selector("gold").by, Some(P::Name("gold".into())));
    }

    // Property: route throttles and stages parse from their flag forms.
    // Set-up: "GET /users/{id}=10:20", "shop/prod", and bad forms.
    // Pass: the parsed values, and usage errors.
    #[test]
    fn flag_forms() {
        let (route, t) = parse_route_throttle("GET /users/{id}=10.5:20").unwrap();
        assert_eq!(
            (route.as_str(), t.rate_limit, t.burst_limit),
            ("GET /users/{id}", 10.5, 20)
        );
        assert!(parse_route_throttle("GET /x").is_err());
        assert_eq!(parse_stage("shop/prod").unwrap().stage, "prod");
        assert!(parse_stage("shop").is_err());
        assert_eq!(parse_tags(&["a=b".into()]).unwrap()["a"], "b");
        assert!(parse_tags(&["ab".into()]).is_err());
    }
}
