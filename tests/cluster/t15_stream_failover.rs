//! Leader failover under streamed load: kill -9 the leader while clients pipeline
//! increments on `Data.IncrementStream` streams.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
use quota_blackbox::ops::{self, is_permanent, request_id};
use quota_blackbox::{Cluster, ClusterOpts, NodeClient};
use quota_proto::v1::{IncrementStreamRequest, increment_stream_response};
use tokio::sync::Mutex;
use tokio_stream::wrappers::ReceiverStream;

/// Increments attempted in total.
const OPS: u64 = 6_000;
/// Streams, spread round robin over the nodes (so some are on the leader).
const STREAMS: usize = 8;
/// Increments each stream keeps in flight.
const WINDOW: usize = 16;
/// The plan's quota: larger than OPS, so that no increment may be denied.
const LIMIT: u64 = OPS * 10;
/// The leader is killed once this many increments are acknowledged.
const KILL_AFTER_ACKS: u64 = 1_500;
/// How long a stream may go without any answer before it is given up and reopened on the
/// next node (its increments in flight are sent again there, with the same request ids).
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);
/// How long the whole load may take.
const LOAD_DEADLINE: Duration = Duration::from_secs(240);

/// What the streams saw.
#[derive(Default)]
struct Books {
    attempted: AtomicU64,
    acked: AtomicU64,
    denied: AtomicU64,
    /// Increments refused with a permanent error (must not happen).
    refused: AtomicU64,
    /// Streams opened again after theirs broke, ended or went quiet.
    reopened: AtomicU64,
    /// Items answered `failed` with a transient code and sent again.
    resent: AtomicU64,
    used_seen: Mutex<Vec<u64>>,
    errors: Mutex<Vec<String>>,
}

// Property: increments on streams are neither lost nor applied twice across a leader's
// death, when the caller sends again (same request id) whatever was not answered.
// Set-up: 3 nodes; one plan with a monthly quota of 60,000 and a key; 8 streams (round
// robin over the nodes) each keeping 16 increments of cost 1 in flight, 6,000 in all, each
// with its own request id. Once 1,500 are acknowledged the leader is killed with SIGKILL.
// A stream that breaks or stays silent for 10 s is opened again on the next node and its
// unanswered increments are sent again; an item answered with a transient failure is sent
// again. Pass: no increment denied or refused; every one acknowledged; the final
// linearizable `used` equals the acknowledged count; the acknowledgements' `used` values
// are all distinct; at least one stream had to be opened again (the kill was felt).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_kill_during_streamed_increments() {
    let mut cluster = Cluster::start(3, ClusterOpts::default())
        .await
        .expect("cluster starts");
    let result = scenario(&mut cluster).await;
    cluster.finish(result);
}

async fn scenario(cluster: &mut Cluster) -> anyhow::Result<()> {
    let clients = cluster.clients();
    let setup = Duration::from_secs(30);
    let (plan_id, key_id) = ops::plan_with_key(&clients, "t15", LIMIT, setup).await?;

    let books = Arc::new(Books::default());
    let next_op = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for stream in 0..STREAMS {
        tasks.spawn(streamer(
            clients.clone(),
            stream,
            plan_id.clone(),
            key_id.clone(),
            next_op.clone(),
            books.clone(),
        ));
    }

    ops::wait_for_count(&books.acked, KILL_AFTER_ACKS, &tasks, LOAD_DEADLINE)
        .await
        .context("acknowledgements before the kill point")?;
    let old = cluster
        .leader()
        .await
        .context("no agreed leader before the kill")?;
    cluster.kill9(old)?;
    eprintln!(
        "t15: leader {old} killed after {} acknowledgements",
        books.acked.load(Ordering::Relaxed)
    );

    ops::join_all_within(&mut tasks, LOAD_DEADLINE).await?;

    let survivors: Vec<NodeClient> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != old)
        .map(|id| cluster.client(id))
        .collect();
    let used = ops::usage(&survivors, &plan_id, &key_id, false, setup)
        .await?
        .used;
    let attempted = books.attempted.load(Ordering::Relaxed);
    let acked = books.acked.load(Ordering::Relaxed);
    let denied = books.denied.load(Ordering::Relaxed);
    let refused = books.refused.load(Ordering::Relaxed);
    let reopened = books.reopened.load(Ordering::Relaxed);
    let resent = books.resent.load(Ordering::Relaxed);
    let errors = books.errors.lock().await.clone();
    eprintln!(
        "t15: attempted {attempted}, acknowledged {acked}, denied {denied}, refused {refused}, \
         streams reopened {reopened}, items resent {resent}, final used {used}"
    );
    ensure!(attempted == OPS, "attempted {attempted}, meant {OPS}");
    ensure!(
        denied == 0,
        "{denied} increments denied under a quota of {LIMIT}"
    );
    ensure!(
        refused == 0,
        "{refused} increments refused; first errors: {errors:#?}"
    );
    ensure!(acked == OPS, "{acked} of {OPS} increments acknowledged");
    ensure!(
        used == acked,
        "final used {used}, but {acked} increments were acknowledged once each: \
         {}",
        if used > acked {
            "some were applied twice"
        } else {
            "acknowledged writes were lost"
        }
    );
    let mut seen = books.used_seen.lock().await.clone();
    seen.sort_unstable();
    let before = seen.len();
    seen.dedup();
    ensure!(
        seen.len() == before,
        "{} acknowledgements repeat another's `used`",
        before - seen.len()
    );
    ensure!(
        reopened > 0,
        "no stream was reopened: the leader's death went unnoticed, so the test proved nothing"
    );
    Ok(())
}

