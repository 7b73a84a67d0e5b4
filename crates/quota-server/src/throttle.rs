//! Throttles as soft state: token buckets in the leader's memory, one per (plan, key) and
//! per (plan, key, route) where the plan has a route throttle. They are not in the Raft log:
//! a new leader starts with full buckets, which is acceptable for a throttle (and never for
//! a quota). Gateways take tokens here in small chunks and spend them locally, so across all
//! gateways at most `burst + rate x T` requests pass in any window of `T` seconds.

use quota_core::{KeyId, PlanId, Route, Throttle};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept at most; idle ones are dropped first (a dropped bucket comes back full,
/// which is what an idle bucket would be anyway once refilled).
pub const MAX_BUCKETS: usize = 1_000_000;
/// A bucket unused this long is full again and can be forgotten.
const IDLE_FORGET: Duration = Duration::from_secs(120);

type BucketKey = (PlanId, KeyId, Option<Route>);

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The leader's token buckets.
#[derive(Debug, Default)]
pub struct ThrottleBook {
    // A std Mutex: no await while held; each take is a few arithmetic operations.
    buckets: Mutex<HashMap<BucketKey, Bucket>>,
}

/// What a take granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub granted: u64,
    /// When nothing was granted: how long until one token is available.
    pub retry_after: Duration,
}

impl ThrottleBook {
    /// Take up to `want` tokens from the bucket of (plan, key, route) under `throttle`.
    pub fn take(
        &self,
        plan: PlanId,
        key: KeyId,
        route: Option<Route>,
        throttle: Throttle,
        want: u64,
        now: Instant,
    ) -> Taken {
        let rate = throttle.rate_per_sec();
        let burst = throttle.burst() as f64;
        let Ok(mut buckets) = self.buckets.lock() else {
            // A poisoned lock means a panic elsewhere; refuse rather than over-admit.
            return Taken {
                granted: 0,
                retry_after: Duration::from_secs(1),
            };
        };
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, b| now.duration_since(b.updated) < IDLE_FORGET);
        }
        let bucket = buckets.entry((plan, key, route)).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        // Clamp to the burst: the plan may have been changed to a smaller one.
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = now;
        let granted = (bucket.tokens.floor().max(0.0) as u64).min(want);
        bucket.tokens -= granted as f64;
        let retry_after = if granted == 0 {
            Duration::from_secs_f64(((1.0 - bucket.tokens) / rate).max(0.001))
        } else {
            Duration::ZERO
        };
        Taken {
            granted,
            retry_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Property: a bucket admits its burst at once, then `rate` per second, and never more
    // than burst + rate x T over T seconds, however the takes are sized.
    // Set-up: rate 10/s, burst 5; takes of various sizes at simulated instants.
    // Pass: the counts below.
    #[test]
    fn burst_then_rate() {
        let book = ThrottleBook::default();
        let t = Throttle::new(10.0, 5).unwrap();
        let start = Instant::now();
        let take = |want, ms| {
            book.take(
                PlanId(1),
                KeyId(1),
                None,
                t,
                want,
                start + Duration::from_millis(ms),
            )
        };
        assert_eq!(take(100, 0).granted, 5);
        let none = take(1, 0);
        assert_eq!(none.granted, 0);
        assert!(
            none.retry_after > Duration::ZERO && none.retry_after <= Duration::from_millis(100)
        );
        assert_eq!(take(100, 500).granted, 5);
        let mut total = 0;
        for ms in (510..=1500).step_by(10) {
            total += take(3, ms).granted;
        }
        // One second at 10 per second, give or take the fraction carried over.
        assert!((9..=10).contains(&total), "{total}");
        // Another route has its own bucket.
        let route = Route::new("GET /x").unwrap();
        assert_eq!(
            book.take(PlanId(1), KeyId(1), Some(route), t, 9, start)
                .granted,
            5
        );
    }
}
