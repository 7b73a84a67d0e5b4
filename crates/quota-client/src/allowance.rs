//! Local allowances: the tokens of leases held by this gateway, taken with atomics.
//!
//! A [`Bucket`] is one (plan, key) counter as this gateway sees it. It has two lease
//! [`Slot`]s, so that a new lease can be installed while the previous one is still being
//! spent (no gap at renewal). Each slot is one `AtomicU64` word, `generation:16 |
//! tokens:48`, plus its deadline on the monotonic clock:
//!
//! - the hot path takes `cost` with one compare-and-swap, if the slot's deadline has not
//!   passed and enough tokens are left (no lock, no allocation);
//! - a permit refunded while its lease is still held gives the tokens back with a CAS that
//!   checks the generation; once the refill task has drained the slot (which bumps the
//!   generation), a refund cannot reach the next lease's tokens and is kept as a credit
//!   subtracted from the next settlement instead;
//! - only the refill task installs and drains leases (under the bucket's `book` mutex,
//!   which the hot path never takes).
//!
//! While the cluster is unreachable and no lease is live, a bucket may admit at its plan's
//! safe rate (`safe`, a local GCRA). What it admits that way is counted in `offline`, one
//! atomic add per admitted request (cost units, not yet acknowledged by the cluster); the
//! report task (`crate::offline`) reports it when the cluster answers again and subtracts
//! only what the cluster acknowledged. Such a request holds a charge on [`SAFE_RATE_SLOT`]:
//! another plan's refusal gives the GCRA's capacity back, and a refund also takes the cost
//! off `offline`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use quota_core::{KeyId, LeaseId, PlanId};

use crate::throttle::Gcra;

const TOKEN_BITS: u32 = 48;
const TOKEN_MASK: u64 = (1 << TOKEN_BITS) - 1;

/// "No limit" in the `limit` and `remaining` atomics.
pub(crate) const UNLIMITED: u64 = u64::MAX;

/// The slot number of a charge admitted at the safe rate (not from a lease).
pub(crate) const SAFE_RATE_SLOT: u8 = u8::MAX;

fn pack(generation: u64, tokens: u64) -> u64 {
    (generation << TOKEN_BITS) | (tokens & TOKEN_MASK)
}

fn generation_of(word: u64) -> u16 {
    (word >> TOKEN_BITS) as u16
}

/// The tokens of one lease.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    word: AtomicU64,
    /// Spend nothing at or after this monotonic instant (ns). 0 = no lease.
    deadline_ns: AtomicU64,
}

impl Slot {
    /// Takes `cost` tokens if the lease is live at `now_ns`. Answers the generation taken
    /// from and the tokens left.
    #[inline]
    pub(crate) fn try_take(&self, cost: u64, now_ns: u64) -> Option<(u16, u64)> {
        if now_ns >= self.deadline_ns.load(Ordering::Acquire) {
            return None;
        }
        let mut cur = self.word.load(Ordering::Relaxed);
        loop {
            let tokens = cur & TOKEN_MASK;
            if tokens < cost {
                return None;
            }
            match self.word.compare_exchange_weak(
                cur,
                cur - cost,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some((generation_of(cur), tokens - cost)),
                Err(now) => cur = now,
            }
        }
    }

