//! Time as the client sees it: a monotonic clock in nanoseconds since the client started
//! (deadlines of leases, throttle state, cache lifetimes), and the wall clock in
//! milliseconds (only to convert the cluster's timestamps into monotonic deadlines).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Nanoseconds on the monotonic clock since the client started. Deadlines are stored as
/// such numbers in atomics; `u64` nanoseconds last 584 years.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            epoch: Instant::now(),
        }
    }

    /// Now, in nanoseconds since the epoch. One `clock_gettime` through the vDSO (~20 ns).
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The monotonic deadline of the wall-clock time `at_ms` (milliseconds since the Unix
    /// epoch), as far as this machine's wall clock agrees with the cluster's. 0 (none) maps
    /// to `u64::MAX` (never).
    pub(crate) fn deadline_of_wall(&self, at_ms: u64) -> u64 {
        if at_ms == 0 {
            return u64::MAX;
        }
        let now_ns = self.now_ns();
        let wall = wall_ms();
        if at_ms <= wall {
            return now_ns;
        }
        now_ns.saturating_add((at_ms - wall).saturating_mul(1_000_000))
    }
}

/// Milliseconds since the Unix epoch by this machine's clock (0 before 1970).
pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Nanoseconds in a millisecond.
pub(crate) const NS_PER_MS: u64 = 1_000_000;
