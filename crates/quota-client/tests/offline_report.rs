//! The offline report against a scripted Gateway server (no cluster): a report that is not
//! answered is sent again as it was, and only what the answer acknowledges or refuses leaves
//! the gateway's count. The real cluster's side is in `tests/cluster.rs`.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use quota_client::{Client, ClientConfig, Decision};
use quota_proto::v1;
use quota_proto::v1::gateway_server::{Gateway, GatewayServer};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

const SECRET: &str = "qdk_offline-report-test-secret-0123456789abcdef";

/// What the scripted server saw and how it answers.
#[derive(Default)]
struct Script {
    /// Every ReportOfflineUsage request received, answered or not.
    reports: Mutex<Vec<v1::ReportOfflineUsageRequest>>,
    /// Until set, reports are recorded and answered UNAVAILABLE (as if the answer was lost).
    reports_up: AtomicBool,
    /// Reports answered so far.
    answered: AtomicUsize,
    /// Keeps the watch stream open.
    watch_tx: Mutex<Vec<tokio::sync::mpsc::Sender<Result<v1::WatchEvent, Status>>>>,
}

struct Mock(Arc<Script>);

fn plan(id: &str, stage: &str, safe_rate: f64) -> v1::UsagePlan {
    v1::UsagePlan {
        id: id.into(),
        spec: Some(v1::PlanSpec {
            name: format!("plan-{id}"),
            stages: vec![v1::ApiStage {
                api: "orders".into(),
                stage: stage.into(),
            }],
            quota: Some(v1::Quota {
                limit: 1_000,
                period: v1::Period::Month.into(),
                ..Default::default()
            }),
            safe_rate,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Gateway for Mock {
    // The cluster is down for leases throughout: the gateway admits at the safe rate.
    async fn leases(
        &self,
        _: Request<v1::LeasesRequest>,
    ) -> Result<Response<v1::LeasesResponse>, Status> {
        Err(Status::unavailable("scripted: no leader"))
    }

    async fn lookup_key(
        &self,
        _: Request<v1::LookupKeyRequest>,
    ) -> Result<Response<v1::LookupKeyResponse>, Status> {
        let attached = |plan: &str| v1::Association {
            plan_id: plan.into(),
            key_id: "k1".into(),
            ..Default::default()
        };
        Ok(Response::new(v1::LookupKeyResponse {
            key: Some(v1::GatewayKey {
                key: Some(v1::ApiKey {
                    id: "k1".into(),
                    enabled: true,
                    ..Default::default()
                }),
                hash_valid_until: 0,
                plans: vec![attached("p1"), attached("p2")],
            }),
        }))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::WatchEvent, Status>> + Send>>;

    async fn watch(
        &self,
        _: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        use v1::watch_event::Event;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        // p1 opts into the safe rate; p2 (another stage) does not: only the client's own
        // default admits there, and the cluster refuses to record that.
        for event in [
            Event::PlanUpserted(plan("p1", "prod", 1000.0)),
            Event::PlanUpserted(plan("p2", "dev", 0.0)),
            Event::Synced(v1::Synced {}),
        ] {
            let ev = v1::WatchEvent {
                revision: 1,
                event: Some(event),
            };
            tx.send(Ok(ev))
                .await
                .map_err(|_| Status::internal("closed"))?;
        }
        self.0
            .watch_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn throttle(
        &self,
        _: Request<v1::ThrottleRequest>,
    ) -> Result<Response<v1::ThrottleResponse>, Status> {
        Err(Status::unavailable("scripted: no leader"))
    }

    async fn report_offline_usage(
        &self,
        request: Request<v1::ReportOfflineUsageRequest>,
    ) -> Result<Response<v1::ReportOfflineUsageResponse>, Status> {
        let req = request.into_inner();
        self.0
            .reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(req.clone());
        if !self.0.reports_up.load(Ordering::Acquire) {
            return Err(Status::unavailable("scripted: answer lost"));
        }
        self.0.answered.fetch_add(1, Ordering::AcqRel);
        use v1::offline_usage_result::Result as R;
        let results = req
            .usage
            .iter()
            .map(|u| v1::OfflineUsageResult {
                result: Some(if u.plan_id == "p1" {
                    R::Usage(v1::Usage {
                        plan_id: u.plan_id.clone(),
                        key_id: u.key_id.clone(),
                        used: u.used,
                        ..Default::default()
                    })
                } else {
                    R::Failed(v1::OfflineUsageFailed {
                        code: tonic::Code::NotFound as i32,
                        message: format!("plan {} not found", u.plan_id),
                    })
                }),
            })
            .collect();
        Ok(Response::new(v1::ReportOfflineUsageResponse { results }))
    }
}

/// Checks until `n` requests on `stage` were admitted (within 10 s).
async fn admit(gw: &Client, stage: &str, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut admitted = 0;
    while admitted < n {
        ensure!(
            Instant::now() < deadline,
            "only {admitted} of {n} admitted on {stage}"
        );
        match gw
            .check(SECRET.as_bytes(), "orders", stage, "GET /o", 1)
            .await
        {
            Decision::Allow(p) => {
                p.commit();
                admitted += 1;
            }
            Decision::Deny(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    Ok(())
}

// Property: a report whose answer is lost is sent again with the same request id and the
// same items (so the cluster's deduplication counts it once); the count leaves the gateway
// only as the answer acknowledges (added to usage) or refuses (this mock answers p2 as a
// plan that no longer exists);
// a report made later has a new id.
// Set-up: a scripted server that never grants leases; plan p1 (stage prod, safe rate 1000/s)
// and p2 (stage dev, safe rate 0, admitted at the client's default of 100/s); 5 admissions on
// prod and 2 on dev; reports answered UNAVAILABLE until the test lets them through.
// Pass: at least 2 attempts before the first answer, all with the first attempt's id and
// items; afterwards nothing pending, 5 reported, 2 refused; answered reports have distinct ids
// and carry 5 units of p1 and 2 of p2 in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_reports_are_resent_as_they_were() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let script = Arc::new(Script::default());
    let server = tokio::spawn(tonic::transport::Server::builder().serve_with_incoming(
        GatewayServer::new(Mock(script.clone())),
        tokio_stream::wrappers::TcpListenerStream::new(listener),
    ));
    let mut cfg = ClientConfig::new(vec![format!("http://{addr}")], "gw-offline");
    cfg.batch_retry_deadline = Duration::from_millis(100);
    cfg.max_wait = Duration::from_millis(100);
    cfg.safe_rate = 100.0;
    let gw = Client::connect(cfg).await.context("connects to the mock")?;

    admit(&gw, "prod", 5).await?;
    admit(&gw, "dev", 2).await?;
    let m = gw.metrics();
    ensure!(!gw.cluster_reachable(), "leases fail: unreachable");
    ensure!(m.offline_pending == 7, "pending {}", m.offline_pending);

    // Let at least two attempts fail (the reporter probes every second while pending).
    let deadline = Instant::now() + Duration::from_secs(10);
    while script
        .reports
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .len()
        < 2
    {
        ensure!(Instant::now() < deadline, "no report attempts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    script.reports_up.store(true, Ordering::Release);
    loop {
        let m = gw.metrics();
        if m.offline_pending == 0 {
            ensure!(m.offline_reported == 5, "reported {}", m.offline_reported);
            ensure!(m.offline_refused == 2, "refused {}", m.offline_refused);
            // Not asserted: `cluster_reachable()`. An answered report sets it, but this mock
            // keeps refusing leases, and a failed lease batch clears it again at any moment.
            break;
        }
        ensure!(Instant::now() < deadline, "still pending: {m:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let reports = script
        .reports
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let answered = script.answered.load(Ordering::Acquire);
    let (lost, rest) = reports.split_at(reports.len() - answered);
    ensure!(lost.len() >= 2, "{} unanswered attempts", lost.len());
    let first = &lost[0];
    ensure!(first.request_id.len() == 16, "a request id of 16 bytes");
    for r in lost.iter().chain(rest.first()) {
        ensure!(
            r.request_id == first.request_id && r.usage == first.usage,
            "a resent report changed: {r:?} vs {first:?}"
        );
    }
    let mut ids: Vec<&[u8]> = rest.iter().map(|r| r.request_id.as_slice()).collect();
    ids.dedup();
    ensure!(ids.len() == rest.len(), "answered reports reuse an id");
    let sum = |plan: &str| -> u64 {
        rest.iter()
            .flat_map(|r| &r.usage)
            .filter(|u| u.plan_id == plan)
            .map(|u| u.used)
            .sum()
    };
    ensure!(
        sum("p1") == 5 && sum("p2") == 2,
        "answered reports carry {} + {}",
        sum("p1"),
        sum("p2")
    );

    let report = gw.shutdown().await;
    ensure!(report.offline_unreported == 0, "{report:?}");
    server.abort();
    Ok(())
}
