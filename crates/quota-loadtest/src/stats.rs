//! The numbers: a Zipf sampler, a latency histogram with percentiles, and the quota
//! accounting (over- and under-admission) every report is built from.

/// A small, fast, seedable generator (splitmix64): the workload needs speed and
/// reproducibility, not cryptographic quality.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform integer in [0, n); `n` > 0.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "below(0)");
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// Zipf over ranks 0..n: rank `i` is drawn with probability proportional to
/// `1 / (i + 1)^s`. Sampling is a binary search in the precomputed CDF (n up to a few
/// million keys is fine; the loadtest uses thousands).
#[derive(Clone, Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// The distribution over `n` (> 0) ranks with exponent `s` (>= 0; 0 = uniform).
    pub fn new(n: usize, s: f64) -> Zipf {
        assert!(n > 0, "Zipf over no ranks");
        assert!(s >= 0.0 && s.is_finite(), "Zipf exponent must be >= 0");
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for i in 0..n {
            total += 1.0 / ((i + 1) as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    /// The probability of rank `i`.
    pub fn probability(&self, i: usize) -> f64 {
        let below = if i == 0 { 0.0 } else { self.cdf[i - 1] };
        self.cdf[i] - below
    }

    /// Draws a rank.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.next_f64();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

/// Sub-buckets per power of two: values are kept with a relative error below 1/64.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets needed to cover every u64.
const BUCKETS: usize = ((64 - SUB_BITS) as usize) * SUB as usize + 2 * SUB as usize;

/// A log-linear histogram of u64 values (nanoseconds here): exact below 128, then 64
/// buckets per power of two. Recording is an index computation and one add.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    fn index(v: u64) -> usize {
        if v < 2 * SUB {
            return v as usize;
        }
        let exp = (63 - v.leading_zeros()) - SUB_BITS;
        (u64::from(exp) * SUB + (v >> exp)) as usize
    }

    /// The largest value that falls in bucket `idx`.
    fn upper(idx: usize) -> u64 {
        let idx = idx as u64;
        if idx < 2 * SUB {
            return idx;
        }
        let exp = idx / SUB - 1;
        let mant = idx - SUB * exp;
        ((mant + 1) << exp).saturating_sub(1)
    }

    /// Records one value.
    pub fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value recorded.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` in [0, 1]: the upper bound of the bucket holding the
    /// `ceil(q x n)`-th smallest value (never below the true value, at most 1/64 above it),
    /// capped by the maximum. 0 when empty.
    pub fn percentile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (idx, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper(idx).min(self.max);
            }
        }
        self.max
    }
}

/// One key's books at the end of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyBooks {
    /// The limit that applied (per period; per window for the fixed-window baseline).
    pub limit: u64,
    /// Admitted (committed) by the gateways.
    pub admitted: u64,
    /// Whether demand exceeded what was admitted (some request was denied for quota).
    pub saturated: bool,
}

impl KeyBooks {
    /// Admitted past the limit; must be 0.
    pub fn over(&self) -> u64 {
        self.admitted.saturating_sub(self.limit)
    }

    /// Quota left unspent although demand wanted it (0 for an unsaturated key: it got
    /// everything it asked for).
    pub fn under(&self) -> u64 {
        if self.saturated {
            self.limit.saturating_sub(self.admitted)
        } else {
            0
        }
    }
}

/// Totals over many keys.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Books {
    /// Sum of admitted.
    pub admitted: u64,
    /// Sum of limits.
    pub limit: u64,
    /// Sum of over-admission.
    pub over: u64,
    /// Keys admitted past their limit.
    pub keys_over: u64,
    /// Keys whose demand exceeded what they were admitted.
    pub saturated_keys: u64,
    /// Unspent quota of saturated keys, in percent of their limits (0 when none).
    pub under_pct: f64,
}

/// Sums the books of `keys`.
pub fn total(keys: &[KeyBooks]) -> Books {
    let mut b = Books::default();
    let mut sat_limit = 0u64;
    let mut sat_under = 0u64;
    for k in keys {
        b.admitted += k.admitted;
        b.limit += k.limit;
        b.over += k.over();
        b.keys_over += u64::from(k.over() > 0);
        if k.saturated {
            b.saturated_keys += 1;
            sat_limit += k.limit;
            sat_under += k.under();
        }
    }
    b.under_pct = if sat_limit == 0 {
        0.0
    } else {
        100.0 * sat_under as f64 / sat_limit as f64
    };
    b
}

/// The largest sum of `window` consecutive entries of `series` (a sliding window over a
/// time series of per-tick counts); the whole sum when the series is shorter.
pub fn max_window_sum(series: &[u64], window: usize) -> u64 {
    let window = window.max(1);
    let mut sum: u64 = series.iter().take(window).sum();
    let mut best = sum;
    for i in window..series.len() {
        sum = sum + series[i] - series[i - window];
        best = best.max(sum);
    }
    best
}
