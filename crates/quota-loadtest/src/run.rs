//! The orchestration: cluster, plan and keys, gateways, the run with its faults, the
//! cross-check against the cluster's counters, the baseline, and the report.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use quota_blackbox::ops::{self, request_id, retry};
use quota_blackbox::{Cluster, ClusterOpts, NodeClient};
use quota_client::{Client, ClientConfig, MetricsSnapshot};
use quota_proto::v1;
use serde_json::{Value, json};

use crate::faults::{self, FaultKind, FaultSpec};
use crate::load::{self, Backend, Demand, Load, Shape, Shared, TICK, Tally};
use crate::redis;
use crate::stats::{self, KeyBooks};
use crate::svg;

/// Deadline of one admin write (retried across nodes), and of a usage page.
const ADMIN_DEADLINE: Duration = Duration::from_secs(20);
/// Keys created at once during set-up.
const SETUP_PARALLELISM: usize = 16;
/// How often the fault driver wakes.
const DRIVER_TICK: Duration = Duration::from_millis(20);
/// A fault's effect is measured until this long after it was undone.
const FAULT_TAIL: Duration = Duration::from_secs(2);
/// Keys per GetUsage page (the most the server allows).
const USAGE_PAGE: u32 = 1000;

/// Load and quota-accuracy harness of quotad, with a Redis fixed-window baseline.
#[derive(Parser, Debug, Clone)]
#[command(name = "quota-loadtest", version)]
pub struct Args {
    /// Simulated gateways (quota-client instances in this process).
    #[arg(long, default_value_t = 4)]
    pub gateways: usize,
    /// Concurrent request streams per gateway.
    #[arg(long, default_value_t = 4)]
    pub streams: usize,
    /// Keys, all in one fresh plan.
    #[arg(long, default_value_t = 100)]
    pub keys: usize,
    /// The plan's quota per key (monthly period; the baseline: per window).
    #[arg(long, default_value_t = 1000)]
    pub limit: u64,
    /// Demand shape.
    #[arg(long, value_enum, default_value_t = Shape::Zipf)]
    pub shape: Shape,
    /// Zipf exponent (shape zipf).
    #[arg(long, default_value_t = 1.1)]
    pub zipf_s: f64,
    /// Share of requests to key 0 (shape hot).
    #[arg(long, default_value_t = 0.9)]
    pub hot_fraction: f64,
    /// Requests per second per stream (shape steady).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// On phase of shape bursts, ms.
    #[arg(long, default_value_t = 100)]
    pub burst_on_ms: u64,
    /// Off phase of shape bursts, ms.
    #[arg(long, default_value_t = 400)]
    pub burst_off_ms: u64,
    /// Run length in seconds (ignored with --requests).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Total decisions instead of a duration (split evenly over the streams).
    #[arg(long)]
    pub requests: Option<u64>,
    /// A fault: `kill-leader@SECONDS[+RESTART_AFTER]` or
    /// `pause-follower@SECONDS[+RESUME_AFTER]` (repeatable; own cluster only).
    #[arg(long = "fault")]
    pub faults: Vec<FaultSpec>,
    /// Use a running cluster (`http://host:port,...`) instead of starting one.
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Admin and gateway bearer token for --endpoints.
    #[arg(long, env = "QUOTA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the SVG chart here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Skip the Redis baseline.
    #[arg(long)]
    pub no_redis: bool,
    /// Fail when redis-server is missing instead of skipping the baseline.
    #[arg(long)]
    pub require_redis: bool,
    /// The baseline's window in seconds (default 30 days: one quota period, like ours).
    #[arg(long, default_value_t = 2_592_000)]
    pub redis_window_secs: u64,
    /// Seed of the key choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

impl Args {
    fn validate(&self) -> anyhow::Result<()> {
        if self.gateways == 0 || self.streams == 0 || self.keys == 0 {
            bail!("--gateways, --streams and --keys must be at least 1");
        }
        if self.limit == 0 {
            bail!("--limit must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.hot_fraction) {
            bail!("--hot-fraction must be in [0, 1]");
        }
        if !(self.zipf_s >= 0.0 && self.zipf_s.is_finite()) {
            bail!("--zipf-s must be >= 0");
        }
        if !(self.duration > 0.0 && self.duration <= 86_400.0) {
            bail!("--duration must be in (0, 86400] seconds");
        }
        if self.redis_window_secs == 0 {
            bail!("--redis-window-secs must be at least 1");
        }
        if !self.endpoints.is_empty() && !self.faults.is_empty() {
            bail!("--fault needs a cluster the harness starts itself (no --endpoints)");
        }
        Ok(())
    }

    fn demand(&self) -> Demand {
        Demand {
            shape: self.shape,
            keys: self.keys,
            zipf_s: self.zipf_s,
            hot_fraction: self.hot_fraction,
            rate: self.rate,
            burst_on: Duration::from_millis(self.burst_on_ms),
            burst_off: Duration::from_millis(self.burst_off_ms),
        }
    }

    fn load(&self) -> Load {
        let streams = self.gateways * self.streams;
        Load {
            streams,
            per_gateway: self.streams,
            budget: self.requests.map(|r| r.div_ceil(streams as u64)),
            seed: self.seed,
        }
    }
}

/// What one fault did.
struct FaultRecord {
    spec: FaultSpec,
    node: Option<u64>,
    applied_at: Option<f64>,
    undone_at: Option<f64>,
    leader_before: Option<u64>,
    /// The first leader a majority agreed on after a kill: another node, or the killed
    /// one after its restart.
    new_leader: Option<u64>,
    new_leader_after_ms: Option<f64>,
    error: Option<String>,
}

/// One backend's run.
struct RunResult {
    tally: Tally,
    elapsed: Duration,
}

/// Runs the harness; answers the exit code (1 on over-admission).
pub async fn main_with(args: Args) -> anyhow::Result<ExitCode> {
    args.validate()?;
    let run_id = format!("{:08x}", stats::Rng::new(now_ns()).next_u64() as u32);
    let mut cluster = None;
    let (clients, endpoints, token) = if args.endpoints.is_empty() {
        eprintln!("quota-loadtest: starting a 3-node cluster (quota-blackbox fixture)");
        let c = Cluster::start(3, ClusterOpts::default()).await?;
        let endpoints = c
            .ids()
            .into_iter()
            .map(|id| format!("http://{}", c.addr(id)))
            .collect();
        let clients = c.clients();
        cluster = Some(c);
        (clients, endpoints, None)
    } else {
        let mut clients = Vec::new();
        for (i, e) in args.endpoints.iter().enumerate() {
            clients.push(NodeClient::new(
                i as u64 + 1,
                endpoint_addr(e)?,
                args.token.as_deref(),
                Duration::from_secs(5),
            )?);
        }
        (clients, args.endpoints.clone(), args.token.clone())
    };

    eprintln!(
        "quota-loadtest: creating plan loadtest-{run_id} (limit {} per key) and {} keys",
        args.limit, args.keys
    );
    let setup = Instant::now();
    let plan = ops::create_plan(
        &clients,
        &format!("loadtest-{run_id}"),
        args.limit,
        ADMIN_DEADLINE,
    )
    .await?;
    let keys = create_keys(&clients, &plan, &run_id, args.keys).await?;
    let setup_s = setup.elapsed().as_secs_f64();
    let secrets = Arc::new(
        keys.iter()
            .map(|(_, s)| s.as_bytes().to_vec())
            .collect::<Vec<_>>(),
    );

    let mut gateways = Vec::new();
    for i in 0..args.gateways {
        let mut cfg = ClientConfig::new(endpoints.clone(), format!("loadtest-{run_id}-gw{i}"));
        cfg.token = token.clone();
        gateways.push(Client::connect(cfg).await.context("gateway connects")?);
    }

    let raft_before = committed_index(&clients).await;
    let backend = Backend::Quotad {
        gateways: gateways.clone(),
        secrets,
    };
    eprintln!(
        "quota-loadtest: quotad: {} gateways x {} streams, shape {:?}",
        args.gateways, args.streams, args.shape
    );
    let (ours, fault_records) = run_backend(&args, &backend, cluster.as_mut()).await?;
    let raft_after = committed_index(&clients).await;

    let metrics: Vec<MetricsSnapshot> = gateways.iter().map(Client::metrics).collect();
    let mut returned = 0;
    for gw in &gateways {
        returned += gw.shutdown().await.returned_tokens;
    }
    drop(backend);
    let usage = usage_of_plan(&clients, &plan).await;

    let baseline = if args.no_redis {
        Err("skipped (--no-redis)".to_owned())
    } else {
        match redis::find_server() {
            None if args.require_redis => bail!(
                "redis-server is not installed (apt-get install -y {}) and --require-redis was given",
                redis::APT_PACKAGE
            ),
            None => {
                let msg = format!(
                    "skipped: redis-server not found on PATH (install it with `apt-get install -y {}`)",
                    redis::APT_PACKAGE
                );
                eprintln!("quota-loadtest: baseline {msg}");
                Err(msg)
            }
            Some(bin) => {
                let server = redis::Server::start(&bin).await?;
                eprintln!(
                    "quota-loadtest: baseline: redis-server on {} (window {} s)",
                    server.addr(),
                    args.redis_window_secs
                );
                let backend = Backend::Redis {
                    addr: server.addr(),
                    window_s: args.redis_window_secs,
                    limit: args.limit,
                    prefix: format!("rl:{run_id}"),
                };
                let (r, _) = run_backend(&args, &backend, None).await?;
                drop(server);
                Ok(r)
            }
        }
    };

    let report = Report {
        args: &args,
        run_id: &run_id,
        plan: &plan,
        keys: &keys,
        setup_s,
        ours: &ours,
        metrics: &metrics,
        returned,
        raft: (raft_before, raft_after),
        usage: &usage,
        faults: &fault_records,
        baseline: &baseline,
    };
    let (json, over) = report.json();
    println!("{}", report.text(&json));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, report.svg()).with_context(|| format!("write {}", path.display()))?;
    }
    drop(cluster);
    if over > 0 {
        eprintln!("quota-loadtest: FAIL: {over} admitted past the limit");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// `http://host:port` to a socket address.
fn endpoint_addr(e: &str) -> anyhow::Result<SocketAddr> {
    let hostport = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))
        .unwrap_or(e)
        .trim_end_matches('/');
    hostport
        .to_socket_addrs()
        .with_context(|| format!("resolve {e}"))?
        .next()
        .ok_or_else(|| anyhow!("{e} resolves to no address"))
}

