//! Throttles enforced across all gateways together.
//!
//! The cluster's leader keeps one token bucket per (plan, key) and per (plan, key, route)
//! where the plan has a route throttle (`Gateway.Throttle`, soft state). Each gateway
//! holds a [`Pool`] per such bucket: tokens taken from the leader in small chunks, spent
//! here with one compare-and-swap (no lock, no allocation), and **expired** `pool_ttl`
//! after the request that fetched them was sent, by this machine's monotonic clock. So a
//! token the leader gave out at instant `g` is spent (if ever) within `[g, g + pool_ttl)`:
//! the admissions of every gateway together in any window of `T` seconds come from grants
//! made within `T + pool_ttl` seconds, at most `burst + rate x (T + pool_ttl)`.
//!
//! Like a lease, a pool has two [`Slot`]s: a new chunk lands in one while the other is
//! still being spent, the older chunk first. Only the throttle refill task installs
//! chunks (`crate::throttle_refill`).
//!
//! [`Gcra`] is a local token bucket: the safe rate of a quota while the cluster is
//! unreachable, and the throttle fallback in that mode (see the crate documentation).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use quota_core::{KeyId, PlanId, Throttle};

use crate::allowance::{Slot, take_from_pair};

/// A token bucket as one atomic.
#[derive(Debug)]
pub(crate) struct Gcra {
    tat_ns: AtomicU64,
    /// Nanoseconds per unit (1/rate).
    interval_ns: u64,
    /// How far ahead of now the TAT may run: burst * interval.
    tolerance_ns: u64,
}

impl Gcra {
    /// A full bucket of `burst` refilled at `rate_per_sec`. `None` for a zero rate.
    pub(crate) fn new(rate_per_sec: f64, burst: f64) -> Option<Gcra> {
        if !(rate_per_sec > 0.0 && rate_per_sec.is_finite()) {
            return None;
        }
        let interval_ns = (1e9 / rate_per_sec).max(1.0) as u64;
        let burst = burst.max(1.0);
        Some(Gcra {
            tat_ns: AtomicU64::new(0),
            interval_ns,
            tolerance_ns: (burst * interval_ns as f64) as u64,
        })
    }

    /// Admits `cost` units at `now_ns`, or answers how long (ns) until it would be.
    #[inline]
    pub(crate) fn try_take(&self, cost: u64, now_ns: u64) -> Result<(), u64> {
        let inc = cost.saturating_mul(self.interval_ns);
        let mut tat = self.tat_ns.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now_ns).saturating_add(inc);
            let ahead = next - now_ns;
            if ahead > self.tolerance_ns {
                return Err(ahead - self.tolerance_ns);
            }
            match self
                .tat_ns
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => tat = now,
            }
        }
    }

    /// Undoes an admission of `cost` (another plan refused the request).
    pub(crate) fn give_back(&self, cost: u64) {
        let inc = cost.saturating_mul(self.interval_ns);
        let _ = self
            .tat_ns
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(inc))
            });
    }
}

/// This gateway's share of one leader bucket.
#[derive(Debug)]
pub(crate) struct Pool {
    pub(crate) plan: PlanId,
    pub(crate) key: KeyId,
    /// The plan's route key ("GET /x"), or `None` for the plan's own throttle.
    pub(crate) route: Option<Box<str>>,
    pub(crate) throttle: Throttle,
    pub(crate) slots: [Slot; 2],
    /// The refill task does not ask before this monotonic ns: the leader answered "no
    /// token before then" (or the cluster did not answer). Denials quote it as
    /// retry-after.
    pub(crate) retry_at_ns: AtomicU64,
    /// Set by the hot path when the pool runs low or a request found it empty; cleared by
    /// the refill task when it asks.
    pub(crate) wanted: AtomicBool,
    /// The largest cost that found the pool empty since the last ask (a chunk must hold
    /// it).
    pub(crate) need: AtomicU64,
    /// Tokens below which the hot path asks for the next chunk.
    pub(crate) low_water: u64,
    /// Tokens asked for per chunk: about `rate x chunk` and at least 1.
    pub(crate) chunk: u64,
    /// Nanoseconds per token (1/rate), the shortest retry-after worth quoting.
    pub(crate) ns_per_token: u64,
    /// The local bucket used instead while the cluster is unreachable, when the client is
    /// in safe-rate mode: `rate x throttle_share`, `burst x throttle_share`.
    pub(crate) fallback: Option<Gcra>,
}

impl Pool {
    /// A pool asking for chunks of `chunk_secs` of the rate; with a `fallback_share` (safe
    /// mode), a local bucket at that share for when the cluster is unreachable.
    pub(crate) fn new(
        plan: PlanId,
        key: KeyId,
        route: Option<Box<str>>,
        throttle: Throttle,
        chunk_secs: f64,
        fallback_share: Option<f64>,
    ) -> Pool {
        let rate = throttle.rate_per_sec();
        let chunk = ((rate * chunk_secs).ceil() as u64).clamp(1, throttle.burst().max(1));
        Pool {
            plan,
            key,
            route,
            throttle,
            slots: [Slot::default(), Slot::default()],
            retry_at_ns: AtomicU64::new(0),
            wanted: AtomicBool::new(false),
            need: AtomicU64::new(0),
            low_water: chunk.div_ceil(2),
            chunk,
            ns_per_token: (1e9 / rate).clamp(1.0, 1e12) as u64,
            fallback: fallback_share.and_then(|s| Gcra::new(rate * s, throttle.burst() as f64 * s)),
        }
    }

