//! `incr-bench`: throughput and latency of linearizable `Data.Increment` calls against a
//! running cluster (start one with `cluster/up.sh`).
//!
//! It creates a fresh plan (a quota far above what the run can use) and a key, then runs
//! `--clients` concurrent clients on `--connections` HTTP/2 connections to the endpoints
//! (round robin), each sending one increment at a time with a fresh request id, for
//! `--seconds`: one `Increment` call each, or with `--stream` as messages on one
//! `IncrementStream` per client. It reports increments per second and latency percentiles. Every
//! increment must be admitted; at the end the plan's counter must equal the number of
//! acknowledged increments (the books balance), or the run fails.

use anyhow::{Context, bail};
use clap::Parser;
use quota_proto::v1::admin_client::AdminClient;
use quota_proto::v1::data_client::DataClient;
use quota_proto::v1::*;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

#[derive(Parser, Debug)]
struct Args {
    /// Comma-separated endpoints of the cluster's nodes.
    #[arg(
        long,
        default_value = "http://127.0.0.1:7101,http://127.0.0.1:7102,http://127.0.0.1:7103"
    )]
    endpoints: String,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// HTTP/2 connections the clients share (round robin); 0 = one per client. Clients on
    /// one connection multiplex their requests on it, as the tasks of one gateway would.
    #[arg(long, default_value_t = 0)]
    connections: usize,
    /// Run time after a one-second warm-up.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Only send to the leader (otherwise clients spread over all nodes and followers
    /// forward to the leader).
    #[arg(long)]
    leader_only: bool,
    /// Each client sends its increments on one `Data.IncrementStream` stream (still one in
    /// flight at a time) instead of one `Data.Increment` call each.
    #[arg(long)]
    stream: bool,
}

/// One client's increments: one call each, or messages on one stream.
enum Sender {
    Calls(DataClient<Channel>),
    Stream {
        requests: tokio::sync::mpsc::Sender<IncrementStreamRequest>,
        answers: tonic::Streaming<IncrementStreamResponse>,
        tag: u64,
    },
}

impl Sender {
    async fn open(channel: Channel, stream: bool) -> anyhow::Result<Sender> {
        let mut client = DataClient::new(channel);
        if !stream {
            return Ok(Sender::Calls(client));
        }
        let (requests, rx) = tokio::sync::mpsc::channel(1);
        let answers = client
            .increment_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Sender::Stream {
            requests,
            answers,
            tag: 0,
        })
    }

    /// Send one increment and wait for its answer: whether it was admitted, or an error.
    async fn increment(&mut self, req: IncrementRequest) -> anyhow::Result<bool> {
        match self {
            Sender::Calls(client) => Ok(client.increment(req).await?.into_inner().allowed),
            Sender::Stream {
                requests,
                answers,
                tag,
            } => {
                *tag += 1;
                requests
                    .send(IncrementStreamRequest {
                        tag: *tag,
                        increment: Some(req),
                    })
                    .await
                    .context("the stream closed")?;
                let answer = answers.message().await?.context("the stream ended")?;
                if answer.tag != *tag {
                    bail!("answer for tag {} while waiting for {}", answer.tag, tag);
                }
                match answer.result {
                    Some(increment_stream_response::Result::Response(r)) => Ok(r.allowed),
                    Some(increment_stream_response::Result::Failed(f)) => {
                        bail!("increment failed: {} ({})", f.message, f.code)
                    }
                    None => bail!("an answer without a result"),
                }
            }
        }
    }
}

fn request_id() -> Vec<u8> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("random source");
    b.to_vec()
}

/// Request ids for one client without a system call each (the load generator shares the
/// cluster's two cores): a random 64-bit prefix and a counter, unique across clients and
/// runs with overwhelming probability.
struct RequestIds {
    prefix: [u8; 8],
    next: u64,
}

impl RequestIds {
    fn new() -> RequestIds {
        let mut prefix = [0u8; 8];
        getrandom::fill(&mut prefix).expect("random source");
        RequestIds { prefix, next: 0 }
    }

    fn next(&mut self) -> Vec<u8> {
        self.next += 1;
        let mut id = Vec::with_capacity(16);
        id.extend_from_slice(&self.prefix);
        id.extend_from_slice(&self.next.to_be_bytes());
        id
    }
}