/// Creates `n` keys attached to `plan`, a few at a time; answers (key id, secret) in order.
async fn create_keys(
    clients: &[NodeClient],
    plan: &str,
    run_id: &str,
    n: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = vec![(String::new(), String::new()); n];
    let mut next = 0;
    while next < n {
        let mut set = tokio::task::JoinSet::new();
        for i in next..(next + SETUP_PARALLELISM).min(n) {
            let clients = clients.to_vec();
            let plan = plan.to_owned();
            let name = format!("loadtest-{run_id}-k{i}");
            set.spawn(async move {
                let req = v1::CreateKeyRequest {
                    request_id: request_id(),
                    spec: Some(v1::KeySpec {
                        name,
                        ..Default::default()
                    }),
                };
                let reply = retry(&clients, i, ADMIN_DEADLINE, |mut c| {
                    let req = req.clone();
                    async move { c.admin.create_key(req).await }
                })
                .await?;
                let id = reply
                    .key
                    .ok_or_else(|| anyhow!("CreateKey answered no key"))?
                    .id;
                ops::attach(&clients, &plan, &id, ADMIN_DEADLINE).await?;
                anyhow::Ok((i, id, reply.secret))
            });
        }
        while let Some(r) = set.join_next().await {
            let (i, id, secret) = r.context("key creation panicked")??;
            out[i] = (id, secret);
        }
        next += SETUP_PARALLELISM;
    }
    Ok(out)
}

