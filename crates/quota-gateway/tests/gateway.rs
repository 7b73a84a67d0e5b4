//! quota-gateway against real processes: a `quotad` cluster (the `quota-blackbox`
//! fixture), a real upstream HTTP server (hyper, in this process, port 0), and the gateway
//! (the `quota-gateway` binary, or the library's `serve` on port 0).
//! Run: `cargo test -p quota-gateway --test gateway`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, ensure};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use quota_blackbox::ops::{self, request_id, retry};
use quota_blackbox::{Cluster, ClusterOpts, NodeClient};
use quota_gateway::{GatewayConfig, RouteSpec, serve};
use quota_proto::v1;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const DEADLINE: Duration = Duration::from_secs(20);

/// The upstream: `/fail...` answers 500; `POST` echoes the body; anything else answers
/// 200 with `METHOD PATH`. It reports whether it saw a key header (`x-saw-key`) and
/// counts the requests it served.
async fn upstream() -> anyhow::Result<(SocketAddr, Arc<AtomicU64>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let count = count.clone();
                    async move {
                        count.fetch_add(1, Ordering::Relaxed);
                        let saw_key = req.headers().contains_key("x-api-key")
                            || req.uri().query().is_some_and(|q| q.contains("api_key"));
                        let hop = req.headers().contains_key("x-hop");
                        let line = format!("{} {}", req.method(), req.uri().path());
                        let failing = req.uri().path().starts_with("/fail");
                        let body = if req.method() == hyper::Method::POST {
                            req.into_body().collect().await?.to_bytes()
                        } else {
                            Bytes::from(line)
                        };
                        let mut r = Response::new(Full::new(body));
                        if failing {
                            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        r.headers_mut()
                            .insert("x-saw-key", if saw_key { "yes" } else { "no" }.parse()?);
                        r.headers_mut()
                            .insert("x-saw-hop", if hop { "yes" } else { "no" }.parse()?);
                        Ok::<_, anyhow::Error>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((addr, served))
}

fn endpoints(cluster: &Cluster) -> Vec<String> {
    cluster
        .ids()
        .into_iter()
        .map(|id| format!("http://{}", cluster.addr(id)))
        .collect()
}

fn route(method: &str, path: &str, private: bool) -> RouteSpec {
    RouteSpec {
        method: method.into(),
        path: path.into(),
        private,
        cost: 1,
    }
}

fn config(cluster: &Cluster, upstream: SocketAddr) -> GatewayConfig {
    GatewayConfig {
        upstream: format!("http://{upstream}"),
        endpoints: endpoints(cluster),
        api: "orders".into(),
        stage: "prod".into(),
        key_query: Some("api_key".into()),
        routes: vec![
            route("GET", "/orders/{id}", true),
            route("POST", "/echo", true),
            route("GET", "/fail/{id}", true),
            route("GET", "/health", false),
        ],
        ..Default::default()
    }
}

/// The library's `serve` on port 0; answers its address and a handle that shuts it down.
struct InProcess {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), quota_gateway::GatewayError>>,
}

impl InProcess {
    async fn start(config: GatewayConfig) -> anyhow::Result<InProcess> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(serve(config, listener, async {
            let _ = rx.await;
        }));
        // Ready when it answers (it connects to the cluster first).
        let http = http_client();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            ensure!(!task.is_finished(), "the gateway stopped while starting");
            if get(&http, addr, "/nowhere", None).await.is_ok() {
                break;
            }
            ensure!(tokio::time::Instant::now() < deadline, "gateway not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(InProcess {
            addr,
            stop: Some(tx),
            task,
        })
    }

    /// Shuts down (the client returns its unused tokens) and waits for it.
    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .context("gateway shutdown timed out")???;
        Ok(())
    }
}

type Http = HttpClient<HttpConnector, Full<Bytes>>;

