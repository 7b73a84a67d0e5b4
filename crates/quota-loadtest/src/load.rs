//! The workload: G gateways x C streams, each a tokio task choosing keys by the demand
//! shape and asking its backend (a quota-client gateway, or the Redis fixed window) for a
//! decision, timing every decision and counting admissions per key and per tick.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quota_client::{Client, Decision, DenyReason};

use crate::redis;
use crate::stats::{Histogram, Rng, Zipf};

/// Resolution of every time series.
pub const TICK: Duration = Duration::from_millis(100);
/// The API stage and route every request names (the fixture's plans cover orders/prod).
pub const API: &str = "orders";
/// See [`API`].
pub const STAGE: &str = "prod";
/// See [`API`].
pub const ROUTE: &str = "GET /orders";
/// An unpaced stream yields to the scheduler after this many decisions: a decision from a
/// local lease never awaits, and the gateway's refill task must get to run.
const YIELD_EVERY: u64 = 32;
/// Decisions between two updates of the shared progress counters.
const PROGRESS_EVERY: u64 = 256;

/// How demand is spread over keys and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// Uniform keys, each stream paced at `--rate` requests per second.
    Steady,
    /// Uniform keys, streams on at full speed for `--burst-on-ms`, then off.
    Bursts,
    /// `--hot-fraction` of requests to key 0, the rest uniform over the others.
    Hot,
    /// Keys drawn from Zipf(`--zipf-s`): key 0 is the hottest.
    Zipf,
}

/// The shape's parameters.
#[derive(Clone, Debug)]
pub struct Demand {
    /// The shape.
    pub shape: Shape,
    /// Number of keys.
    pub keys: usize,
    /// Zipf exponent.
    pub zipf_s: f64,
    /// Share of requests to key 0 for `Hot`.
    pub hot_fraction: f64,
    /// Requests per second per stream for `Steady`.
    pub rate: f64,
    /// On phase of `Bursts`.
    pub burst_on: Duration,
    /// Off phase of `Bursts`.
    pub burst_off: Duration,
}

/// Draws keys for one shape.
pub struct KeyPicker {
    demand: Demand,
    zipf: Option<Zipf>,
}

impl KeyPicker {
    /// A picker for `demand`.
    pub fn new(demand: Demand) -> KeyPicker {
        let zipf = (demand.shape == Shape::Zipf).then(|| Zipf::new(demand.keys, demand.zipf_s));
        KeyPicker { demand, zipf }
    }

    /// The next key index.
    pub fn pick(&self, rng: &mut Rng) -> usize {
        let k = self.demand.keys;
        match (&self.zipf, self.demand.shape) {
            (Some(z), _) => z.sample(rng),
            (None, Shape::Hot) => {
                if k == 1 || rng.next_f64() < self.demand.hot_fraction {
                    0
                } else {
                    1 + rng.below(k - 1)
                }
            }
            _ => rng.below(k),
        }
    }
}

/// What answers the streams.
#[derive(Clone)]
pub enum Backend {
    /// quota-client gateways (stream i uses gateway i / C).
    Quotad {
        /// The gateways.
        gateways: Vec<Client>,
        /// Secrets by key index.
        secrets: Arc<Vec<Vec<u8>>>,
    },
    /// The fixed-window counter in Redis.
    Redis {
        /// The server.
        addr: std::net::SocketAddr,
        /// Window length in seconds.
        window_s: u64,
        /// Limit per key and window.
        limit: u64,
        /// Prefix that keeps runs apart.
        prefix: String,
    },
}

/// What one decision was.
enum Outcome {
    Admit,
    DenyQuota,
    Unavailable,
    Other,
}

