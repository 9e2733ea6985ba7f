//! [`Histogram`]: a latency histogram of fixed, log-spaced buckets, as
//! roles count it and reports carry it to the monitor.
//!
//! Why fixed buckets: every role and every report agrees on them, so the
//! monitor merges histograms of many threads and processes by adding
//! counts, and renders them as Prometheus `_bucket{le=...}` series with no
//! translation. Why plain integers, no atomics: each role is one state
//! machine stepped by one thread (a storage thread, a scheduler, a cache),
//! so recording is two additions into its own state, with no allocation
//! and no lock; the per-thread histograms are summed when the monitor
//! gathers its reports, once a period. Counts are cumulative since the
//! role started (a restart starts them again at zero, which Prometheus's
//! `rate()` and [`Histogram::since`] both handle).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Upper bounds of the finite buckets, in microseconds: 1, 2.5, 5 per
/// decade from 10 µs to 10 s. A last bucket counts everything above.
pub const BOUNDS_MICROS: [u64; 19] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Buckets: the finite ones and the one above them (`le="+Inf"`).
pub const BUCKETS: usize = BOUNDS_MICROS.len() + 1;

/// Counts of observed durations per bucket (not cumulative: bucket `i`
/// counts durations in `(BOUNDS_MICROS[i-1], BOUNDS_MICROS[i]]`), and
/// their sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    pub counts: [u64; BUCKETS],
    /// Sum of every observed duration, in microseconds.
    pub sum_micros: u64,
}

impl Histogram {
    /// Counts one duration.
    pub fn record(&mut self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BOUNDS_MICROS.partition_point(|&b| b < micros);
        self.counts[i] += 1;
        self.sum_micros = self.sum_micros.saturating_add(micros);
    }

    /// Adds `other`'s counts (histograms of several threads or processes).
    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
    }

    /// What was counted after `earlier` (an older reading of the same
    /// counts); counts that went down (a restart) count as zero.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let mut d = Histogram::default();
        for (i, c) in d.counts.iter_mut().enumerate() {
            *c = self.counts[i].saturating_sub(earlier.counts[i]);
        }
        d.sum_micros = self.sum_micros.saturating_sub(earlier.sum_micros);
        d
    }

    /// Durations counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper bound of the bucket holding the `q` quantile (0 < q <= 1),
    /// in microseconds: an upper estimate, exact to the bucket. `None` when
    /// nothing was counted; `u64::MAX` when it lies above the last bound.
    pub fn quantile_micros(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(BOUNDS_MICROS.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        Some(u64::MAX)
    }

    /// `(upper bound in seconds, cumulative count)` per finite bucket, as
    /// Prometheus's `_bucket{le=...}` wants them; the `+Inf` bucket is
    /// [`Histogram::count`].
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let mut seen = 0;
        BOUNDS_MICROS.iter().zip(&self.counts).map(move |(b, c)| {
            seen += c;
            (*b as f64 / 1e6, seen)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn a_duration_lands_in_the_first_bucket_whose_bound_holds_it() {
        let mut h = Histogram::default();
        h.record(us(10)); // on the bound: le="0.00001"
        h.record(us(11));
        h.record(us(20_000_000)); // above every bound
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[BUCKETS - 1], 1);
        assert_eq!(h.count(), 3);
        assert_eq!(h.sum_micros, 20_000_021);
        let cumulative: Vec<u64> = h.cumulative().map(|(_, n)| n).collect();
        assert_eq!(cumulative[0], 1);
        assert_eq!(*cumulative.last().unwrap(), 2);
    }

    #[test]
    fn quantiles_are_bucket_upper_bounds_and_deltas_forget_restarts() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_micros(0.99), None);
        for _ in 0..99 {
            h.record(us(800));
        }
        h.record(us(40_000));
        assert_eq!(h.quantile_micros(0.5), Some(1_000));
        assert_eq!(h.quantile_micros(0.99), Some(1_000));
        assert_eq!(h.quantile_micros(1.0), Some(50_000));
        let before = h;
        h.record(us(3));
        let d = h.since(&before);
        assert_eq!((d.count(), d.sum_micros), (1, 3));
        // A restarted role's smaller counts give an empty delta.
        assert_eq!(Histogram::default().since(&h).count(), 0);
        let mut sum = h;
        sum.add(&before);
        assert_eq!(sum.count(), h.count() + before.count());
    }
}