    /// Takes `cost` tokens live at `now_ns`: (slot, generation, tokens left in it).
    #[inline]
    pub(crate) fn take(&self, cost: u64, now_ns: u64) -> Option<(u8, u16, u64)> {
        take_from_pair(&self.slots, cost, now_ns)
    }

    /// Undoes a take (another plan refused the request). A chunk replaced meanwhile keeps
    /// its own tokens: the returned ones are dropped, which errs on the side of fewer
    /// admissions.
    pub(crate) fn give_back(&self, slot: u8, generation: u16, cost: u64) {
        if let Some(s) = self.slots.get(usize::from(slot)) {
            let _ = s.give_back(generation, cost);
        }
    }

    /// Marks the pool as wanting a chunk of at least `cost`; answers whether the refill
    /// task must be woken (it was not wanted yet).
    #[inline]
    pub(crate) fn want(&self, cost: u64) -> bool {
        if self.need.load(Ordering::Relaxed) < cost {
            self.need.fetch_max(cost, Ordering::Relaxed);
        }
        !self.wanted.load(Ordering::Relaxed) && !self.wanted.swap(true, Ordering::AcqRel)
    }

    /// Whether the pool holds a chunk it may still spend at `now_ns`, with tokens.
    pub(crate) fn live_tokens(&self, now_ns: u64) -> u64 {
        self.slots
            .iter()
            .filter(|s| s.live(now_ns))
            .map(Slot::tokens)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Property: a GCRA admits the burst at once, then exactly `rate` per second.
    // Set-up: rate 10/s, burst 5; offer 1,000 requests evenly over 10 simulated seconds.
    // Pass: 5 + 10 * 10 = 105 admitted (+-1 for the boundary), and retry-after is right.
    #[test]
    fn burst_then_rate() {
        let g = Gcra::new(10.0, 5.0).unwrap();
        let mut admitted = 0;
        for i in 0..1000u64 {
            let now = i * 10_000_000; // every 10 ms
            if g.try_take(1, now).is_ok() {
                admitted += 1;
            }
        }
        assert!((104..=106).contains(&admitted), "{admitted}");
        let g = Gcra::new(1.0, 1.0).unwrap();
        assert!(g.try_take(1, 0).is_ok());
        let wait = g.try_take(1, 0).unwrap_err();
        assert_eq!(wait, 1_000_000_000);
        g.give_back(1);
        assert!(g.try_take(1, 0).is_ok());
    }

    // Property: a pool asks for chunks of about rate x chunk (at least 1, at most the
    // burst), spends the older chunk first, never spends a chunk at or after its deadline,
    // and a give-back after the chunk was replaced does not reach the new chunk.
    // Set-up: rate 40/s, burst 10, chunk 50 ms; two chunks installed by hand.
    // Pass: the sizes and takes below.
    #[test]
    fn pool_chunks_expire_and_spend_oldest_first() {
        let t = Throttle::new(40.0, 10).unwrap();
        let p = Pool::new(PlanId(1), KeyId(1), None, t, 0.05, None);
        assert_eq!((p.chunk, p.low_water), (2, 1));
        assert_eq!(p.ns_per_token, 25_000_000);
        let tiny = Pool::new(
            PlanId(1),
            KeyId(1),
            None,
            Throttle::new(1.0, 1).unwrap(),
            0.05,
            None,
        );
        assert_eq!(tiny.chunk, 1);
        let big = Pool::new(
            PlanId(1),
            KeyId(1),
            None,
            Throttle::new(1e5, 50).unwrap(),
            0.05,
            Some(0.5),
        );
        assert_eq!(big.chunk, 50, "capped at the burst");
        assert!(big.fallback.is_some());

        assert!(p.take(1, 0).is_none(), "empty until filled");
        assert!(p.want(1), "first want wakes the task");
        assert!(!p.want(3), "already wanted");
        assert_eq!(p.need.load(Ordering::Relaxed), 3);
        p.slots[0].install(2, 500);
        p.slots[1].install(2, 300);
        assert_eq!(p.take(1, 100).map(|t| t.0), Some(1), "older chunk first");
        assert_eq!(p.live_tokens(100), 3);
        assert_eq!(
            p.take(1, 300).map(|t| t.0),
            Some(0),
            "slot 1 expired at 300"
        );
        let (slot, generation, left) = p.take(1, 499).unwrap();
        assert_eq!((slot, left), (0, 0));
        assert!(p.take(1, 499).is_none());
        p.slots[0].drain();
        p.slots[0].install(5, 1000);
        p.give_back(slot, generation, 1);
        assert_eq!(p.slots[0].tokens(), 5, "stale give-back dropped");
        assert!(p.take(1, 1000).is_none(), "deadline is exclusive");
    }
}
