//! Throttles: a lock-free GCRA (generic cell rate algorithm, the token bucket expressed as
//! a "theoretical arrival time"), one `AtomicU64` per bucket.
//!
//! `rate` units per second with a bucket of `burst` units: each unit pushes the
//! theoretical arrival time (TAT) forward by `1/rate`; a request is admitted when the
//! TAT after it is at most `burst/rate` ahead of now. Exact at one gateway; see the crate
//! documentation for what holds across gateways.

use std::sync::atomic::{AtomicU64, Ordering};

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
}
