//! A minimal upstream for benchmarks: answers every request 200 with a 13-byte body.
//! Usage: `cargo run --release -p quota-gateway --example upstream -- 127.0.0.1:9000`
//! (`UPSTREAM_THREADS` sets the runtime's worker threads, default 1; `UPSTREAM_DELAY_MS`
//! makes every answer wait that long first, like an upstream waiting on its own backends;
//! `UPSTREAM_WORK_US` makes every answer first spend that much CPU time, like an upstream
//! computing its answer; both default to 0).

use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    let threads = std::env::var("UPSTREAM_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let delay = std::time::Duration::from_millis(
        std::env::var("UPSTREAM_DELAY_MS")
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
    );
    let work = std::time::Duration::from_micros(
        std::env::var("UPSTREAM_WORK_US")
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
    );
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            println!("upstream listening on {}", listener.local_addr()?);
            loop {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |_req: Request<hyper::body::Incoming>| async move {
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            if !work.is_zero() {
                                // Busy work on this thread, measured by the thread's own clock
                                // so that time spent descheduled does not count.
                                let start = thread_cpu_time();
                                let mut x = 0u64;
                                while thread_cpu_time().saturating_sub(start) < work {
                                    for i in 0..256u64 {
                                        x = std::hint::black_box(
                                            x.wrapping_mul(31).wrapping_add(i),
                                        );
                                    }
                                }
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                b"hello, world\n",
                            ))))
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        })
}

/// CPU time of the calling thread.
fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID needs nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