fn http_client() -> Http {
    HttpClient::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// One answer: status, headers, body text.
struct Answer {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn error_kind(&self) -> Option<&str> {
        let rest = self.body.split("\"error\":\"").nth(1)?;
        rest.split('"').next()
    }
}

async fn send(
    http: &Http,
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Bytes,
) -> anyhow::Result<Answer> {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "1");
    if let Some(k) = key {
        b = b.header("x-api-key", k);
    }
    let resp = http.request(b.body(Full::new(body))?).await?;
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await?.to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

async fn get(
    http: &Http,
    addr: SocketAddr,
    path: &str,
    key: Option<&str>,
) -> anyhow::Result<Answer> {
    send(http, addr, "GET", path, key, Bytes::new()).await
}

/// Creates a key (optionally expiring at `expires_at` ms); answers (key id, secret).
async fn key(
    clients: &[NodeClient],
    name: &str,
    expires_at: u64,
) -> anyhow::Result<(String, String)> {
    let req = v1::CreateKeyRequest {
        request_id: request_id(),
        spec: Some(v1::KeySpec {
            name: name.into(),
            expires_at,
            ..Default::default()
        }),
    };
    let reply = retry(clients, 0, DEADLINE, |mut c| {
        let req = req.clone();
        async move { c.admin.create_key(req).await }
    })
    .await?;
    Ok((reply.key.ok_or_else(|| anyhow!("no key"))?.id, reply.secret))
}

async fn plan(clients: &[NodeClient], spec: v1::PlanSpec) -> anyhow::Result<String> {
    let req = v1::CreatePlanRequest {
        request_id: request_id(),
        spec: Some(spec),
    };
    Ok(retry(clients, 0, DEADLINE, |mut c| {
        let req = req.clone();
        async move { c.admin.create_plan(req).await }
    })
    .await?
    .plan
    .ok_or_else(|| anyhow!("no plan"))?
    .id)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// Property: the `quota-gateway` binary passes an admitted request through (status, body,
// a streamed 256 KiB POST body) with the five rate-limit headers; it removes the key and
// hop-by-hop headers before the upstream; public routes need no key; unknown routes get
// a JSON 404; the check endpoint answers 200/403 without proxying.
// Set-up: 1 node; plan (orders/prod, limit 10^6) with one key; the upstream; the binary
// started from a TOML file with `--listen 127.0.0.1:0` (the address read from stdout).
// Pass: every answer as stated; X-RateLimit-Limit = 10^6 and Remaining < 10^6; the
// upstream served exactly the proxied requests (not the checks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_passes_through_with_headers() {
    let cluster = Cluster::start(1, ClusterOpts::default())
        .await
        .expect("cluster starts");
    let result = async {
        let clients = cluster.clients();
        // Large enough that no lease holds all of it (see the quota boundary test).
        const LIMIT: u64 = 1_000_000;
        let (k2, secret) = key(&clients, "pass-key", 0).await?;
        let plan_id = ops::create_plan(&clients, "pass", LIMIT, DEADLINE).await?;
        ops::attach(&clients, &plan_id, &k2, DEADLINE).await?;
        let (up, served) = upstream().await?;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("gateway.toml");
        std::fs::write(
            &file,
            format!(
                r#"
upstream = "http://{up}"
endpoints = {:?}
api = "orders"
stage = "prod"
[[routes]]
method = "GET"
path = "/orders/{{id}}"
[[routes]]
method = "POST"
path = "/echo"
[[routes]]
method = "GET"
path = "/health"
private = false
"#,
                endpoints(&cluster)
            ),
        )?;
        let mut child = GatewayProcess::spawn(&file)?;
        let addr = child.addr;
        let http = http_client();

        let a = get(&http, addr, "/orders/7", Some(&secret)).await?;
        ensure!(a.status == StatusCode::OK, "pass-through: {}", a.status);
        ensure!(a.body == "GET /orders/7", "body {:?}", a.body);
        ensure!(a.header("x-saw-key") == Some("no"), "upstream saw the key");
        ensure!(
            a.header("x-saw-hop") == Some("no"),
            "upstream saw a hop-by-hop header"
        );
        ensure!(
            a.header("x-ratelimit-limit") == Some("1000000"),
            "{:?}",
            a.headers
        );
        let remaining: u64 = a
            .header("x-ratelimit-remaining")
            .context("X-RateLimit-Remaining")?
            .parse()?;
        ensure!(remaining < LIMIT, "remaining {remaining}");
        ensure!(a.header("x-ratelimit-reset").is_some(), "X-RateLimit-Reset");
        ensure!(
            a.header("ratelimit-policy") == Some("\"quota\";q=1000000"),
            "RateLimit-Policy {:?}",
            a.header("ratelimit-policy")
        );
        ensure!(
            a.header("ratelimit")
                .is_some_and(|v| v.starts_with(&format!("\"quota\";r={remaining};t="))),
            "RateLimit {:?}",
            a.header("ratelimit")
        );

        let big: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
        let a = send(
            &http,
            addr,
            "POST",
            "/echo",
            Some(&secret),
            Bytes::from(big.clone()),
        )
        .await?;
        ensure!(a.status == StatusCode::OK, "echo: {}", a.status);
        ensure!(
            a.body.as_bytes() == String::from_utf8_lossy(&big).as_bytes(),
            "echo body differs"
        );

        let a = get(&http, addr, "/health", None).await?;
        ensure!(
            a.status == StatusCode::OK && a.body == "GET /health",
            "public route: {}",
            a.status
        );
        let a = get(&http, addr, "/nowhere", Some(&secret)).await?;
        ensure!(
            a.status == StatusCode::NOT_FOUND,
            "unknown route: {}",
            a.status
        );
        ensure!(a.error_kind() == Some("no_route"), "404 body {:?}", a.body);
        ensure!(a.header("content-type") == Some("application/json"));

        let before = served.load(Ordering::Relaxed);
        let a = get(&http, addr, "/_quota/check/orders/9", Some(&secret)).await?;
        ensure!(a.status == StatusCode::OK, "check: {}", a.status);
        ensure!(
            a.header("x-ratelimit-limit") == Some("1000000"),
            "check headers"
        );
        let a = get(&http, addr, "/_quota/check/orders/9", None).await?;
        ensure!(
            a.status == StatusCode::FORBIDDEN,
            "check without key: {}",
            a.status
        );
        ensure!(
            served.load(Ordering::Relaxed) == before,
            "a check reached the upstream"
        );
        ensure!(before == 3, "upstream served {before}, expected 3");
        child.stop();
        Ok(())
    }
    .await;
    cluster.finish(result);
}

/// The gateway binary, killed when dropped.
struct GatewayProcess {
    child: Child,
    addr: SocketAddr,
}

impl GatewayProcess {
    fn spawn(config: &std::path::Path) -> anyhow::Result<GatewayProcess> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quota-gateway"))
            .arg("--config")
            .arg(config)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("first line {line:?}"))?
            .parse()?;
        Ok(GatewayProcess { child, addr })
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

// Property: each key problem is a 403 with its own JSON error kind, and nothing reaches
// the upstream.
// Set-up: 1 node; plan P (orders/prod) with keys `good`, `disabled` (then disabled) and
// `expiring` (expires 1.5 s after creation); plan Q covering orders/test only with key
// `other-stage`; key `lonely` in no plan; the gateway in process.
// Pass: no key -> missing_key; an unknown secret -> invalid_key; disabled -> disabled;
// expiring, after its expiry -> expired; other-stage and lonely -> not_covered; all 403;
// `good` still 200, in the header and in the `api_key` query parameter (which the
// upstream does not see); the upstream served exactly those two requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_problem_is_a_403() {
    let cluster = Cluster::start(1, ClusterOpts::default())
        .await
        .expect("cluster starts");
    let result = async {
        let clients = cluster.clients();
        let p = ops::create_plan(&clients, "p", 1_000_000, DEADLINE).await?;
        let mut spec = ops::plan_spec("q", 1000);
        spec.stages[0].stage = "test".into();
        let q = plan(&clients, spec).await?;
        let (good, good_s) = key(&clients, "good", 0).await?;
        let (disabled, disabled_s) = key(&clients, "disabled", 0).await?;
        let expiry = now_ms() + 1500;
        let (expiring, expiring_s) = key(&clients, "expiring", expiry).await?;
        let (other, other_s) = key(&clients, "other-stage", 0).await?;
        let (_lonely, lonely_s) = key(&clients, "lonely", 0).await?;
        for k in [&good, &disabled, &expiring] {
            ops::attach(&clients, &p, k, DEADLINE).await?;
        }
        ops::attach(&clients, &q, &other, DEADLINE).await?;
        let req = v1::SetKeyEnabledRequest {
            request_id: request_id(),
            key: Some(ops::key(&disabled)),
            enabled: false,
        };
        retry(&clients, 0, DEADLINE, |mut c| {
            let req = req.clone();
            async move { c.admin.set_key_enabled(req).await }
        })
        .await?;
        let (up, served) = upstream().await?;
        let gw = InProcess::start(config(&cluster, up)).await?;
        let http = http_client();
        let cases = [
            (None, "missing_key"),
            (Some("qk_not-a-key-at-all-0123456789abcdef"), "invalid_key"),
            (Some(disabled_s.as_str()), "disabled"),
            (Some(other_s.as_str()), "not_covered"),
            (Some(lonely_s.as_str()), "not_covered"),
        ];
        for (secret, kind) in cases {
            let a = get(&http, gw.addr, "/orders/1", secret).await?;
            ensure!(
                a.status == StatusCode::FORBIDDEN && a.error_kind() == Some(kind),
                "expected 403 {kind}, got {} {:?}",
                a.status,
                a.body
            );
        }
        let wait = expiry.saturating_sub(now_ms()) + 300;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let a = get(&http, gw.addr, "/orders/1", Some(&expiring_s)).await?;
        ensure!(
            a.status == StatusCode::FORBIDDEN && a.error_kind() == Some("expired"),
            "expired key: {} {:?}",
            a.status,
            a.body
        );
        let a = get(&http, gw.addr, "/orders/1", Some(&good_s)).await?;
        ensure!(a.status == StatusCode::OK, "good key: {}", a.status);
        let a = get(
            &http,
            gw.addr,
            &format!("/orders/1?x=1&api_key={good_s}"),
            None,
        )
        .await?;
        ensure!(
            a.status == StatusCode::OK,
            "good key in the query: {}",
            a.status
        );
        ensure!(
            a.header("x-saw-key") == Some("no"),
            "the key parameter reached the upstream"
        );
        ensure!(
            served.load(Ordering::Relaxed) == 2,
            "upstream served a denied request"
        );
        gw.stop().await
    }
    .await;
    cluster.finish(result);
}