async fn channel(endpoint: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(endpoint.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot reach {endpoint}"))
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut endpoints: Vec<String> = args
        .endpoints
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    let first = channel(&endpoints[0]).await?;
    if args.leader_only {
        let status = quota_proto::v1::cluster_client::ClusterClient::new(first.clone())
            .status(StatusRequest {})
            .await?
            .into_inner()
            .status
            .context("no status")?;
        let leader = status
            .members
            .iter()
            .find(|m| m.id == status.leader_id)
            .context("no leader")?;
        endpoints = vec![format!("http://{}", leader.public_address)];
    }
    let mut admin = AdminClient::new(first.clone());
    let tag = format!("{:x}", u64::from_be_bytes(request_id()[..8].try_into()?));
    let plan = admin
        .create_plan(CreatePlanRequest {
            request_id: request_id(),
            spec: Some(PlanSpec {
                name: format!("bench-{tag}"),
                quota: Some(Quota {
                    limit: 1 << 40,
                    period: Period::Month as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .plan
        .context("no plan")?;
    let key = admin
        .create_key(CreateKeyRequest {
            request_id: request_id(),
            spec: Some(KeySpec {
                name: format!("bench-{tag}"),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .key
        .context("no key")?;
    admin
        .attach(AttachRequest {
            request_id: request_id(),
            plan: Some(PlanSelector {
                by: Some(plan_selector::By::Id(plan.id.clone())),
            }),
            key: Some(KeySelector {
                by: Some(key_selector::By::Id(key.id.clone())),
            }),
            extra_per_period: 0,
        })
        .await?;

    let warmup = Duration::from_secs(1);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + Duration::from_secs(args.seconds);
    let connections = if args.connections == 0 {
        args.clients
    } else {
        args.connections
    };
    let mut channels = Vec::with_capacity(connections);
    for i in 0..connections {
        channels.push(channel(&endpoints[i % endpoints.len()]).await?);
    }
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let ch = channels[i % connections].clone();
        let (plan_id, key_id) = (plan.id.clone(), key.id.clone());
        let mut data = Sender::open(ch.clone(), args.stream).await?;
        let stream = args.stream;
        tasks.push(tokio::spawn(async move {
            let mut ids = RequestIds::new();
            let mut latencies = Vec::with_capacity(100_000);
            let (mut acked, mut errors) = (0u64, 0u64);
            while Instant::now() < end {
                let req = IncrementRequest {
                    key: Some(increment_request::Key::KeyId(key_id.clone())),
                    target: Some(increment_request::Target::Plan(PlanSelector {
                        by: Some(plan_selector::By::Id(plan_id.clone())),
                    })),
                    cost: 1,
                    request_id: ids.next(),
                };
                let t = Instant::now();
                match data.increment(req).await {
                    Ok(true) => {
                        acked += 1;
                        if t >= measure_from {
                            latencies
                                .push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        }
                    }
                    Ok(_) => bail!("an increment was denied"),
                    Err(_) => {
                        errors += 1;
                        // A broken stream answers nothing more: open a new one (a failed
                        // open is one more error, after a pause rather than a spin).
                        if stream {
                            match Sender::open(ch.clone(), true).await {
                                Ok(fresh) => data = fresh,
                                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                            }
                        }
                    }
                }
            }
            Ok((latencies, acked, errors))
        }));
    }
    let mut all = Vec::new();
    let (mut acked, mut errors) = (0, 0);
    for t in tasks {
        let (lat, a, e) = t.await??;
        all.extend(lat);
        acked += a;
        errors += e;
    }
    all.sort_unstable();
    let measured = all.len() as f64;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let today = quota_core::Timestamp(now_ms).date().to_string();
    let usage = admin
        .get_usage(GetUsageRequest {
            plan: Some(PlanSelector {
                by: Some(plan_selector::By::Id(plan.id.clone())),
            }),
            key: Some(KeySelector {
                by: Some(key_selector::By::Id(key.id.clone())),
            }),
            start_date: today.clone(),
            end_date: today,
            ..Default::default()
        })
        .await;
    let used = usage.ok().and_then(|u| {
        u.into_inner()
            .keys
            .first()
            .and_then(|k| k.current.as_ref().map(|c| c.used))
    });
    println!(
        "clients={} connections={} stream={} seconds={} endpoints={}",
        args.clients,
        connections,
        args.stream,
        args.seconds,
        endpoints.join(",")
    );
    println!("increments/s: {:.0}", measured / args.seconds as f64);
    println!(
        "latency us: p50={} p90={} p99={} p999={} max={}",
        percentile(&all, 0.50),
        percentile(&all, 0.90),
        percentile(&all, 0.99),
        percentile(&all, 0.999),
        all.last().copied().unwrap_or(0)
    );
    println!("acknowledged={acked} errors={errors} counter={used:?}");
    if let Some(used) = used
        && (used < acked || used > acked + errors)
    {
        bail!("the books do not balance: counter {used}, acknowledged {acked}, errors {errors}");
    }
    Ok(())
}
