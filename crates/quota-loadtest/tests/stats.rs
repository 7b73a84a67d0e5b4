//! Unit tests of the harness's math: the Zipf sampler, percentiles, the quota books, the
//! sliding window, fault specs and RESP encoding.

use std::time::Duration;

use quota_loadtest::faults::{FaultKind, FaultSpec};
use quota_loadtest::stats::{Histogram, KeyBooks, Rng, Zipf, max_window_sum, total};

// Property: Zipf(s) draws rank i with probability proportional to 1/(i+1)^s.
// Set-up: 10 ranks, s = 1.0; 200,000 draws with a fixed seed.
// Pass: the probabilities sum to 1 and rank 0 has 1/H(10); every rank's observed share is
// within 1 percentage point of its probability; shares decrease with rank (up to noise).
#[test]
fn zipf_frequencies_match_the_distribution() {
    let z = Zipf::new(10, 1.0);
    let h10: f64 = (1..=10).map(|i| 1.0 / f64::from(i)).sum();
    assert!((z.probability(0) - 1.0 / h10).abs() < 1e-12);
    let sum: f64 = (0..10).map(|i| z.probability(i)).sum();
    assert!((sum - 1.0).abs() < 1e-9);
    let mut rng = Rng::new(7);
    let mut counts = [0u64; 10];
    let n = 200_000;
    for _ in 0..n {
        counts[z.sample(&mut rng)] += 1;
    }
    for (i, &c) in counts.iter().enumerate() {
        let share = c as f64 / n as f64;
        assert!(
            (share - z.probability(i)).abs() < 0.01,
            "rank {i}: share {share}, expected {}",
            z.probability(i)
        );
    }
    assert!(counts[0] > counts[1] && counts[1] > counts[4] && counts[4] > counts[9]);
}

// Property: exponent 0 is uniform, and one rank always draws rank 0.
// Set-up: Zipf(4, 0) with 100,000 draws; Zipf(1, 1.1) with 100 draws.
// Pass: each of the 4 ranks gets 25% +- 1%; the single rank is always 0.
#[test]
fn zipf_edge_cases() {
    let z = Zipf::new(4, 0.0);
    let mut rng = Rng::new(1);
    let mut counts = [0u64; 4];
    for _ in 0..100_000 {
        counts[z.sample(&mut rng)] += 1;
    }
    for c in counts {
        assert!((c as f64 / 100_000.0 - 0.25).abs() < 0.01, "{counts:?}");
    }
    let one = Zipf::new(1, 1.1);
    assert!((0..100).all(|_| one.sample(&mut rng) == 0));
}

// Property: percentiles are never below the true value and at most 1/64 above it.
// Set-up: the values 1..=100,000 recorded once each.
// Pass: p50, p99 and p99.9 are within [true, true x (1 + 1/64)]; p100 is the max; an empty
// histogram answers 0; merging two halves gives the same answers.
#[test]
fn percentiles_are_tight_upper_bounds() {
    let mut h = Histogram::default();
    let mut lo = Histogram::default();
    let mut hi = Histogram::default();
    for v in 1..=100_000u64 {
        h.record(v);
        if v <= 50_000 {
            lo.record(v)
        } else {
            hi.record(v)
        }
    }
    for (q, exact) in [(0.5, 50_000u64), (0.99, 99_000), (0.999, 99_900)] {
        let p = h.percentile(q);
        assert!(
            p >= exact && p as f64 <= exact as f64 * (1.0 + 1.0 / 64.0),
            "q {q}: {p} vs {exact}"
        );
    }
    assert_eq!(h.percentile(1.0), 100_000);
    assert_eq!(h.count(), 100_000);
    assert_eq!(Histogram::default().percentile(0.5), 0);
    lo.merge(&hi);
    assert_eq!(lo.percentile(0.99), h.percentile(0.99));
    // Small values are exact.
    let mut small = Histogram::default();
    for v in [3u64, 5, 7, 100] {
        small.record(v);
    }
    assert_eq!(small.percentile(0.5), 5);
    assert_eq!(small.percentile(0.75), 7);
}

// Property: over-admission counts only what passed the limit; under-admission counts only
// saturated keys, in percent of their limits.
// Set-up: four keys with limit 100: admitted 100 (saturated), 90 (saturated), 30 (not
// saturated), 105 (saturated).
// Pass: over = 5 on one key; under = 10 / 300 = 3.33 %; totals add up.
#[test]
fn books_over_and_under_admission() {
    let k = |admitted, saturated| KeyBooks {
        limit: 100,
        admitted,
        saturated,
    };
    let keys = [k(100, true), k(90, true), k(30, false), k(105, true)];
    assert_eq!(keys[3].over(), 5);
    assert_eq!(keys[1].under(), 10);
    assert_eq!(keys[2].under(), 0);
    let t = total(&keys);
    assert_eq!(t.admitted, 325);
    assert_eq!(t.limit, 400);
    assert_eq!(t.over, 5);
    assert_eq!(t.keys_over, 1);
    assert_eq!(t.saturated_keys, 3);
    assert!((t.under_pct - 100.0 * 10.0 / 300.0).abs() < 1e-9);
    assert_eq!(total(&[]).under_pct, 0.0);
}

// Property: the sliding-window maximum finds the worst window (the fixed window's
// boundary effect: a full window's worth on each side of a boundary).
// Set-up: per-tick admissions [0, 0, 10, 10, 10, 10, 0, 0] and windows of 2, 4 and 100.
// Pass: 20, 40 and the whole sum 40.
#[test]
fn sliding_window_maximum() {
    let s = [0, 0, 10, 10, 10, 10, 0, 0];
    assert_eq!(max_window_sum(&s, 2), 20);
    assert_eq!(max_window_sum(&s, 4), 40);
    assert_eq!(max_window_sum(&s, 100), 40);
    assert_eq!(max_window_sum(&[], 3), 0);
}

// Property: fault specs parse with and without a length, and bad ones are refused.
// Set-up: "kill-leader@5", "pause-follower@1.5+3", and three malformed specs.
// Pass: the parsed values; errors for the malformed ones.
#[test]
fn fault_specs_parse() {
    let f: FaultSpec = "kill-leader@5".parse().unwrap();
    assert_eq!(f.kind, FaultKind::KillLeader);
    assert_eq!(f.at, Duration::from_secs(5));
    assert_eq!(f.length, Duration::from_secs(2));
    let p: FaultSpec = "pause-follower@1.5+3".parse().unwrap();
    assert_eq!(p.kind, FaultKind::PauseFollower);
    assert_eq!(p.at, Duration::from_millis(1500));
    assert_eq!(p.length, Duration::from_secs(3));
    for bad in ["kill-leader", "reboot@1", "kill-leader@-1"] {
        assert!(bad.parse::<FaultSpec>().is_err(), "{bad} parsed");
    }
}

// Property: commands are encoded as RESP arrays of bulk strings.
// Set-up: INCR of key "rl:k1:0".
// Pass: the exact bytes.
#[test]
fn resp_encoding() {
    let mut out = Vec::new();
    quota_loadtest::redis::encode(&mut out, &[b"INCR", b"rl:k1:0"]);
    assert_eq!(out, b"*2\r\n$4\r\nINCR\r\n$7\r\nrl:k1:0\r\n");
}