/// The highest applied index any node reports (None when none answers).
async fn committed_index(clients: &[NodeClient]) -> Option<u64> {
    let mut best = None;
    for c in clients {
        let mut cl = c.cluster.clone();
        if let Ok(Ok(r)) =
            tokio::time::timeout(Duration::from_secs(1), cl.status(v1::StatusRequest {})).await
            && let Some(s) = r.into_inner().status
        {
            best = best.max(Some(s.committed_index));
        }
    }
    best
}

/// (used, reserved) per key id of `plan`, read page by page; an error is reported, not
/// fatal (the books from the gateways still stand).
async fn usage_of_plan(
    clients: &[NodeClient],
    plan: &str,
) -> Result<BTreeMap<String, (u64, u64)>, String> {
    let today = ops::today_utc();
    let mut out = BTreeMap::new();
    let mut token = String::new();
    loop {
        let req = v1::GetUsageRequest {
            plan: Some(ops::plan(plan)),
            key: None,
            start_date: today.clone(),
            end_date: today.clone(),
            page_token: token.clone(),
            page_size: USAGE_PAGE,
            allow_stale: false,
        };
        let reply = retry(clients, 0, ADMIN_DEADLINE, |mut c| {
            let req = req.clone();
            async move { c.admin.get_usage(req).await }
        })
        .await
        .map_err(|e| format!("{e:#}"))?;
        for k in reply.keys {
            if let Some(u) = k.current {
                out.insert(k.key_id, (u.used, u.reserved));
            }
        }
        if reply.next_page_token.is_empty() {
            return Ok(out);
        }
        token = reply.next_page_token;
    }
}

