//! The watch task: follows `Gateway.Watch` on one node after another. Each (re)connection
//! starts with every plan and a `synced` event; the plans then replace the cached ones.
//! After a reconnection, every cached key is looked up again (changes to keys may have
//! been missed while the stream was down); until those answers arrive the cached state
//! keeps serving, which is what a gateway cut off from the cluster needs.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use quota_proto::v1;
use tokio::sync::watch;

use crate::Inner;

/// Pauses between reconnection attempts, doubling up to the maximum.
const RECONNECT_MIN: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(1);

pub(crate) async fn run(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let Some(transport) = inner.transport.as_ref() else {
        return;
    };
    let mut endpoint = 0usize;
    let mut pause = RECONNECT_MIN;
    let mut connected_before = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let mut client = transport.stream_client(endpoint);
        let req = v1::WatchRequest {
            gateway_id: inner.config.gateway_id.clone(),
        };
        let opened = tokio::select! {
            r = client.watch(req) => r,
            _ = stop.changed() => return,
        };
        if let Ok(response) = opened {
            let mut stream = response.into_inner();
            let mut initial = Vec::new();
            let mut synced = false;
            loop {
                let msg = tokio::select! {
                    m = stream.message() => m,
                    _ = stop.changed() => return,
                };
                let Ok(Some(event)) = msg else {
                    break;
                };
                let Some(event) = event.event else {
                    continue;
                };
                inner.metrics.watch_events.fetch_add(1, Ordering::Relaxed);
                use v1::watch_event::Event;
                match event {
                    Event::PlanUpserted(plan) if !synced => initial.push(plan),
                    Event::Synced(_) if !synced => {
                        synced = true;
                        pause = RECONNECT_MIN;
                        inner
                            .lock_registry()
                            .replace_plans(std::mem::take(&mut initial));
                        if connected_before {
                            inner
                                .metrics
                                .watch_reconnects
                                .fetch_add(1, Ordering::Relaxed);
                            tokio::spawn(refresh_keys(inner.clone()));
                        }
                        connected_before = true;
                    }
                    other => {
                        inner
                            .lock_registry()
                            .apply(other, &inner.clock, &inner.secrets);
                    }
                }
                inner.changed.notify_waiters();
            }
        }
        endpoint = endpoint.wrapping_add(1);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
        pause = (pause * 2).min(RECONNECT_MAX);
    }
}

/// Looks every cached secret up again after a reconnection.
async fn refresh_keys(inner: Arc<Inner>) {
    let hashes = inner.lock_registry().cached_hashes();
    for hash in hashes {
        let _ = inner.lookup(hash, None).await;
    }
}
