//! The client against real three-node `quotad` clusters (the `quota-blackbox` fixture).
//! Run: `cargo test -p quota-client --test cluster -- --test-threads=1`.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use quota_blackbox::ops::{self, request_id, retry};
use quota_blackbox::{Cluster, ClusterOpts, NodeClient};
use quota_client::{Client, ClientConfig, Decision, DenyKind, DenyReason};
use quota_proto::v1;

const API: &str = "orders";
const STAGE: &str = "prod";
const ROUTE: &str = "GET /orders";
const DEADLINE: Duration = Duration::from_secs(20);

fn endpoints(cluster: &Cluster) -> Vec<String> {
    cluster
        .ids()
        .into_iter()
        .map(|id| format!("http://{}", cluster.addr(id)))
        .collect()
}

/// A plan with quota `limit` and a key in it; answers (plan id, key id, secret).
async fn plan_and_key(
    clients: &[NodeClient],
    name: &str,
    limit: u64,
) -> anyhow::Result<(String, String, String)> {
    let plan = ops::create_plan(clients, name, limit, DEADLINE).await?;
    let req = v1::CreateKeyRequest {
        request_id: request_id(),
        spec: Some(v1::KeySpec {
            name: format!("{name}-key"),
            ..Default::default()
        }),
    };
    let reply = retry(clients, 0, DEADLINE, |mut c| {
        let req = req.clone();
        async move { c.admin.create_key(req).await }
    })
    .await?;
    let key = reply.key.ok_or_else(|| anyhow!("no key"))?.id;
    ops::attach(clients, &plan, &key, DEADLINE).await?;
    Ok((plan, key, reply.secret))
}

async fn gateways(
    cluster: &Cluster,
    n: usize,
    tune: impl Fn(&mut ClientConfig),
) -> anyhow::Result<Vec<Client>> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut cfg = ClientConfig::new(endpoints(cluster), format!("gw-{i}"));
        tune(&mut cfg);
        out.push(Client::connect(cfg).await.context("gateway connects")?);
    }
    Ok(out)
}

/// What the workers of all gateways saw.
#[derive(Default)]
struct Tally {
    committed: AtomicU64,
    refunded: AtomicU64,
    denied_quota: AtomicU64,
    denied_other: AtomicU64,
    unavailable: AtomicU64,
    /// Monotonic ms (since `start`) of the latest admission any worker saw.
    last_admit_ms: AtomicU64,
}