// Property: the quota boundary is exact through the gateway, and a refunded 5xx leaves
// the quota untouched.
// Set-up: 1 node; plan limit L = 5 (orders/prod) with one key; the gateway in process
// (default refund_on = 5xx). Requests 300 ms apart: first 3 to `/fail/x` (the upstream
// answers 500), then `/orders/1` until L are admitted, then 3 more; then the gateway
// shuts down (settling its leases).
// Pass: the 500s are passed through; L requests are admitted, each within 5 s (a 429
// before the L-th is tolerated and counted: quota-client answers QuotaExceeded for
// `denial_recheck` (200 ms) after the cluster refuses it a further lease, even while it
// still holds tokens of the current one, and a refund arriving after its lease was
// settled comes back only with the next settlement); every request after the L-th answers 429
// `quota_exceeded` with a positive integer Retry-After and X-RateLimit-Remaining 0; the
// cluster's `used` is exactly L (the 500s were not counted) and nothing stays reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_boundary_is_exact_and_5xx_is_refunded() {
    let cluster = Cluster::start(1, ClusterOpts::default())
        .await
        .expect("cluster starts");
    let result = async {
        const L: u64 = 5;
        // Longer than quota-client's `denial_recheck` (200 ms); see the report on why.
        const SPACING: Duration = Duration::from_millis(300);
        const EARLY_DENIAL_WINDOW: Duration = Duration::from_secs(5);
        let clients = cluster.clients();
        let p = ops::create_plan(&clients, "boundary", L, DEADLINE).await?;
        let (k, secret) = key(&clients, "boundary-key", 0).await?;
        ops::attach(&clients, &p, &k, DEADLINE).await?;
        let (up, _) = upstream().await?;
        let gw = InProcess::start(config(&cluster, up)).await?;
        let http = http_client();
        for i in 0..3 {
            tokio::time::sleep(SPACING).await;
            let a = get(&http, gw.addr, "/fail/x", Some(&secret)).await?;
            ensure!(
                a.status == StatusCode::INTERNAL_SERVER_ERROR,
                "failing request {i}: {} {:?} {:?}",
                a.status,
                a.body,
                a.headers
            );
        }
        let mut early_denials = 0;
        for i in 1..=L {
            let started = std::time::Instant::now();
            loop {
                tokio::time::sleep(SPACING).await;
                let a = get(&http, gw.addr, "/orders/1", Some(&secret)).await?;
                if a.status == StatusCode::OK {
                    break;
                }
                early_denials += 1;
                ensure!(
                    started.elapsed() < EARLY_DENIAL_WINDOW,
                    "request {i} of {L}: {} {:?}",
                    a.status,
                    a.body
                );
            }
        }
        eprintln!("boundary: {early_denials} early denials before the last token");
        for extra in 1..=3 {
            tokio::time::sleep(SPACING).await;
            let a = get(&http, gw.addr, "/orders/1", Some(&secret)).await?;
            ensure!(
                a.status == StatusCode::TOO_MANY_REQUESTS
                    && a.error_kind() == Some("quota_exceeded"),
                "request L+{extra}: {} {:?}",
                a.status,
                a.body
            );
            let retry_after: u64 = a.header("retry-after").context("Retry-After")?.parse()?;
            ensure!(retry_after >= 1, "Retry-After {retry_after}");
            ensure!(
                a.header("x-ratelimit-remaining") == Some("0"),
                "remaining at the boundary {:?}",
                a.header("x-ratelimit-remaining")
            );
        }
        gw.stop().await?;
        let usage = ops::usage(&clients, &p, &k, false, DEADLINE).await?;
        ensure!(usage.used == L, "used {} != {L}", usage.used);
        ensure!(usage.reserved == 0, "reserved {}", usage.reserved);
        Ok(())
    }
    .await;
    cluster.finish(result);
}