/// One stream's client: keeps WINDOW increments in flight, takes new ones off the shared
/// counter until OPS are taken, and sends unanswered ones again (same request id) on a
/// new stream to the next node when its stream breaks.
async fn streamer(
    clients: Vec<NodeClient>,
    stream: usize,
    plan_id: String,
    key_id: String,
    next_op: Arc<AtomicU64>,
    books: Arc<Books>,
) {
    let mut node = stream % clients.len();
    // tag -> request id, of increments sent and not answered yet.
    let mut in_flight: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    // Increments to send (again): answered with a transient failure, or never sent.
    let mut resend: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
    let mut next_tag = 0u64;
    let item = |tag: u64, id: &[u8]| IncrementStreamRequest {
        tag,
        increment: Some(ops::increment(&plan_id, &key_id, id.to_vec())),
    };
    let mut opened_before = false;
    loop {
        if opened_before {
            books.reopened.fetch_add(1, Ordering::Relaxed);
            node = (node + 1) % clients.len();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        opened_before = true;
        // Whatever was in flight on the old stream is sent again first.
        resend.extend(std::mem::take(&mut in_flight));
        let (tx, rx) = tokio::sync::mpsc::channel(WINDOW * 2);
        let mut data = clients[node].data.clone();
        let Ok(answers) = data.increment_stream(ReceiverStream::new(rx)).await else {
            continue;
        };
        let mut answers = answers.into_inner();
        loop {
            // Fill the window: resends first, then new increments.
            let mut broken = false;
            while in_flight.len() < WINDOW {
                let (tag, id) = if let Some(again) = resend.pop_front() {
                    again
                } else if next_op.fetch_add(1, Ordering::Relaxed) < OPS {
                    books.attempted.fetch_add(1, Ordering::Relaxed);
                    next_tag += 1;
                    (next_tag, request_id())
                } else {
                    break;
                };
                let sent = tx.send(item(tag, &id)).await;
                in_flight.insert(tag, id);
                if sent.is_err() {
                    broken = true;
                    break;
                }
            }
            if broken {
                break;
            }
            if in_flight.is_empty() {
                return;
            }
            let answer = match tokio::time::timeout(ANSWER_DEADLINE, answers.message()).await {
                Ok(Ok(Some(answer))) => answer,
                // Broken, ended or silent: open a new stream on the next node.
                _ => break,
            };
            let Some(id) = in_flight.remove(&answer.tag) else {
                let mut errors = books.errors.lock().await;
                errors.push(format!("an answer for unknown tag {}", answer.tag));
                books.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            match answer.result {
                Some(increment_stream_response::Result::Response(r)) if r.allowed => {
                    books.acked.fetch_add(1, Ordering::Relaxed);
                    books.used_seen.lock().await.push(r.used);
                }
                Some(increment_stream_response::Result::Response(_)) => {
                    books.denied.fetch_add(1, Ordering::Relaxed);
                }
                Some(increment_stream_response::Result::Failed(f))
                    if !is_permanent(tonic::Code::from_i32(f.code)) =>
                {
                    books.resent.fetch_add(1, Ordering::Relaxed);
                    resend.push_back((answer.tag, id));
                }
                other => {
                    books.refused.fetch_add(1, Ordering::Relaxed);
                    let mut errors = books.errors.lock().await;
                    if errors.len() < 5 {
                        errors.push(format!("node {}: {other:?}", clients[node].id));
                    }
                }
            }
        }
    }
}