/// Runs `workers` tasks per gateway, each checking `secret` in a loop for `run_for`,
/// refunding every `refund_every`-th admission (0 = never).
// The knobs of a load run are all distinct numbers; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
async fn load(
    gws: &[Client],
    secret: &str,
    workers: usize,
    run_for: Duration,
    refund_every: u64,
    pause_on_deny: Duration,
    tally: Arc<Tally>,
    start: Instant,
) {
    let mut tasks = Vec::new();
    for gw in gws {
        for _ in 0..workers {
            let gw = gw.clone();
            let secret = secret.to_owned();
            let tally = tally.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while start.elapsed() < run_for {
                    let began = start.elapsed();
                    match gw.check(secret.as_bytes(), API, STAGE, ROUTE, 1).await {
                        Decision::Allow(permit) => {
                            n += 1;
                            tally
                                .last_admit_ms
                                .fetch_max(began.as_millis() as u64, Ordering::Relaxed);
                            if refund_every != 0 && n.is_multiple_of(refund_every) {
                                permit.refund();
                                tally.refunded.fetch_add(1, Ordering::Relaxed);
                            } else {
                                permit.commit();
                                tally.committed.fetch_add(1, Ordering::Relaxed);
                            }
                            tokio::task::yield_now().await;
                        }
                        Decision::Deny(d) => {
                            match d.reason {
                                DenyReason::QuotaExceeded { .. } => &tally.denied_quota,
                                DenyReason::Unavailable => &tally.unavailable,
                                _ => &tally.denied_other,
                            }
                            .fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(pause_on_deny).await;
                        }
                    }
                }
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
}

// Property: across 8 gateways sharing one key, the cluster never admits past the quota,
// the tail of the quota is spent (>= 99%), and refunded requests do not count.
// Set-up: 3 nodes; plan limit L = 3,000 (monthly); one key; 8 gateways x 4 workers call
// `check` as fast as they can for 10 s (demand far above L), refunding every 5th admitted
// request; then every gateway shuts down (returning unused tokens).
// Pass: committed <= L and committed >= 0.99 L; the cluster's `used` equals the committed
// count exactly (refunds were not counted) and nothing stays reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_gateways_spend_quota_exactly_and_refunds_do_not_count() {
    let cluster = Cluster::start(3, ClusterOpts::default())
        .await
        .expect("cluster starts");
    let result = async {
        const L: u64 = 3_000;
        let clients = cluster.clients();
        let (plan, key, secret) = plan_and_key(&clients, "accuracy", L).await?;
        let gws = gateways(&cluster, 8, |_| {}).await?;
        let tally = Arc::new(Tally::default());
        let start = Instant::now();
        load(
            &gws,
            &secret,
            4,
            Duration::from_secs(10),
            5,
            Duration::from_millis(2),
            tally.clone(),
            start,
        )
        .await;
        let mut returned = 0;
        for gw in &gws {
            returned += gw.shutdown().await.returned_tokens;
        }
        let committed = tally.committed.load(Ordering::Relaxed);
        let refunded = tally.refunded.load(Ordering::Relaxed);
        let usage = ops::usage(&clients, &plan, &key, false, DEADLINE).await?;
        let m = gws[0].metrics();
        eprintln!(
            "accuracy: L={L} committed={committed} refunded={refunded} used={} reserved={} \
             returned_at_shutdown={returned} denied_quota={} unavailable={} other={} \
             last_admission_at={} ms; gw0 metrics: {m:?}",
            usage.used,
            usage.reserved,
            tally.denied_quota.load(Ordering::Relaxed),
            tally.unavailable.load(Ordering::Relaxed),
            tally.denied_other.load(Ordering::Relaxed),
            tally.last_admit_ms.load(Ordering::Relaxed),
        );
        ensure!(committed <= L, "admitted {committed} > limit {L}");
        ensure!(
            committed * 100 >= L * 99,
            "admitted {committed} < 99% of {L}"
        );
        ensure!(refunded > 0, "no refunds happened");
        ensure!(
            usage.used == committed,
            "cluster counted {} but gateways committed {committed}",
            usage.used
        );
        ensure!(usage.reserved == 0, "still reserved: {}", usage.reserved);
        Ok(())
    }
    .await;
    cluster.finish(result);
}

// Property: a key disabled by an operator is refused by every connected gateway within
// one second.
// Set-up: 3 nodes; a plan with a large quota; 8 gateways x 2 workers checking the key in
// a loop; after 2 s the key is disabled (SetKeyEnabled false, acknowledged at t_ack);
// the load continues 3 s more.
// Pass: no admission began later than t_ack + 1 s, and after that the gateways deny with
// `Disabled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disabled_key_is_refused_everywhere_within_one_second() {
    let cluster = Cluster::start(3, ClusterOpts::default())
        .await
        .expect("cluster starts");
    let result = async {
        let clients = cluster.clients();
        let (_plan, key, secret) = plan_and_key(&clients, "disable", 1 << 40).await?;
        let gws = gateways(&cluster, 8, |_| {}).await?;
        let tally = Arc::new(Tally::default());
        let start = Instant::now();
        let load = {
            let gws = gws.clone();
            let tally = tally.clone();
            let secret = secret.clone();
            tokio::spawn(async move {
                load(
                    &gws,
                    &secret,
                    2,
                    Duration::from_secs(5),
                    0,
                    Duration::from_millis(1),
                    tally,
                    start,
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        let req = v1::SetKeyEnabledRequest {
            request_id: request_id(),
            key: Some(ops::key(&key)),
            enabled: false,
        };
        retry(&clients, 0, DEADLINE, |mut c| {
            let req = req.clone();
            async move { c.admin.set_key_enabled(req).await }
        })
        .await?;
        let t_ack = start.elapsed().as_millis() as u64;
        load.await?;
        let last = tally.last_admit_ms.load(Ordering::Relaxed);
        let disabled: u64 = gws
            .iter()
            .map(|g| g.metrics().denied_for(DenyKind::Disabled))
            .sum();
        eprintln!(
            "disable: acknowledged at {t_ack} ms, last admission began at {last} ms \
             ({} ms after), disabled denials {disabled}",
            last as i64 - t_ack as i64
        );
        ensure!(
            last <= t_ack + 1000,
            "admitted {} ms after the disable",
            last - t_ack
        );
        ensure!(
            gws.iter()
                .all(|g| g.metrics().denied_for(DenyKind::Disabled) > 0),
            "some gateway never saw the key disabled"
        );
        for gw in &gws {
            gw.shutdown().await;
        }
        Ok(())
    }
    .await;
    cluster.finish(result);
}

// Property: killing the leader mid-run reaches no caller while leases last, and the
// invariant holds.
// Set-up: 3 nodes; plan limit L = 200,000; 4 gateways x 2 workers, each worker about
// 500 requests/s; leases of 10 s sized for 4 s of demand. After 2 s the leader is killed
// with SIGKILL; the load runs 8 s in total; then the gateways shut down.
// Pass: no denial at all (no `Unavailable`, no other reason); the cluster's `used` is at
// least the committed count (nothing admitted went uncounted) and at most L.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_kill_reaches_no_caller() {
    let mut cluster = Cluster::start(3, ClusterOpts::default())
        .await
        .expect("cluster starts");
    let result = async {
        const L: u64 = 200_000;
        let clients = cluster.clients();
        let (plan, key, secret) = plan_and_key(&clients, "failover", L).await?;
        let gws = gateways(&cluster, 4, |c| {
            c.lease_ttl = Duration::from_secs(10);
            c.renew_before = Duration::from_secs(3);
            c.lease_horizon = Duration::from_secs(4);
            c.refill_ahead = Duration::from_secs(2);
            c.batch_retry_deadline = Duration::from_secs(6);
            c.max_wait = Duration::from_secs(3);
        })
        .await?;
        let tally = Arc::new(Tally::default());
        let start = Instant::now();
        let mut tasks = Vec::new();
        for gw in &gws {
            for _ in 0..2 {
                let gw = gw.clone();
                let secret = secret.clone();
                let tally = tally.clone();
                tasks.push(tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_millis(2));
                    while start.elapsed() < Duration::from_secs(8) {
                        tick.tick().await;
                        match gw.check(secret.as_bytes(), API, STAGE, ROUTE, 1).await {
                            Decision::Allow(p) => {
                                p.commit();
                                tally.committed.fetch_add(1, Ordering::Relaxed);
                            }
                            Decision::Deny(d) => {
                                if d.reason == DenyReason::Unavailable {
                                    tally.unavailable.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    tally.denied_other.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                }));
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let leader = cluster.leader().await.ok_or_else(|| anyhow!("no leader"))?;
        cluster.kill9(leader)?;
        let killed_at = start.elapsed();
        for t in tasks {
            t.await?;
        }
        for gw in &gws {
            gw.shutdown().await;
        }
        let survivors: Vec<NodeClient> = cluster
            .clients()
            .into_iter()
            .filter(|c| c.id != leader)
            .collect();
        let usage = ops::usage(&survivors, &plan, &key, false, DEADLINE).await?;
        let committed = tally.committed.load(Ordering::Relaxed);
        let unavailable = tally.unavailable.load(Ordering::Relaxed);
        let other = tally.denied_other.load(Ordering::Relaxed);
        let m = gws[0].metrics();
        eprintln!(
            "failover: killed node {leader} at {killed_at:?}; committed={committed} used={} \
             reserved={} unavailable={unavailable} other={other}; gw0 metrics {m:?}",
            usage.used, usage.reserved
        );
        ensure!(unavailable == 0 && other == 0, "callers saw denials");
        ensure!(
            usage.used + usage.reserved >= committed,
            "admitted more than counted"
        );
        ensure!(usage.used <= L, "used past the limit");
        Ok(())
    }
    .await;
    cluster.finish(result);
}

/// Admissions per 1-second window: (largest count over every sliding window, count of each
/// aligned whole second `[k, k+1)` for k = 1 .. `seconds`). `times_us` are µs since the
/// origin.
fn windows(times_us: &mut [u64], seconds: u64) -> (usize, Vec<usize>) {
    times_us.sort_unstable();
    // The busiest sliding window starts at an admission.
    let max = (0..times_us.len())
        .map(|i| times_us[i..].partition_point(|&t| t < times_us[i] + 1_000_000))
        .max()
        .unwrap_or(0);
    let aligned = (1..seconds)
        .map(|k| {
            times_us
                .iter()
                .filter(|&&t| (k * 1_000_000..(k + 1) * 1_000_000).contains(&t))
                .count()
        })
        .collect();
    (max, aligned)
}

// Property: a throttle (rate R, burst B) holds across all gateways together, to the bound
// the crate documents: in every sliding 1-second window, admissions <= B + R x (1 + pool
// lifetime); and it is not starved: every aligned whole second after the first admits at
// least 80% of R. The same for a route throttle, which overrides the plan's throttle on
// its route.
// Set-up: 3 nodes; a plan with throttle R = 40/s, B = 10, and route throttle
// "GET /slow" R = 20/s, B = 5; quota far above (2^40); one key; 8 gateways (default
// config: pool lifetime 250 ms, chunks of 50 ms of rate) x 2 workers per route, each
// checking in a loop for 5 s (demand far above R: a denied worker pauses 2 ms); the time
// of every admission is recorded from one monotonic origin.
// Pass: plan route max sliding window <= 10 + 40 x 1.25 = 60, each of seconds 1..4 >= 32;
// "GET /slow" max <= 5 + 20 x 1.25 = 30, each of seconds 1..4 >= 16; every denial is
// `Throttled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttles_hold_across_eight_gateways_within_the_documented_bound() {
    let cluster = Cluster::start(3, ClusterOpts::default())
        .await
        .expect("cluster starts");
    let result = async {
        const R: f64 = 40.0;
        const B: u64 = 10;
        const R_SLOW: f64 = 20.0;
        const B_SLOW: u64 = 5;
        const SLOW: &str = "GET /slow";
        const SECONDS: u64 = 5;
        let clients = cluster.clients();
        let mut spec = ops::plan_spec("throttled", 1 << 40);
        spec.throttle = Some(v1::Throttle {
            rate_limit: R,
            burst_limit: B,
        });
        spec.route_throttles = [(
            SLOW.to_owned(),
            v1::Throttle {
                rate_limit: R_SLOW,
                burst_limit: B_SLOW,
            },
        )]
        .into();
        let req = v1::CreatePlanRequest {
            request_id: request_id(),
            spec: Some(spec),
        };
        let plan = retry(&clients, 0, DEADLINE, |mut c| {
            let req = req.clone();
            async move { c.admin.create_plan(req).await }
        })
        .await?
        .plan
        .ok_or_else(|| anyhow!("no plan"))?
        .id;
        let req = v1::CreateKeyRequest {
            request_id: request_id(),
            spec: Some(v1::KeySpec {
                name: "throttled-key".into(),
                ..Default::default()
            }),
        };
        let reply = retry(&clients, 0, DEADLINE, |mut c| {
            let req = req.clone();
            async move { c.admin.create_key(req).await }
        })
        .await?;
        let key = reply.key.ok_or_else(|| anyhow!("no key"))?.id;
        ops::attach(&clients, &plan, &key, DEADLINE).await?;
        let secret = reply.secret;
        let gws = gateways(&cluster, 8, |_| {}).await?;
        let lifetime = ClientConfig::new(vec![], "x")
            .throttle_pool_ttl
            .as_secs_f64();

        let admitted: Arc<[Mutex<Vec<u64>>; 2]> = Arc::new([Mutex::default(), Mutex::default()]);
        let other_denials = Arc::new(AtomicU64::new(0));
        let throttled = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let run_for = Duration::from_secs(SECONDS);
        let mut tasks = Vec::new();
        for gw in &gws {
            for (which, route) in [(0usize, ROUTE), (1, SLOW), (0, ROUTE), (1, SLOW)] {
                let (gw, secret) = (gw.clone(), secret.clone());
                let (admitted, other, throttled) =
                    (admitted.clone(), other_denials.clone(), throttled.clone());
                tasks.push(tokio::spawn(async move {
                    while start.elapsed() < run_for {
                        match gw.check(secret.as_bytes(), API, STAGE, route, 1).await {
                            Decision::Allow(p) => {
                                let at = start.elapsed().as_micros() as u64;
                                p.commit();
                                admitted[which].lock().unwrap().push(at);
                            }
                            Decision::Deny(d) => {
                                if matches!(d.reason, DenyReason::Throttled { .. }) {
                                    throttled.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    other.fetch_add(1, Ordering::Relaxed);
                                }
                                tokio::time::sleep(Duration::from_millis(2)).await;
                            }
                        }
                    }
                }));
            }
        }
        for t in tasks {
            t.await?;
        }
        let m = gws[0].metrics();
        for gw in &gws {
            gw.shutdown().await;
        }
        let mut failures = Vec::new();
        for (which, name, rate, burst) in [(0, ROUTE, R, B), (1, SLOW, R_SLOW, B_SLOW)] {
            let mut times = admitted[which].lock().unwrap().clone();
            let total = times.len();
            let (max, aligned) = windows(&mut times, SECONDS);
            let bound = burst as f64 + rate * (1.0 + lifetime);
            let min = aligned.iter().copied().min().unwrap_or(0);
            eprintln!(
                "throttle {name}: R={rate} B={burst} total={total} in {SECONDS} s; max \
                 sliding 1 s window={max} (bound {bound}); aligned seconds 1..{SECONDS}: \
                 {aligned:?} (min {min}, {:.0}% of R)",
                min as f64 * 100.0 / rate
            );
            if max as f64 > bound {
                failures.push(format!("{name}: {max} in one second > bound {bound}"));
            }
            if (min as f64) < 0.8 * rate {
                failures.push(format!(
                    "{name}: only {min} in a whole second < 80% of {rate}"
                ));
            }
        }
        eprintln!(
            "throttled denials {}, other denials {}; gw0 metrics {m:?}",
            throttled.load(Ordering::Relaxed),
            other_denials.load(Ordering::Relaxed)
        );
        ensure!(failures.is_empty(), "{failures:?}");
        ensure!(
            other_denials.load(Ordering::Relaxed) == 0,
            "denials other than throttled"
        );
        Ok(())
    }
    .await;
    cluster.finish(result);
}

// Property: with the whole cluster unreachable and the leases run out, a gateway admits at
// the plan's safe rate and no more, a plan whose safe rate is 0 denies, and the gateway
// counts what it admitted that way per (plan, key); when the cluster is back, it reports
// that to the cluster, which adds it to the key's usage exactly once: a second outage and
// reconnect add only what was admitted during the second outage.
// Set-up: 3 nodes; plan "safe" with safe_rate 4/s and plan "strict" with the default 0,
// one key each; one gateway with 1 s leases warms both keys up and returns its leases
// (the cluster's `used` of the safe key is then U0), then every node is stopped. After the
// leases' deadlines pass, 4 workers hammer both keys for 3 s (N admitted on "safe"). Every
// node is restarted; once the gateway has nothing pending, the nodes are stopped again,
// 2 workers hammer the safe key for 2 s (M admitted), and the nodes are restarted again.
// Pass: N between 1 and burst + rate x 3 s = 4 + 12 = 16 (the local GCRA's bound);
// "strict" admits nothing; `admitted_unreachable` and `offline_pending` equal N while the
// cluster is down; after the first restart the cluster's `used` of the safe key is exactly
// U0 + N, after the second exactly U0 + N + M (nothing reported twice); the gateway's
// `offline_reported` is N, then N + M, and nothing was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreachable_cluster_admits_at_the_safe_rate_and_reports_it_once() {
    let mut cluster = Cluster::start(3, ClusterOpts::default())
        .await
        .expect("cluster starts");
    let result = async {
        let clients = cluster.clients();
        let mut spec = ops::plan_spec("safe", 100_000);
        spec.safe_rate = 4.0;
        let req = v1::CreatePlanRequest {
            request_id: request_id(),
            spec: Some(spec),
        };
        let safe_plan = retry(&clients, 0, DEADLINE, |mut c| {
            let req = req.clone();
            async move { c.admin.create_plan(req).await }
        })
        .await?
        .plan
        .ok_or_else(|| anyhow!("no plan"))?
        .id;
        let safe_key = ops::create_key(&clients, "safe-key", DEADLINE).await?;
        ops::attach(&clients, &safe_plan, &safe_key, DEADLINE).await?;
        let safe_secret = {
            let req = v1::RotateKeyRequest {
                request_id: request_id(),
                key: Some(v1::KeySelector {
                    by: Some(v1::key_selector::By::Id(safe_key.clone())),
                }),
                grace_period_ms: 0,
            };
            retry(&clients, 0, DEADLINE, |mut c| {
                let req = req.clone();
                async move { c.admin.rotate_key(req).await }
            })
            .await?
            .secret
        };
        let (_, _, strict_secret) = plan_and_key(&clients, "strict", 100_000).await?;
        let gws = gateways(&cluster, 1, |c| {
            c.lease_ttl = Duration::from_secs(1);
            c.lease_safety_margin = Duration::from_millis(200);
            c.renew_before = Duration::from_millis(300);
            c.batch_retry_deadline = Duration::from_millis(500);
            c.max_wait = Duration::from_millis(200);
        })
        .await?;
        let gw = &gws[0];
        for secret in [&safe_secret, &strict_secret] {
            match gw.check(secret.as_bytes(), API, STAGE, ROUTE, 1).await {
                Decision::Allow(p) => p.commit(),
                Decision::Deny(d) => return Err(anyhow!("warm-up denied: {:?}", d.reason)),
            }
        }
        // The idle lease goes back to the cluster (spent part counted): U0 is then final.
        let u0 = settled_usage(&clients, &safe_plan, &safe_key, None).await?;
        eprintln!("before the outage: used {u0}");

        cluster.stop_all().await?;
        // Past every lease deadline (1 s TTL from the last renewal).
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let before = gw.metrics().admitted_unreachable;
        let admitted_safe = Arc::new(AtomicU64::new(0));
        let admitted_strict = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..4 {
            let gw = gw.clone();
            let (secret, counter) = if w % 2 == 0 {
                (safe_secret.clone(), admitted_safe.clone())
            } else {
                (strict_secret.clone(), admitted_strict.clone())
            };
            tasks.push(tokio::spawn(hammer(
                gw,
                secret,
                counter,
                start,
                Duration::from_secs(3),
            )));
        }
        for t in tasks {
            t.await?;
        }
        let safe = admitted_safe.load(Ordering::Relaxed);
        let strict = admitted_strict.load(Ordering::Relaxed);
        let m = gw.metrics();
        let counted = m.admitted_unreachable - before;
        eprintln!(
            "unreachable: safe plan admitted {safe}, strict plan {strict}, metric {counted}, \
             pending {}",
            m.offline_pending
        );
        ensure!(
            (1..=16).contains(&safe),
            "safe plan admitted {safe}, outside 1..=16"
        );
        ensure!(
            strict == 0,
            "the strict plan admitted {strict} with the cluster down"
        );
        ensure!(counted == safe, "metric {counted} != admitted {safe}");
        ensure!(
            m.offline_pending == safe,
            "pending {} != admitted {safe}",
            m.offline_pending
        );

        // Back: the gateway reports what it admitted, and the cluster counts it exactly.
        restart_all(&mut cluster).await?;
        wait_reported(gw, safe).await?;
        let used = settled_usage(&clients, &safe_plan, &safe_key, Some(u0 + safe)).await?;
        ensure!(
            used == u0 + safe,
            "after the first reconnect the cluster counts {used}, not {u0} + {safe}"
        );

        // A second outage and reconnect: only what it admitted is added.
        cluster.stop_all().await?;
        let again = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                tokio::spawn(hammer(
                    gw.clone(),
                    safe_secret.clone(),
                    again.clone(),
                    start,
                    Duration::from_secs(2),
                ))
            })
            .collect();
        for t in tasks {
            t.await?;
        }
        let second = again.load(Ordering::Relaxed);
        eprintln!("second outage: safe plan admitted {second}");
        ensure!(
            second >= 1,
            "nothing admitted at the safe rate in the second outage"
        );
        restart_all(&mut cluster).await?;
        wait_reported(gw, safe + second).await?;
        let total = u0 + safe + second;
        let used = settled_usage(&clients, &safe_plan, &safe_key, Some(total)).await?;
        ensure!(
            used == total,
            "after the second reconnect the cluster counts {used}, not {u0} + {safe} + {second}"
        );
        let m = gw.metrics();
        ensure!(m.offline_refused == 0, "refused {}", m.offline_refused);
        eprintln!("reconnected twice: used {used}; gw metrics {m:?}");
        Ok(())
    }
    .await;
    cluster.finish(result);
}

/// Checks `secret` in a loop until `run_for` has passed since `start`, counting admissions.
async fn hammer(
    gw: Client,
    secret: String,
    admitted: Arc<AtomicU64>,
    start: Instant,
    run_for: Duration,
) {
    while start.elapsed() < run_for {
        match gw.check(secret.as_bytes(), API, STAGE, ROUTE, 1).await {
            Decision::Allow(p) => {
                p.commit();
                admitted.fetch_add(1, Ordering::Relaxed);
            }
            Decision::Deny(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Starts every node again and waits for a leader.
async fn restart_all(cluster: &mut Cluster) -> anyhow::Result<()> {
    for id in cluster.ids() {
        cluster.restart(id)?;
    }
    cluster.wait_for_leader(DEADLINE).await?;
    Ok(())
}

/// Waits until the gateway has nothing pending and the cluster acknowledged `reported` cost
/// units in all.
async fn wait_reported(gw: &Client, reported: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let m = gw.metrics();
        if m.offline_pending == 0 && m.offline_reported == reported {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "not reported within {DEADLINE:?}: pending {}, reported {} (want {reported}), \
             reports {}, failures {}",
            m.offline_pending,
            m.offline_reported,
            m.offline_reports,
            m.offline_report_failures
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The cluster's `used` of (plan, key) once no lease holds anything (and, when given, once
/// it equals `want`; else the last value is answered when the deadline passes).
async fn settled_usage(
    clients: &[NodeClient],
    plan: &str,
    key: &str,
    want: Option<u64>,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let u = ops::usage(clients, plan, key, false, DEADLINE).await?;
        let settled = u.reserved == 0 && want.is_none_or(|w| u.used == w);
        if settled || Instant::now() > deadline {
            ensure!(u.reserved == 0, "{} still reserved", u.reserved);
            return Ok(u.used);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