// Property: a throttle answers 429 `throttled` with a Retry-After that is enough: after
// waiting that many seconds the same request is admitted.
// Set-up: 1 node; plan with throttle rate 1/s, burst 2, a large quota; one key; the
// gateway in process; requests one after another until the first 429 (at most 10).
// Pass: at least 2 admitted before it; the 429 has Retry-After in 1..=2 (whole seconds,
// rounded up, of at most one token's time); after sleeping Retry-After seconds the next
// request answers 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_429_has_a_correct_retry_after() {
    let cluster = Cluster::start(1, ClusterOpts::default())
        .await
        .expect("cluster starts");
    let result = async {
        let clients = cluster.clients();
        let mut spec = ops::plan_spec("throttled", 1 << 30);
        spec.throttle = Some(v1::Throttle {
            rate_limit: 1.0,
            burst_limit: 2,
        });
        let p = plan(&clients, spec).await?;
        let (k, secret) = key(&clients, "throttled-key", 0).await?;
        ops::attach(&clients, &p, &k, DEADLINE).await?;
        let (up, _) = upstream().await?;
        let gw = InProcess::start(config(&cluster, up)).await?;
        let http = http_client();
        let mut admitted = 0;
        let mut denial = None;
        for _ in 0..10 {
            let a = get(&http, gw.addr, "/orders/1", Some(&secret)).await?;
            if a.status == StatusCode::OK {
                admitted += 1;
            } else {
                denial = Some(a);
                break;
            }
        }
        let a = denial.context("never throttled")?;
        ensure!(
            a.status == StatusCode::TOO_MANY_REQUESTS && a.error_kind() == Some("throttled"),
            "{} {:?}",
            a.status,
            a.body
        );
        ensure!(
            admitted >= 2,
            "only {admitted} admitted before the throttle"
        );
        let retry_after: u64 = a.header("retry-after").context("Retry-After")?.parse()?;
        ensure!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
        tokio::time::sleep(Duration::from_secs(retry_after)).await;
        let a = get(&http, gw.addr, "/orders/1", Some(&secret)).await?;
        ensure!(
            a.status == StatusCode::OK,
            "after Retry-After: {} {:?}",
            a.status,
            a.body
        );
        gw.stop().await
    }
    .await;
    cluster.finish(result);
}

