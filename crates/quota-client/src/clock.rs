//! Time as the client sees it: a monotonic clock in nanoseconds since the client started
//! (deadlines of leases and throttle pools, cache lifetimes), and the wall clock in
//! milliseconds (only to convert the cluster's timestamps into monotonic deadlines).
//!
//! Two readings of the same monotonic clock:
//! - [`Clock::now_ns`], exact (`CLOCK_MONOTONIC`, ~20 ns through the vDSO here), for
//!   background work: refill rounds, send times, measured demand.
//! - [`Clock::hot_now_ns`], for the hot path: `CLOCK_MONOTONIC_COARSE` (the time of the
//!   kernel's last tick, a few ns to read, no hardware counter) **plus** a slack of two
//!   ticks. The coarse reading is behind the exact time by less than one tick, so the sum
//!   is never earlier than the exact time: comparing it with a deadline (`now >= deadline`
//!   means expired) ends every lease, throttle pool, key and refusal window up to two
//!   ticks *early*, never late. That keeps "no lease is spent after its deadline" without
//!   reading the exact clock per request. The second tick of slack covers a tick that the
//!   kernel delivers late.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds on the monotonic clock since the client started. Deadlines are stored as
/// such numbers in atomics; `u64` nanoseconds last 584 years.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    /// `CLOCK_MONOTONIC` at creation, in ns.
    epoch_ns: u64,
    /// Added to coarse readings: two ticks of `CLOCK_MONOTONIC_COARSE`.
    coarse_slack_ns: u64,
}

/// Slack used when the coarse clock's resolution cannot be read: 2 x 10 ms (HZ=100, the
/// coarsest kernel tick).
const FALLBACK_SLACK_NS: u64 = 20 * NS_PER_MS;

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            epoch_ns: sys::monotonic_ns(),
            coarse_slack_ns: sys::coarse_resolution_ns()
                .map_or(FALLBACK_SLACK_NS, |r| r.saturating_mul(2)),
        }
    }

    /// Now, exactly, in nanoseconds since the epoch.
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        sys::monotonic_ns().saturating_sub(self.epoch_ns)
    }

    /// An upper bound of now (see the module doc): never earlier than [`Clock::now_ns`]
    /// would answer at the same instant, and at most two ticks later.
    #[inline]
    pub(crate) fn hot_now_ns(&self) -> u64 {
        sys::coarse_ns()
            .saturating_add(self.coarse_slack_ns)
            .saturating_sub(self.epoch_ns)
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

#[cfg(target_os = "linux")]
mod sys {
    fn read(clock: libc::clockid_t) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; both clock ids exist on every Linux
        // since 2.6.32, so the call cannot fail (a failure would leave 0, which only makes
        // the clock look early, and is then caught by the monotonic saturation).
        unsafe { libc::clock_gettime(clock, &mut ts) };
        (ts.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec as u64)
    }

    #[inline]
    pub(super) fn monotonic_ns() -> u64 {
        read(libc::CLOCK_MONOTONIC)
    }

    #[inline]
    pub(super) fn coarse_ns() -> u64 {
        read(libc::CLOCK_MONOTONIC_COARSE)
    }

    pub(super) fn coarse_resolution_ns() -> Option<u64> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: as above.
        let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        let ns = (ts.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec as u64);
        (rc == 0 && ns > 0).then_some(ns)
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::sync::OnceLock;
    use std::time::Instant;

    fn base() -> Instant {
        static BASE: OnceLock<Instant> = OnceLock::new();
        *BASE.get_or_init(Instant::now)
    }

    pub(super) fn monotonic_ns() -> u64 {
        u64::try_from(base().elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// No coarse clock here: the exact one (with a slack of 0 ticks).
    pub(super) fn coarse_ns() -> u64 {
        monotonic_ns()
    }

    pub(super) fn coarse_resolution_ns() -> Option<u64> {
        Some(0)
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

#[cfg(test)]
mod tests {
    use super::*;

    // Property: the hot path's reading is an upper bound of the exact clock, within the
    // slack.
    // Set-up: alternate exact and hot readings 100,000 times.
    // Pass: every hot reading taken after an exact one is >= it, and every hot reading is
    // at most slack (+ 1 ms of scheduling) above the exact reading that follows it.
    #[test]
    fn hot_clock_is_an_upper_bound() {
        let c = Clock::new();
        assert!(
            c.coarse_slack_ns <= FALLBACK_SLACK_NS,
            "{}",
            c.coarse_slack_ns
        );
        for _ in 0..100_000 {
            let exact = c.now_ns();
            let hot = c.hot_now_ns();
            assert!(hot >= exact, "hot {hot} < exact {exact}");
            let after = c.now_ns();
            assert!(hot <= after + c.coarse_slack_ns + NS_PER_MS);
        }
    }
}
