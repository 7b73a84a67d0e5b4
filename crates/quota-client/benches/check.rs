//! `check` with a local allowance (the hot path): one thread, and two threads on two keys.
//! Run: `cargo bench -p quota-client --bench check`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use quota_client::{Decision, testkit};

const SECRET_A: &[u8] = b"qdk_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefgh";
const SECRET_B: &[u8] = b"qdk_ZyXwVuTsRqPoNmLkJiHgFeDcBa9876543210hgfedcba";
const TOKENS: u64 = 1 << 44;

fn once(client: &quota_client::Client, secret: &[u8]) {
    match client.try_check(black_box(secret), "orders", "prod", "GET /orders", 1) {
        Some(Decision::Allow(p)) => p.commit(),
        other => panic!("not allowed locally: {other:?}"),
    }
}

fn single(c: &mut Criterion) {
    let client = testkit::local_client(SECRET_A, "orders", "prod", TOKENS);
    c.bench_function("try_check/allow/1 thread", |b| {
        b.iter(|| once(&client, SECRET_A))
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    c.bench_function("check (async, polled inline)/allow/1 thread", |b| {
        b.iter(|| {
            rt.block_on(async {
                match client
                    .check(black_box(SECRET_A), "orders", "prod", "GET /orders", 1)
                    .await
                {
                    Decision::Allow(p) => p.commit(),
                    Decision::Deny(d) => panic!("{d:?}"),
                }
            })
        })
    });
}

/// Two threads, each on its own key, `iters` calls each; answers the time per call per
/// thread.
fn two_threads(c: &mut Criterion) {
    let client = testkit::local_client(SECRET_A, "orders", "prod", TOKENS);
    testkit::add_key(&client, 2, SECRET_B, TOKENS);
    c.bench_function(
        "try_check/allow/2 threads, 2 keys (time per call per thread)",
        |b| {
            b.iter_custom(|iters| {
                let go = Arc::new(AtomicBool::new(false));
                let handles: Vec<_> = [SECRET_A, SECRET_B]
                    .into_iter()
                    .map(|s| {
                        let client = client.clone();
                        let go = go.clone();
                        std::thread::spawn(move || {
                            while !go.load(Ordering::Acquire) {
                                std::hint::spin_loop();
                            }
                            let t = Instant::now();
                            for _ in 0..iters {
                                once(&client, s);
                            }
                            t.elapsed()
                        })
                    })
                    .collect();
                go.store(true, Ordering::Release);
                handles
                    .into_iter()
                    .map(|h| h.join().expect("bench thread"))
                    .max()
                    .unwrap_or_default()
            })
        },
    );
}

criterion_group!(benches, single, two_threads);
criterion_main!(benches);