    /// Gives `cost` tokens back to the lease they were taken from, if it is still held.
    pub(crate) fn give_back(&self, generation: u16, cost: u64) -> bool {
        let mut cur = self.word.load(Ordering::Relaxed);
        loop {
            if generation_of(cur) != generation {
                return false;
            }
            match self.word.compare_exchange_weak(
                cur,
                cur + cost,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Tokens left (for sizing and headers; may change at once).
    pub(crate) fn tokens(&self) -> u64 {
        self.word.load(Ordering::Acquire) & TOKEN_MASK
    }

    /// Whether the lease is live at `now_ns`.
    pub(crate) fn live(&self, now_ns: u64) -> bool {
        now_ns < self.deadline_ns.load(Ordering::Acquire)
    }

    /// Empties the slot and bumps its generation; answers the tokens that were left.
    /// Refill task only.
    pub(crate) fn drain(&self) -> u64 {
        let mut cur = self.word.load(Ordering::Relaxed);
        loop {
            let next = pack(u64::from(generation_of(cur).wrapping_add(1)), 0);
            match self
                .word
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.deadline_ns.store(0, Ordering::Release);
                    return cur & TOKEN_MASK;
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Installs a lease in a drained slot. Refill task only. The deadline is published
    /// first: a reader that sees the tokens also sees a deadline that belongs to them.
    pub(crate) fn install(&self, tokens: u64, deadline_ns: u64) {
        debug_assert_eq!(self.tokens(), 0, "install into a drained slot only");
        self.deadline_ns.store(deadline_ns, Ordering::Release);
        let mut cur = self.word.load(Ordering::Relaxed);
        loop {
            let next = pack(u64::from(generation_of(cur)), tokens.min(TOKEN_MASK));
            match self
                .word
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }
}

/// Takes `cost` from a live slot of a pair, the one with the earlier deadline first (so the
/// older grant is spent before the newer one). Answers (slot, generation, tokens left).
#[inline]
pub(crate) fn take_from_pair(slots: &[Slot; 2], cost: u64, now_ns: u64) -> Option<(u8, u16, u64)> {
    let d0 = slots[0].deadline_ns.load(Ordering::Relaxed);
    let d1 = slots[1].deadline_ns.load(Ordering::Relaxed);
    let order: [usize; 2] = if d1 != 0 && (d0 == 0 || d1 < d0) {
        [1, 0]
    } else {
        [0, 1]
    };
    for i in order {
        if let Some((generation, left)) = slots[i].try_take(cost, now_ns) {
            return Some((i as u8, generation, left));
        }
    }
    None
}

/// What the refill task knows of one slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum SlotBook {
    #[default]
    Free,
    /// A grant for this slot is in flight.
    Pending,
    Held {
        lease: LeaseId,
        granted: u64,
        deadline_ns: u64,
    },
}

/// The refill task's books of a bucket. Never touched by the hot path.
#[derive(Debug, Default)]
pub(crate) struct Book {
    pub(crate) slots: [SlotBook; 2],
    /// Tokens of each slot at the last round, to measure demand.
    pub(crate) last_tokens: [u64; 2],
    /// `starved` at the last round.
    pub(crate) last_starved: u64,
    /// Monotonic ns of the last round.
    pub(crate) last_round_ns: u64,
    /// Recent demand at this gateway, in cost units per second (moving average).
    pub(crate) rate: f64,
    /// Last monotonic ns at which any demand was seen.
    pub(crate) last_demand_ns: u64,
}

/// Why the cluster last refused to grant on a bucket; the hot path repeats it locally
/// until `refused_until_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Refusal {
    QuotaExceeded = 1,
    Disabled = 2,
    Expired = 3,
    UnknownKey = 4,
    NotCovered = 5,
}

impl Refusal {
    fn from_u8(v: u8) -> Option<Refusal> {
        Some(match v {
            1 => Refusal::QuotaExceeded,
            2 => Refusal::Disabled,
            3 => Refusal::Expired,
            4 => Refusal::UnknownKey,
            5 => Refusal::NotCovered,
            _ => return None,
        })
    }
}

/// One (plan, key) counter as this gateway sees it.
#[derive(Debug)]
pub(crate) struct Bucket {
    pub(crate) plan: PlanId,
    pub(crate) key: KeyId,
    pub(crate) slots: [Slot; 2],
    /// While now < this, answer `refusal` without asking the cluster.
    refused_until_ns: AtomicU64,
    refusal: std::sync::atomic::AtomicU8,
    /// The period's end (ms since the epoch), for headers and denials; 0 = unknown.
    pub(crate) reset_at_ms: AtomicU64,
    /// The limit in force; [`UNLIMITED`] for a plan without quota (or unknown yet).
    pub(crate) limit: AtomicU64,
    /// What the cluster had left (unreserved) at the last grant; [`UNLIMITED`] = no quota.
    pub(crate) cluster_remaining: AtomicU64,
    /// Cost units of requests that found no tokens (demand the leases did not cover).
    pub(crate) starved: AtomicU64,
    /// Set by the hot path when the bucket runs low; cleared by the refill task.
    pub(crate) refill_wanted: AtomicBool,
    /// Tokens below which the hot path asks for a refill.
    pub(crate) low_water: AtomicU64,
    /// Refunds that arrived after their lease was drained, to subtract from the next
    /// settlement.
    pub(crate) late_credit: AtomicU64,
    /// Cost units refunded (metrics).
    pub(crate) refunded: AtomicU64,
    /// Admissions at the safe rate while the cluster is unreachable.
    pub(crate) safe: Option<Gcra>,
    /// Cost units admitted at the safe rate that the cluster has not acknowledged yet.
    pub(crate) offline: AtomicU64,
    pub(crate) book: Mutex<Book>,
}

/// The result of taking from a bucket.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Take {
    /// Taken from `slot` (generation `generation`); `left` tokens remain in that slot.
    Taken {
        slot: u8,
        generation: u16,
        left: u64,
    },
    /// The cluster refused recently; repeat its answer.
    Refused(Refusal),
    /// No live tokens: a refill is needed.
    Empty,
}

impl Bucket {
    pub(crate) fn new(plan: PlanId, key: KeyId, safe: Option<Gcra>) -> Bucket {
        Bucket {
            plan,
            key,
            slots: [Slot::default(), Slot::default()],
            refused_until_ns: AtomicU64::new(0),
            refusal: std::sync::atomic::AtomicU8::new(0),
            reset_at_ms: AtomicU64::new(0),
            limit: AtomicU64::new(UNLIMITED),
            cluster_remaining: AtomicU64::new(UNLIMITED),
            starved: AtomicU64::new(0),
            refill_wanted: AtomicBool::new(false),
            low_water: AtomicU64::new(0),
            late_credit: AtomicU64::new(0),
            refunded: AtomicU64::new(0),
            safe,
            offline: AtomicU64::new(0),
            book: Mutex::new(Book::default()),
        }
    }

    /// Takes `cost` from a live slot, the one with the earlier deadline first (so the
    /// older lease is spent before the newer one).
    #[inline]
    pub(crate) fn take(&self, cost: u64, now_ns: u64) -> Take {
        let refused = if now_ns < self.refused_until_ns.load(Ordering::Relaxed) {
            Refusal::from_u8(self.refusal.load(Ordering::Relaxed))
        } else {
            None
        };
        // A key that may not be used at all is refused even with tokens in hand; "no more
        // quota" only means the cluster will not grant more: tokens already leased are still
        // good and are spent first.
        if let Some(r) = refused.filter(|r| *r != Refusal::QuotaExceeded) {
            return Take::Refused(r);
        }
        if let Some((slot, generation, left)) = take_from_pair(&self.slots, cost, now_ns) {
            return Take::Taken {
                slot,
                generation,
                left,
            };
        }
        if let Some(r) = refused {
            return Take::Refused(r);
        }
        self.starved.fetch_add(cost, Ordering::Relaxed);
        Take::Empty
    }

    /// Takes `cost` from the safe rate, if the bucket has one and it allows it now. Undo
    /// with [`Bucket::give_back`] on [`SAFE_RATE_SLOT`]; once the request is admitted (by
    /// every plan), count it with [`Bucket::count_offline`].
    #[inline]
    pub(crate) fn take_safe(&self, cost: u64, now_ns: u64) -> bool {
        self.safe
            .as_ref()
            .is_some_and(|g| g.try_take(cost, now_ns).is_ok())
    }

    /// Counts `cost` admitted at the safe rate, to report to the cluster.
    pub(crate) fn count_offline(&self, cost: u64) {
        self.offline.fetch_add(cost, Ordering::Relaxed);
    }

    /// Takes `n` off `offline` (the cluster acknowledged, or refused for good, a report of
    /// them), never below zero: a refund that raced with the report already took its cost
    /// off, and then the report counted it (the safe side).
    pub(crate) fn settle_offline(&self, n: u64) {
        let _ = self
            .offline
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }

    /// A refunded permit: gives its tokens back, and takes a safe-rate admission off the
    /// count to report (if the report already went out, the cluster counts it anyway).
    pub(crate) fn refund(&self, slot: u8, generation: u16, cost: u64) {
        self.give_back(slot, generation, cost);
        if slot == SAFE_RATE_SLOT {
            self.settle_offline(cost);
        }
    }

    /// Undoes a [`Take::Taken`] or a [`Bucket::take_safe`] (a multi-plan request another
    /// plan refused; a refund).
    pub(crate) fn give_back(&self, slot: u8, generation: u16, cost: u64) {
        if slot == SAFE_RATE_SLOT {
            if let Some(g) = &self.safe {
                g.give_back(cost);
            }
            return;
        }
        let returned = self
            .slots
            .get(usize::from(slot))
            .is_some_and(|s| s.give_back(generation, cost));
        if !returned {
            self.late_credit.fetch_add(cost, Ordering::Relaxed);
        }
    }

    /// Live tokens at `now_ns`, over both slots.
    pub(crate) fn live_tokens(&self, now_ns: u64) -> u64 {
        self.slots
            .iter()
            .filter(|s| s.live(now_ns))
            .map(Slot::tokens)
            .sum()
    }

    /// Remember a refusal of the cluster for `for_ns`.
    pub(crate) fn refuse(&self, refusal: Refusal, until_ns: u64) {
        self.refusal.store(refusal as u8, Ordering::Relaxed);
        self.refused_until_ns.store(until_ns, Ordering::Release);
    }

    /// Whether a refusal of the cluster is still in force at `now_ns`.
    pub(crate) fn take_refusal_pending(&self, now_ns: u64) -> bool {
        now_ns < self.refused_until_ns.load(Ordering::Acquire)
    }

    /// Forget any refusal (a grant succeeded).
    pub(crate) fn clear_refusal(&self) {
        self.refused_until_ns.store(0, Ordering::Release);
    }

    /// Take (up to `max`) from the late-refund credit.
    pub(crate) fn take_credit(&self, max: u64) -> u64 {
        let mut cur = self.late_credit.load(Ordering::Relaxed);
        loop {
            let n = cur.min(max);
            match self.late_credit.compare_exchange_weak(
                cur,
                cur - n,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return n,
                Err(now) => cur = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Property: a slot never hands out more than was installed, nor anything past its
    // deadline; a refund after a drain cannot reach the next lease.
    // Set-up: install 5 tokens with deadline 100; take at various times; drain; reinstall.
    // Pass: the counts below.
    #[test]
    fn slot_take_deadline_and_generations() {
        let s = Slot::default();
        assert!(s.try_take(1, 0).is_none(), "no lease yet");
        s.install(5, 100);
        let (g, left) = s.try_take(2, 10).unwrap();
        assert_eq!(left, 3);
        assert!(s.try_take(4, 10).is_none(), "not enough tokens");
        assert!(s.try_take(1, 100).is_none(), "deadline reached");
        assert!(s.give_back(g, 2));
        assert_eq!(s.tokens(), 5);
        let (g2, _) = s.try_take(5, 50).unwrap();
        assert_eq!(s.drain(), 0);
        s.install(7, 1000);
        assert!(!s.give_back(g2, 5), "stale generation refused");
        assert_eq!(s.tokens(), 7);
    }

    // Property: after the cluster refuses a further lease for lack of quota, the tokens
    // already leased are still spent, and only then is the request refused; a refusal of
    // the key itself (disabled) applies at once. (Regression: a quota refusal used to block
    // live tokens, answering false 429s on small quotas.)
    // Set-up: a bucket with 2 leased tokens and a QuotaExceeded refusal in force.
    // Pass: two takes succeed, the third is refused as QuotaExceeded; with Disabled the
    // first take is refused.
    #[test]
    fn quota_refusal_does_not_block_leased_tokens() {
        let b = Bucket::new(PlanId(1), KeyId(1), None);
        b.slots[0].install(2, 1_000);
        b.refuse(Refusal::QuotaExceeded, 1_000);
        assert!(matches!(b.take(1, 10), Take::Taken { .. }));
        assert!(matches!(b.take(1, 10), Take::Taken { .. }));
        assert!(matches!(
            b.take(1, 10),
            Take::Refused(Refusal::QuotaExceeded)
        ));
        let d = Bucket::new(PlanId(1), KeyId(2), None);
        d.slots[0].install(2, 1_000);
        d.refuse(Refusal::Disabled, 1_000);
        assert!(matches!(d.take(1, 10), Take::Refused(Refusal::Disabled)));
    }

    // Property: a bucket spends the lease with the earlier deadline first, falls over to
    // the other, records starvation, and keeps late refunds as credit.
    #[test]
    fn bucket_order_and_credit() {
        let b = Bucket::new(PlanId(1), KeyId(1), None);
        b.slots[0].install(1, 500);
        b.slots[1].install(1, 200);
        match b.take(1, 0) {
            Take::Taken { slot, .. } => assert_eq!(slot, 1),
            other => panic!("{other:?}"),
        }
        let Take::Taken {
            slot, generation, ..
        } = b.take(1, 0)
        else {
            panic!("second take")
        };
        assert_eq!(slot, 0);
        assert!(matches!(b.take(1, 0), Take::Empty));
        assert_eq!(b.starved.load(Ordering::Relaxed), 1);
        b.slots[0].drain();
        b.give_back(slot, generation, 1);
        assert_eq!(b.take_credit(10), 1);
        b.refuse(Refusal::QuotaExceeded, 50);
        assert!(matches!(
            b.take(1, 10),
            Take::Refused(Refusal::QuotaExceeded)
        ));
    }

    // Property: the safe rate admits up to its burst; a give-back (another plan refused)
    // returns the capacity without touching the count; a refund returns both; settling a
    // report never goes below zero.
    // Set-up: a bucket with a safe rate of 1/s and a burst of 2, no lease.
    // Pass: two admissions counted, a third refused; counts 2, 2 after a give-back, 1 after
    // a refund (each time with room for one more admission); settling 5 leaves 0.
    #[test]
    fn safe_rate_admissions_are_counted_and_given_back() {
        let b = Bucket::new(PlanId(1), KeyId(1), Gcra::new(1.0, 2.0));
        assert!(matches!(b.take(1, 10), Take::Empty));
        for _ in 0..2 {
            assert!(b.take_safe(1, 10));
            b.count_offline(1);
        }
        assert!(!b.take_safe(1, 10), "burst spent");
        assert_eq!(b.offline.load(Ordering::Relaxed), 2);
        b.give_back(SAFE_RATE_SLOT, 0, 1);
        assert_eq!(b.offline.load(Ordering::Relaxed), 2);
        assert!(b.take_safe(1, 10), "the given-back capacity is there again");
        b.refund(SAFE_RATE_SLOT, 0, 1);
        assert_eq!(b.offline.load(Ordering::Relaxed), 1);
        assert_eq!(b.late_credit.load(Ordering::Relaxed), 0);
        assert!(b.take_safe(1, 10), "the refunded capacity is there again");
        b.settle_offline(5);
        assert_eq!(b.offline.load(Ordering::Relaxed), 0);
        let none = Bucket::new(PlanId(1), KeyId(2), None);
        assert!(!none.take_safe(1, 10), "no safe rate: deny");
        assert_eq!(none.offline.load(Ordering::Relaxed), 0);
    }

    // Property: concurrent takers never take more than installed in total.
    // Set-up: 4 threads take 1 at a time from 10,000 tokens until empty.
    // Pass: exactly 10,000 successful takes.
    #[test]
    fn concurrent_takes_are_exact() {
        let b = std::sync::Arc::new(Bucket::new(PlanId(1), KeyId(1), None));
        b.slots[0].install(6_000, u64::MAX);
        b.slots[1].install(4_000, u64::MAX);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while let Take::Taken { .. } = b.take(1, 1) {
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 10_000);
    }
}
