//! Counters a gateway can export. The hot path writes only to a per-thread stripe (its own
//! cache line), so threads do not contend on a shared counter; readers sum the stripes.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::decision::DenyKind;

/// Stripes of hot-path counters; more than the cores a gateway usually has.
const STRIPES: usize = 16;

#[repr(align(128))]
#[derive(Default)]
struct Stripe {
    allowed: AtomicU64,
    denied: [AtomicU64; DenyKind::COUNT],
}

/// Counters of one client.
pub(crate) struct Metrics {
    stripes: [Stripe; STRIPES],
    pub(crate) refill_rpcs: AtomicU64,
    pub(crate) refill_failures: AtomicU64,
    pub(crate) refill_latency_us_sum: AtomicU64,
    pub(crate) refill_latency_us_max: AtomicU64,
    pub(crate) leases_granted: AtomicU64,
    pub(crate) leases_settled: AtomicU64,
    pub(crate) lookups: AtomicU64,
    pub(crate) lookup_misses: AtomicU64,
    pub(crate) watch_reconnects: AtomicU64,
    pub(crate) watch_events: AtomicU64,
    pub(crate) admitted_unreachable: AtomicU64,
    pub(crate) offline_reports: AtomicU64,
    pub(crate) offline_report_failures: AtomicU64,
    pub(crate) offline_reported: AtomicU64,
    pub(crate) offline_refused: AtomicU64,
    pub(crate) throttle_rpcs: AtomicU64,
    pub(crate) throttle_failures: AtomicU64,
    pub(crate) throttle_tokens: AtomicU64,
}

fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    INDEX.with(|i| {
        if i.get() == usize::MAX {
            i.set(NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
        }
        i.get()
    })
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics {
            stripes: std::array::from_fn(|_| Stripe::default()),
            refill_rpcs: AtomicU64::new(0),
            refill_failures: AtomicU64::new(0),
            refill_latency_us_sum: AtomicU64::new(0),
            refill_latency_us_max: AtomicU64::new(0),
            leases_granted: AtomicU64::new(0),
            leases_settled: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
            lookup_misses: AtomicU64::new(0),
            watch_reconnects: AtomicU64::new(0),
            watch_events: AtomicU64::new(0),
            admitted_unreachable: AtomicU64::new(0),
            offline_reports: AtomicU64::new(0),
            offline_report_failures: AtomicU64::new(0),
            offline_reported: AtomicU64::new(0),
            offline_refused: AtomicU64::new(0),
            throttle_rpcs: AtomicU64::new(0),
            throttle_failures: AtomicU64::new(0),
            throttle_tokens: AtomicU64::new(0),
        }
    }

    #[inline]
    pub(crate) fn allowed(&self) {
        self.stripes[stripe_index()]
            .allowed
            .fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn denied(&self, kind: DenyKind) {
        self.stripes[stripe_index()].denied[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refill_latency(&self, micros: u64) {
        self.refill_latency_us_sum
            .fetch_add(micros, Ordering::Relaxed);
        self.refill_latency_us_max
            .fetch_max(micros, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(
        &self,
        leases_held: u64,
        refunded: u64,
        offline_pending: u64,
    ) -> MetricsSnapshot {
        let mut denied = [0u64; DenyKind::COUNT];
        let mut allowed = 0;
        for s in &self.stripes {
            allowed += s.allowed.load(Ordering::Relaxed);
            for (d, c) in denied.iter_mut().zip(&s.denied) {
                *d += c.load(Ordering::Relaxed);
            }
        }
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            allowed,
            denied: DenyKind::ALL
                .iter()
                .map(|k| (*k, denied[*k as usize]))
                .collect(),
            refunded,
            refill_rpcs: get(&self.refill_rpcs),
            refill_failures: get(&self.refill_failures),
            refill_latency_us_sum: get(&self.refill_latency_us_sum),
            refill_latency_us_max: get(&self.refill_latency_us_max),
            leases_granted: get(&self.leases_granted),
            leases_settled: get(&self.leases_settled),
            leases_held,
            lookups: get(&self.lookups),
            lookup_misses: get(&self.lookup_misses),
            watch_reconnects: get(&self.watch_reconnects),
            watch_events: get(&self.watch_events),
            admitted_unreachable: get(&self.admitted_unreachable),
            offline_pending,
            offline_reported: get(&self.offline_reported),
            offline_refused: get(&self.offline_refused),
            offline_reports: get(&self.offline_reports),
            offline_report_failures: get(&self.offline_report_failures),
            throttle_rpcs: get(&self.throttle_rpcs),
            throttle_failures: get(&self.throttle_failures),
            throttle_tokens: get(&self.throttle_tokens),
        }
    }
}

/// A copy of the client's counters, to export (Prometheus or anything else).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Requests admitted.
    pub allowed: u64,
    /// Requests denied, by reason.
    pub denied: Vec<(DenyKind, u64)>,
    /// Cost units refunded by permits.
    pub refunded: u64,
    /// Lease batches sent (each one RPC, many buckets).
    pub refill_rpcs: u64,
    /// Lease batches that no node acknowledged within the retry deadline.
    pub refill_failures: u64,
    /// Sum of the latencies of acknowledged lease batches, in microseconds.
    pub refill_latency_us_sum: u64,
    /// Largest latency of an acknowledged lease batch, in microseconds.
    pub refill_latency_us_max: u64,
    /// Leases granted to this gateway.
    pub leases_granted: u64,
    /// Leases settled by this gateway.
    pub leases_settled: u64,
    /// Leases held right now.
    pub leases_held: u64,
    /// `LookupKey` calls.
    pub lookups: u64,
    /// Lookups that found no key.
    pub lookup_misses: u64,
    /// Times the watch stream was (re)opened after the first time.
    pub watch_reconnects: u64,
    /// Watch events applied.
    pub watch_events: u64,
    /// Requests admitted at the safe rate while the cluster was unreachable.
    pub admitted_unreachable: u64,
    /// Cost units admitted at the safe rate (summed over plans: a request covered by two
    /// plans counts for both) that the cluster has not acknowledged yet.
    pub offline_pending: u64,
    /// Cost units admitted at the safe rate that the cluster acknowledged and added to the
    /// keys' usage.
    pub offline_reported: u64,
    /// Cost units admitted at the safe rate that the cluster refused to record (the plan's
    /// `safe_rate` is 0, or the plan, key or association is gone): never counted.
    pub offline_refused: u64,
    /// `Gateway.ReportOfflineUsage` requests sent (each one RPC, many (plan, key)s).
    pub offline_reports: u64,
    /// Reports that no node answered within the retry deadline, or that were refused whole;
    /// each is sent again as it was.
    pub offline_report_failures: u64,
    /// `Gateway.Throttle` requests sent (each one RPC, many throttle pools).
    pub throttle_rpcs: u64,
    /// Throttle requests that no node answered within the retry deadline.
    pub throttle_failures: u64,
    /// Throttle tokens the leader granted to this gateway.
    pub throttle_tokens: u64,
}

impl MetricsSnapshot {
    /// Denials of one kind.
    pub fn denied_for(&self, kind: DenyKind) -> u64 {
        self.denied
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }
}