/// Everything one stream (or, merged, the whole run) counted.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Admitted per key.
    pub admitted: Vec<u64>,
    /// Denied for quota per key.
    pub denied_quota: Vec<u64>,
    /// Decision latency in ns.
    pub latency: Histogram,
    /// Decisions.
    pub decisions: u64,
    /// Denied `Unavailable` (or a Redis error).
    pub unavailable: u64,
    /// Denied for another reason.
    pub other: u64,
    /// Per tick: admitted.
    pub ticks_admitted: Vec<u64>,
    /// Per tick: decisions.
    pub ticks_decisions: Vec<u64>,
    /// Per tick: unavailable.
    pub ticks_unavailable: Vec<u64>,
    /// Per tick: admitted for key 0 (the hottest in `Hot` and `Zipf`).
    pub ticks_hot: Vec<u64>,
    /// Fixed-window baseline: admitted per (key, window number).
    pub windows: HashMap<(usize, u64), u64>,
}

fn bump(v: &mut Vec<u64>, i: usize, by: u64) {
    if v.len() <= i {
        v.resize(i + 1, 0);
    }
    v[i] += by;
}

fn add_all(a: &mut Vec<u64>, b: &[u64]) {
    if a.len() < b.len() {
        a.resize(b.len(), 0);
    }
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

impl Tally {
    fn new(keys: usize) -> Tally {
        Tally {
            admitted: vec![0; keys],
            denied_quota: vec![0; keys],
            ..Default::default()
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Tally) {
        add_all(&mut self.admitted, &other.admitted);
        add_all(&mut self.denied_quota, &other.denied_quota);
        self.latency.merge(&other.latency);
        self.decisions += other.decisions;
        self.unavailable += other.unavailable;
        self.other += other.other;
        add_all(&mut self.ticks_admitted, &other.ticks_admitted);
        add_all(&mut self.ticks_decisions, &other.ticks_decisions);
        add_all(&mut self.ticks_unavailable, &other.ticks_unavailable);
        add_all(&mut self.ticks_hot, &other.ticks_hot);
        for (k, v) in &other.windows {
            *self.windows.entry(*k).or_default() += v;
        }
    }
}

/// Shared while the run goes: the stop flag and the progress counters.
#[derive(Default)]
pub struct Shared {
    /// Set to stop every stream.
    pub stop: AtomicBool,
    /// Decisions so far (updated in batches).
    pub decisions: AtomicU64,
    /// Admissions so far (updated in batches).
    pub admitted: AtomicU64,
}

/// The run's streams.
pub struct Load {
    /// Gateways x streams.
    pub streams: usize,
    /// Streams per gateway.
    pub per_gateway: usize,
    /// Decisions per stream (None: until stopped).
    pub budget: Option<u64>,
    /// Seed of stream 0 (stream i uses seed + i).
    pub seed: u64,
}

/// Spawns every stream; each answers its tally when it ends.
pub fn spawn(
    load: &Load,
    backend: &Backend,
    demand: &Demand,
    shared: &Arc<Shared>,
    start: Instant,
) -> Vec<tokio::task::JoinHandle<Tally>> {
    let picker = Arc::new(KeyPicker::new(demand.clone()));
    (0..load.streams)
        .map(|i| {
            let backend = backend.clone();
            let picker = picker.clone();
            let shared = shared.clone();
            let demand = demand.clone();
            let budget = load.budget;
            let gw = i / load.per_gateway.max(1);
            let seed = load.seed.wrapping_add(i as u64);
            tokio::spawn(async move {
                stream(backend, gw, picker, demand, shared, budget, seed, start).await
            })
        })
        .collect()
}

enum Conn {
    Quotad(Client, Arc<Vec<Vec<u8>>>),
    Redis(Option<redis::Conn>, std::net::SocketAddr, u64, u64, String),
}

impl Conn {
    /// One decision for key `k`; answers the outcome and, for the baseline, the window.
    async fn decide(&mut self, k: usize) -> (Outcome, u64) {
        match self {
            Conn::Quotad(c, secrets) => match c.check(&secrets[k], API, STAGE, ROUTE, 1).await {
                Decision::Allow(p) => {
                    p.commit();
                    (Outcome::Admit, 0)
                }
                Decision::Deny(d) => match d.reason {
                    DenyReason::QuotaExceeded { .. } => (Outcome::DenyQuota, 0),
                    DenyReason::Unavailable => (Outcome::Unavailable, 0),
                    _ => (Outcome::Other, 0),
                },
            },
            Conn::Redis(conn, addr, window_s, limit, prefix) => {
                let window = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
                    / *window_s;
                if conn.is_none() {
                    *conn = redis::Conn::connect(*addr).await.ok();
                }
                let Some(c) = conn.as_mut() else {
                    return (Outcome::Unavailable, window);
                };
                let key = format!("{prefix}:{k}:{window}");
                match c.fixed_window(key.as_bytes(), *window_s, *limit).await {
                    Ok(true) => (Outcome::Admit, window),
                    Ok(false) => (Outcome::DenyQuota, window),
                    Err(_) => {
                        *conn = None;
                        (Outcome::Unavailable, window)
                    }
                }
            }
        }
    }
}

// The stream's knobs are its own: a struct would only rename them.
#[allow(clippy::too_many_arguments)]
async fn stream(
    backend: Backend,
    gw: usize,
    picker: Arc<KeyPicker>,
    demand: Demand,
    shared: Arc<Shared>,
    budget: Option<u64>,
    seed: u64,
    start: Instant,
) -> Tally {
    let mut conn = match backend {
        Backend::Quotad { gateways, secrets } => {
            Conn::Quotad(gateways[gw % gateways.len()].clone(), secrets)
        }
        Backend::Redis {
            addr,
            window_s,
            limit,
            prefix,
        } => Conn::Redis(None, addr, window_s, limit, prefix),
    };
    let mut rng = Rng::new(seed);
    let mut t = Tally::new(demand.keys);
    let (mut reported_d, mut reported_a) = (0u64, 0u64);
    let mut n = 0u64;
    let began = Instant::now();
    let cycle = demand.burst_on + demand.burst_off;
    loop {
        if budget.is_some_and(|b| n >= b) || shared.stop.load(Ordering::Relaxed) {
            break;
        }
        match demand.shape {
            Shape::Steady if demand.rate > 0.0 => {
                let due = began + Duration::from_secs_f64(n as f64 / demand.rate);
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
            }
            Shape::Bursts if !cycle.is_zero() => {
                let into =
                    Duration::from_nanos((start.elapsed().as_nanos() % cycle.as_nanos()) as u64);
                if into >= demand.burst_on {
                    tokio::time::sleep(cycle - into).await;
                    continue;
                }
            }
            _ => {
                if n % YIELD_EVERY == YIELD_EVERY - 1 {
                    tokio::task::yield_now().await;
                }
            }
        }
        let k = picker.pick(&mut rng);
        let t0 = Instant::now();
        let (outcome, window) = conn.decide(k).await;
        let t1 = Instant::now();
        t.latency.record(t1.duration_since(t0).as_nanos() as u64);
        let tick = (t1.duration_since(start).as_nanos() / TICK.as_nanos()) as usize;
        t.decisions += 1;
        n += 1;
        bump(&mut t.ticks_decisions, tick, 1);
        match outcome {
            Outcome::Admit => {
                t.admitted[k] += 1;
                bump(&mut t.ticks_admitted, tick, 1);
                if k == 0 {
                    bump(&mut t.ticks_hot, tick, 1);
                }
                if matches!(conn, Conn::Redis(..)) {
                    *t.windows.entry((k, window)).or_default() += 1;
                }
            }
            Outcome::DenyQuota => t.denied_quota[k] += 1,
            Outcome::Unavailable => {
                t.unavailable += 1;
                bump(&mut t.ticks_unavailable, tick, 1);
            }
            Outcome::Other => t.other += 1,
        }
        if n.is_multiple_of(PROGRESS_EVERY) {
            let a: u64 = t.ticks_admitted.iter().sum();
            shared
                .decisions
                .fetch_add(n - reported_d, Ordering::Relaxed);
            shared.admitted.fetch_add(a - reported_a, Ordering::Relaxed);
            reported_d = n;
            reported_a = a;
        }
    }
    let a: u64 = t.ticks_admitted.iter().sum();
    shared
        .decisions
        .fetch_add(n - reported_d, Ordering::Relaxed);
    shared.admitted.fetch_add(a - reported_a, Ordering::Relaxed);
    t
}