/// An upstream that keeps connections alive and never answers under `/hang` (it waits a
/// minute); anything else answers 200 with `METHOD PATH`.
async fn hanging_upstream() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    if req.uri().path().starts_with("/hang") {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    let line = format!("{} {}", req.method(), req.uri().path());
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(line))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// An upstream that closes every connection after one answer (`Connection: close`), and
/// counts the connections it accepted.
async fn closing_upstream() -> anyhow::Result<(SocketAddr, Arc<AtomicU64>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let line = format!("{} {}", req.method(), req.uri().path());
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(line))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((addr, accepted))
}

// Property: the gateway's connection to the upstream is made again when the upstream closes
// it or a request on it timed out, and an unreachable or silent upstream is a 502 or 504
// whose permit is refunded.
// Set-up: 1 node; plan (orders/prod, limit 100) with one key. (a) An upstream that closes
// every connection after one answer; the gateway in process; 5 keyed requests one after
// another on one client connection. (b) A gateway whose upstream port has no listener;
// 3 keyed requests. (c) A kept-alive upstream that never answers `/hang/...`, a gateway
// with a 300 ms upstream timeout; on one client connection `/hang/1`, then `/orders/7`,
// twice. The gateways shut down at the end of each part (settling their leases).
// Pass: (a) all 5 answer 200 with the upstream's body, and the upstream accepted 5
// connections; (b) each answers 502 `upstream_unavailable`; (c) each `/hang/1` answers 504
// `upstream_timeout` and the `/orders/7` after it 200 with its own body (not stuck behind
// the unanswered request); the cluster's `used` is exactly 7 (the 502s and 504s were
// refunded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reconnects_and_unreachable_is_refunded() {
    let cluster = Cluster::start(1, ClusterOpts::default())
        .await
        .expect("cluster starts");
    let result = async {
        let clients = cluster.clients();
        let p = ops::create_plan(&clients, "reconnect", 100, DEADLINE).await?;
        let (k, secret) = key(&clients, "reconnect-key", 0).await?;
        ops::attach(&clients, &p, &k, DEADLINE).await?;
        let http = http_client();

        let (up, accepted) = closing_upstream().await?;
        let gw = InProcess::start(config(&cluster, up)).await?;
        for i in 0..5 {
            let a = get(&http, gw.addr, "/orders/7", Some(&secret)).await?;
            ensure!(
                a.status == StatusCode::OK && a.body == "GET /orders/7",
                "request {i}: {} {:?}",
                a.status,
                a.body
            );
        }
        ensure!(
            accepted.load(Ordering::Relaxed) == 5,
            "the upstream accepted {} connections for 5 requests",
            accepted.load(Ordering::Relaxed)
        );
        gw.stop().await?;

        let closed = TcpListener::bind("127.0.0.1:0").await?;
        let nowhere = closed.local_addr()?;
        drop(closed);
        let gw = InProcess::start(config(&cluster, nowhere)).await?;
        for i in 0..3 {
            let a = get(&http, gw.addr, "/orders/7", Some(&secret)).await?;
            ensure!(
                a.status == StatusCode::BAD_GATEWAY
                    && a.error_kind() == Some("upstream_unavailable"),
                "request {i} to a closed port: {} {:?}",
                a.status,
                a.body
            );
        }
        gw.stop().await?;

        let silent = hanging_upstream().await?;
        let mut cfg = config(&cluster, silent);
        cfg.routes.push(route("GET", "/hang/{id}", true));
        cfg.upstream_timeout_ms = 300;
        let gw = InProcess::start(cfg).await?;
        for round in 0..2 {
            let a = get(&http, gw.addr, "/hang/1", Some(&secret)).await?;
            ensure!(
                a.status == StatusCode::GATEWAY_TIMEOUT
                    && a.error_kind() == Some("upstream_timeout"),
                "round {round}, /hang/1: {} {:?}",
                a.status,
                a.body
            );
            let a = get(&http, gw.addr, "/orders/7", Some(&secret)).await?;
            ensure!(
                a.status == StatusCode::OK && a.body == "GET /orders/7",
                "round {round}, /orders/7 after a timeout: {} {:?}",
                a.status,
                a.body
            );
        }
        gw.stop().await?;
        let usage = ops::usage(&clients, &p, &k, false, DEADLINE).await?;
        ensure!(usage.used == 7, "used {} != 7", usage.used);
        ensure!(usage.reserved == 0, "reserved {}", usage.reserved);
        Ok(())
    }
    .await;
    cluster.finish(result);
}