/// Runs the streams against `backend`, driving faults on `cluster`, with a progress bar.
async fn run_backend(
    args: &Args,
    backend: &Backend,
    mut cluster: Option<&mut Cluster>,
) -> anyhow::Result<(RunResult, Vec<FaultRecord>)> {
    let load = args.load();
    let shared = Arc::new(Shared::default());
    let start = Instant::now();
    let handles = load::spawn(&load, backend, &args.demand(), &shared, start);
    let bar = progress_bar(args);
    let deadline = args
        .requests
        .is_none()
        .then(|| start + Duration::from_secs_f64(args.duration));

    let mut records: Vec<FaultRecord> = Vec::new();
    let mut events: Vec<(Duration, usize, bool)> = Vec::new();
    if cluster.is_some() {
        for (i, f) in args.faults.iter().enumerate() {
            records.push(FaultRecord {
                spec: f.clone(),
                node: None,
                applied_at: None,
                undone_at: None,
                leader_before: None,
                new_leader: None,
                new_leader_after_ms: None,
                error: None,
            });
            events.push((f.at, i, false));
            events.push((f.at + f.length, i, true));
        }
    }
    events.sort_by_key(|e| (e.0, e.2));
    let mut next_event = 0;
    let mut awaiting_leader: Vec<usize> = Vec::new();
    loop {
        let now = start.elapsed();
        while next_event < events.len() && events[next_event].0 <= now {
            let (_, i, undo) = events[next_event];
            next_event += 1;
            if let Some(c) = cluster.as_deref_mut() {
                let t = start.elapsed().as_secs_f64();
                if undo {
                    undo_fault(c, &mut records[i], t);
                } else {
                    apply_fault(c, &mut records[i], t).await;
                    if records[i].spec.kind == FaultKind::KillLeader && records[i].error.is_none() {
                        awaiting_leader.push(i);
                    }
                }
            }
        }
        if !awaiting_leader.is_empty()
            && let Some(c) = cluster.as_deref()
            && let Some(leader) = c.leader().await
        {
            let t = start.elapsed().as_secs_f64();
            awaiting_leader.retain(|&i| {
                let r = &mut records[i];
                // The killed node counts once it was restarted (it may win again).
                if Some(leader) == r.node && r.undone_at.is_none() {
                    return true;
                }
                r.new_leader = Some(leader);
                r.new_leader_after_ms = r.applied_at.map(|a| (t - a) * 1000.0);
                false
            });
        }
        let d = shared.decisions.load(Ordering::Relaxed);
        let a = shared.admitted.load(Ordering::Relaxed);
        match args.requests {
            Some(total) => bar.set_position(d.min(total)),
            None => bar.set_position(start.elapsed().as_millis() as u64),
        }
        bar.set_message(format!(
            "{d} decisions, {a} admitted, {:.0}/s",
            d as f64 / start.elapsed().as_secs_f64().max(1e-3)
        ));
        if deadline.is_some_and(|d| Instant::now() >= d) {
            shared.stop.store(true, Ordering::Relaxed);
        }
        if handles.iter().all(|h| h.is_finished()) {
            break;
        }
        tokio::time::sleep(DRIVER_TICK).await;
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    // Faults still in force are undone so that the gateways can return their tokens.
    if let Some(c) = cluster {
        for &(_, i, undo) in &events[next_event..] {
            if undo {
                undo_fault(c, &mut records[i], elapsed.as_secs_f64());
            }
        }
    }
    let mut tally = Tally::default();
    for h in handles {
        tally.merge(&h.await.context("a stream panicked")?);
    }
    Ok((RunResult { tally, elapsed }, records))
}

fn progress_bar(args: &Args) -> indicatif::ProgressBar {
    if args.no_progress {
        return indicatif::ProgressBar::hidden();
    }
    let len = match args.requests {
        Some(r) => r,
        None => (args.duration * 1000.0) as u64,
    };
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {percent:>3}% {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

async fn apply_fault(cluster: &mut Cluster, r: &mut FaultRecord, t: f64) {
    let leader = cluster.leader().await;
    r.leader_before = leader;
    let result = match (r.spec.kind, leader) {
        (_, None) => Err(anyhow!("no leader to act on")),
        (FaultKind::KillLeader, Some(l)) => {
            r.node = Some(l);
            cluster.kill9(l)
        }
        (FaultKind::PauseFollower, Some(l)) => {
            match cluster.running().into_iter().find(|&id| id != l) {
                None => Err(anyhow!("no running follower")),
                Some(f) => {
                    r.node = Some(f);
                    faults::node_pid(f).and_then(|pid| faults::signal(pid, libc::SIGSTOP))
                }
            }
        }
    };
    match result {
        Ok(()) => {
            r.applied_at = Some(t);
            eprintln!(
                "quota-loadtest: t={t:.1}s {:?} node {}",
                r.spec.kind,
                r.node.unwrap_or(0)
            );
        }
        Err(e) => r.error = Some(format!("{e:#}")),
    }
}

fn undo_fault(cluster: &mut Cluster, r: &mut FaultRecord, t: f64) {
    if r.applied_at.is_none() || r.undone_at.is_some() {
        return;
    }
    let Some(node) = r.node else { return };
    let result = match r.spec.kind {
        FaultKind::KillLeader => cluster.restart(node),
        FaultKind::PauseFollower => {
            faults::node_pid(node).and_then(|pid| faults::signal(pid, libc::SIGCONT))
        }
    };
    match result {
        Ok(()) => r.undone_at = Some(t),
        Err(e) => r.error = Some(format!("undo: {e:#}")),
    }
}

/// Everything the report is made of.
struct Report<'a> {
    args: &'a Args,
    run_id: &'a str,
    plan: &'a str,
    keys: &'a [(String, String)],
    setup_s: f64,
    ours: &'a RunResult,
    metrics: &'a [MetricsSnapshot],
    returned: u64,
    raft: (Option<u64>, Option<u64>),
    usage: &'a Result<BTreeMap<String, (u64, u64)>, String>,
    faults: &'a [FaultRecord],
    baseline: &'a Result<RunResult, String>,
}

fn latency_json(h: &stats::Histogram) -> Value {
    json!({
        "p50": h.percentile(0.50),
        "p99": h.percentile(0.99),
        "p999": h.percentile(0.999),
        "max": h.max(),
    })
}

fn ticks_between(series: &[u64], from: f64, to: f64) -> u64 {
    let t = TICK.as_secs_f64();
    let a = (from / t).floor().max(0.0) as usize;
    let b = ((to / t).ceil().max(0.0) as usize).min(series.len());
    series.get(a..b).map(|s| s.iter().sum()).unwrap_or(0)
}

impl Report<'_> {
    /// The JSON report and the total over-admission (gateways' books and cluster's
    /// counters together) that decides the exit code.
    fn json(&self) -> (Value, u64) {
        let args = self.args;
        let t = &self.ours.tally;
        let secs = self.ours.elapsed.as_secs_f64();
        let books: Vec<KeyBooks> = (0..args.keys)
            .map(|k| KeyBooks {
                limit: args.limit,
                admitted: t.admitted[k],
                saturated: t.denied_quota[k] > 0,
            })
            .collect();
        let total = stats::total(&books);
        let usage = self.usage.as_ref().ok();
        let mut cluster_over = 0u64;
        let mut cluster_used = 0u64;
        let mut cluster_reserved = 0u64;
        let mut mismatched = 0u64;
        let per_key: Vec<Value> = books
            .iter()
            .enumerate()
            .map(|(k, b)| {
                let id = &self.keys[k].0;
                let (used, reserved) = usage.and_then(|u| u.get(id)).copied().unwrap_or((0, 0));
                cluster_over += (used + reserved).saturating_sub(b.limit);
                cluster_used += used;
                cluster_reserved += reserved;
                mismatched += u64::from(used != b.admitted);
                json!({
                    "key": k, "key_id": id, "limit": b.limit, "admitted": b.admitted,
                    "over": b.over(), "under": b.under(), "denied_quota": t.denied_quota[k],
                    "cluster_used": used, "cluster_reserved": reserved,
                })
            })
            .collect();
        let m = self.metrics;
        let refill_rpcs: u64 = m.iter().map(|m| m.refill_rpcs).sum();
        let refill_lat_sum: u64 = m.iter().map(|m| m.refill_latency_us_sum).sum();
        let refill_lat_max = m.iter().map(|m| m.refill_latency_us_max).max().unwrap_or(0);
        let raft_entries = match self.raft {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        let faults: Vec<Value> = self
            .faults
            .iter()
            .map(|f| {
                let (during, before) = match f.applied_at {
                    Some(a) => {
                        let end = f.undone_at.unwrap_or(secs) + FAULT_TAIL.as_secs_f64();
                        let before_from = (a - 2.0).max(0.0);
                        let span = (end.min(secs) - a).max(TICK.as_secs_f64());
                        let before_span = (a - before_from).max(TICK.as_secs_f64());
                        (
                            json!({
                                "from_s": a, "to_s": end.min(secs),
                                "decisions_per_s": ticks_between(&t.ticks_decisions, a, end) as f64 / span,
                                "admitted": ticks_between(&t.ticks_admitted, a, end),
                                "unavailable": ticks_between(&t.ticks_unavailable, a, end),
                            }),
                            json!({
                                "decisions_per_s": ticks_between(&t.ticks_decisions, before_from, a) as f64 / before_span,
                            }),
                        )
                    }
                    None => (Value::Null, Value::Null),
                };
                json!({
                    "fault": format!("{:?}", f.spec.kind), "at_s": f.spec.at.as_secs_f64(),
                    "length_s": f.spec.length.as_secs_f64(), "node": f.node,
                    "leader_before": f.leader_before, "applied_at_s": f.applied_at,
                    "undone_at_s": f.undone_at, "new_leader": f.new_leader,
                    "new_leader_after_ms": f.new_leader_after_ms, "error": f.error,
                    "before": before, "during_and_2s_after": during,
                })
            })
            .collect();
        let over = total.over + cluster_over;
        let ours = json!({
            "duration_s": secs,
            "setup_s": self.setup_s,
            "decisions": t.decisions,
            "decisions_per_s": t.decisions as f64 / secs,
            "admitted": total.admitted,
            "limit_total": total.limit,
            "over_admission": total.over,
            "keys_over": total.keys_over,
            "saturated_keys": total.saturated_keys,
            "under_admission_pct": total.under_pct,
            "denied": { "quota": t.denied_quota.iter().sum::<u64>(), "unavailable": t.unavailable, "other": t.other },
            "check_latency_ns": latency_json(&t.latency),
            "refill": {
                "rpcs": refill_rpcs,
                "rpcs_per_s": refill_rpcs as f64 / secs,
                "failures": m.iter().map(|m| m.refill_failures).sum::<u64>(),
                "latency_us_mean": if refill_rpcs == 0 { 0.0 } else { refill_lat_sum as f64 / refill_rpcs as f64 },
                "latency_us_max": refill_lat_max,
                "leases_granted": m.iter().map(|m| m.leases_granted).sum::<u64>(),
                "returned_at_shutdown": self.returned,
            },
            "raft": {
                "entries": raft_entries,
                "writes_per_s": raft_entries.map(|e| e as f64 / secs),
            },
            "cluster_cross_check": match self.usage {
                Ok(_) => json!({
                    "used_total": cluster_used,
                    "reserved_total": cluster_reserved,
                    "over_admission": cluster_over,
                    "used_minus_admitted": cluster_used as i64 - total.admitted as i64,
                    "keys_where_used_differs": mismatched,
                }),
                Err(e) => json!({ "error": e }),
            },
            "faults": faults,
            "timeline": {
                "tick_ms": TICK.as_millis() as u64,
                "decisions": t.ticks_decisions,
                "admitted": t.ticks_admitted,
                "admitted_key0": t.ticks_hot,
                "unavailable": t.ticks_unavailable,
            },
            "per_key": per_key,
        });
        let baseline = match self.baseline {
            Err(reason) => json!({ "skipped": reason }),
            Ok(r) => self.baseline_json(r),
        };
        let report = json!({
            "run_id": self.run_id,
            "plan_id": self.plan,
            "config": {
                "gateways": args.gateways, "streams_per_gateway": args.streams, "keys": args.keys,
                "limit_per_key": args.limit, "shape": format!("{:?}", args.shape).to_lowercase(),
                "zipf_s": args.zipf_s, "hot_fraction": args.hot_fraction, "rate": args.rate,
                "duration_s": args.duration, "requests": args.requests,
                "faults": args.faults.iter().map(|f| format!("{:?}@{}+{}", f.kind, f.at.as_secs_f64(), f.length.as_secs_f64())).collect::<Vec<_>>(),
                "endpoints": if args.endpoints.is_empty() { Value::Null } else { json!(args.endpoints) },
                "redis_window_s": args.redis_window_secs,
            },
            "quotad": ours,
            "redis_fixed_window": baseline,
            "over_admission_total": over,
            "pass": over == 0,
        });
        (report, over)
    }

    fn baseline_json(&self, r: &RunResult) -> Value {
        let args = self.args;
        let t = &r.tally;
        let secs = r.elapsed.as_secs_f64();
        let per_window: Vec<KeyBooks> = t
            .windows
            .iter()
            .map(|(&(k, _), &admitted)| KeyBooks {
                limit: args.limit,
                admitted,
                saturated: t.denied_quota[k] > 0,
            })
            .collect();
        let total = stats::total(&per_window);
        let window_ticks = (args.redis_window_secs as f64 / TICK.as_secs_f64()) as usize;
        let key0_sliding = stats::max_window_sum(&t.ticks_hot, window_ticks);
        json!({
            "duration_s": secs,
            "decisions": t.decisions,
            "decisions_per_s": t.decisions as f64 / secs,
            "admitted": total.admitted,
            "windows_used": per_window.len(),
            "limit_total": total.limit,
            "over_admission_per_window": total.over,
            "key0_max_admitted_in_any_window_length": key0_sliding,
            "key0_over_admission_sliding": key0_sliding.saturating_sub(args.limit),
            "under_admission_pct": total.under_pct,
            "denied": { "quota": t.denied_quota.iter().sum::<u64>(), "errors": t.unavailable },
            "check_latency_ns": latency_json(&t.latency),
            "timeline": { "tick_ms": TICK.as_millis() as u64, "admitted": t.ticks_admitted, "admitted_key0": t.ticks_hot },
        })
    }

    /// A readable summary, ours and the baseline side by side.
    fn text(&self, j: &Value) -> String {
        let q = &j["quotad"];
        let r = &j["redis_fixed_window"];
        let a = self.args;
        let mut s = format!(
            "quota-loadtest {} — {} gateways x {} streams, {} keys, limit {} per key, shape {:?}, {:.1} s\n",
            self.run_id,
            a.gateways,
            a.streams,
            a.keys,
            a.limit,
            a.shape,
            q["duration_s"].as_f64().unwrap_or(0.0)
        );
        let lat = |v: &Value| format!("{} / {} / {} ns", v["p50"], v["p99"], v["p999"]);
        let row = |s: &mut String, name: &str, ours: String, theirs: String| {
            s.push_str(&format!("  {name:<28} {ours:<34} {theirs}\n"));
        };
        row(&mut s, "", "quotad".into(), "redis fixed window".into());
        let skipped = r.get("skipped").and_then(Value::as_str);
        let their = |f: &dyn Fn(&Value) -> String| match skipped {
            Some(_) => "-".to_owned(),
            None => f(r),
        };
        row(
            &mut s,
            "decisions/s",
            format!("{:.0}", q["decisions_per_s"].as_f64().unwrap_or(0.0)),
            their(&|r| format!("{:.0}", r["decisions_per_s"].as_f64().unwrap_or(0.0))),
        );
        row(
            &mut s,
            "admitted / limit",
            format!("{} / {}", q["admitted"], q["limit_total"]),
            their(&|r| {
                format!(
                    "{} / {} ({} windows)",
                    r["admitted"], r["limit_total"], r["windows_used"]
                )
            }),
        );
        row(
            &mut s,
            "over-admission",
            format!(
                "{} (cluster counter: {})",
                q["over_admission"], q["cluster_cross_check"]["over_admission"]
            ),
            their(&|r| {
                format!(
                    "{} per window; key 0 in any {} s span: {} (limit {})",
                    r["over_admission_per_window"],
                    a.redis_window_secs,
                    r["key0_max_admitted_in_any_window_length"],
                    a.limit
                )
            }),
        );
        row(
            &mut s,
            "under-admission",
            format!(
                "{:.2} % of {} saturated keys",
                q["under_admission_pct"].as_f64().unwrap_or(0.0),
                q["saturated_keys"]
            ),
            their(&|r| format!("{:.2} %", r["under_admission_pct"].as_f64().unwrap_or(0.0))),
        );
        row(
            &mut s,
            "check p50 / p99 / p999",
            lat(&q["check_latency_ns"]),
            their(&|r| lat(&r["check_latency_ns"])),
        );
        row(
            &mut s,
            "denied quota / unavailable",
            format!("{} / {}", q["denied"]["quota"], q["denied"]["unavailable"]),
            their(&|r| format!("{} / {}", r["denied"]["quota"], r["denied"]["errors"])),
        );
        let rf = &q["refill"];
        row(
            &mut s,
            "refill RPCs/s (mean, max)",
            format!(
                "{:.1} ({:.0} us, {} us)",
                rf["rpcs_per_s"].as_f64().unwrap_or(0.0),
                rf["latency_us_mean"].as_f64().unwrap_or(0.0),
                rf["latency_us_max"]
            ),
            "-".into(),
        );
        row(
            &mut s,
            "raft writes/s",
            match q["raft"]["writes_per_s"].as_f64() {
                Some(w) => format!("{w:.1}"),
                None => "unknown".into(),
            },
            "-".into(),
        );
        let cc = &q["cluster_cross_check"];
        row(
            &mut s,
            "cluster used - admitted",
            format!(
                "{} (reserved {}, keys differing {})",
                cc["used_minus_admitted"], cc["reserved_total"], cc["keys_where_used_differs"]
            ),
            "-".into(),
        );
        if let Some(reason) = skipped {
            s.push_str(&format!("  baseline {reason}\n"));
        }
        for f in q["faults"].as_array().into_iter().flatten() {
            let election = match f["new_leader"].as_u64() {
                Some(l) => format!(
                    "; leader {l} seen after {:.0} ms",
                    f["new_leader_after_ms"].as_f64().unwrap_or(0.0)
                ),
                None => String::new(),
            };
            s.push_str(&format!(
                "  fault {} at {} s on node {}{election}; decisions/s {:.0} before, {:.0} during (+2 s); unavailable {}{}\n",
                f["fault"].as_str().unwrap_or("?"),
                f["at_s"],
                f["node"],
                f["before"]["decisions_per_s"].as_f64().unwrap_or(0.0),
                f["during_and_2s_after"]["decisions_per_s"].as_f64().unwrap_or(0.0),
                f["during_and_2s_after"]["unavailable"],
                f["error"].as_str().map(|e| format!(" (error: {e})")).unwrap_or_default(),
            ));
        }
        s.push_str(&format!(
            "  result: {}\n",
            if j["pass"] == json!(true) {
                "PASS (over-admission 0)"
            } else {
                "FAIL (over-admission)"
            }
        ));
        s
    }

    fn svg(&self) -> String {
        let t = &self.ours.tally;
        let mut hot = vec![svg::Series {
            name: "quotad: key 0 admitted (cumulative)".into(),
            color: "#1f77b4",
            points: svg::cumulative(&t.ticks_hot),
        }];
        let mut all = vec![svg::Series {
            name: "quotad: all keys admitted (cumulative)".into(),
            color: "#1f77b4",
            points: svg::cumulative(&t.ticks_admitted),
        }];
        let mut secs = self.ours.elapsed.as_secs_f64();
        if let Ok(b) = self.baseline {
            hot.push(svg::Series {
                name: "redis fixed window: key 0 admitted".into(),
                color: "#ff7f0e",
                points: svg::cumulative(&b.tally.ticks_hot),
            });
            all.push(svg::Series {
                name: "redis fixed window: all keys admitted".into(),
                color: "#ff7f0e",
                points: svg::cumulative(&b.tally.ticks_admitted),
            });
            secs = secs.max(b.elapsed.as_secs_f64());
        }
        let faults: Vec<(f64, f64, String)> = self
            .faults
            .iter()
            .filter_map(|f| {
                let a = f.applied_at?;
                let label = match f.spec.kind {
                    FaultKind::KillLeader => "kill -9 leader",
                    FaultKind::PauseFollower => "pause follower",
                };
                Some((a, f.undone_at.unwrap_or(secs), label.to_owned()))
            })
            .collect();
        svg::render(
            &[
                svg::Panel {
                    title: format!(
                        "key 0 (the hottest): admitted over time, limit {}",
                        self.args.limit
                    ),
                    limit: self.args.limit,
                    series: hot,
                },
                svg::Panel {
                    title: format!("all {} keys: admitted over time", self.args.keys),
                    limit: self.args.limit * self.args.keys as u64,
                    series: all,
                },
            ],
            &faults,
            TICK.as_secs_f64(),
            secs,
        )
    }
}
