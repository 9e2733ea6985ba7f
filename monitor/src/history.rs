//! [`History`]: the last minutes of the cluster's throughput and latency,
//! one [`Sample`] per monitor period, for the dashboard's plots.
//!
//! The ring is bounded ([`History::new`] takes how long it spans): the
//! oldest sample goes when a new one comes. Latency quantiles are of what
//! happened during the period only: each sample subtracts the previous
//! period's cumulative histograms from this period's ([`Histogram::since`]).

use anna::histogram::Histogram;
use serde::Serialize;
use std::collections::VecDeque;
use std::time::Duration;

/// How long the dashboard's plots span.
pub const SPAN: Duration = Duration::from_secs(600);

/// One period's figures of both tiers.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Milliseconds since the Unix epoch (or the simulation's origin).
    pub at_ms: u64,
    /// KVS operations a second: gets, puts and deletes at every storage
    /// thread over its last epoch.
    pub kvs_ops: f64,
    /// p99 of the KVS operations the caches made this period, in
    /// milliseconds (a bucket's upper bound); `None` with none made.
    pub kvs_p99_ms: Option<f64>,
    /// Calls completed a second, all functions.
    pub calls: f64,
    /// p99 of the calls (and DAG calls) that finished this period, in
    /// milliseconds; `None` with none finished.
    pub call_p99_ms: Option<f64>,
    /// Calls in flight and queued at the schedulers.
    pub in_flight: u32,
    pub queued: u32,
}

/// What one period adds: the tiers' figures and their cumulative
/// histograms.
pub struct Figures {
    pub at_ms: u64,
    pub kvs_ops: f64,
    pub kvs: Histogram,
    pub calls: f64,
    pub call_latency: Histogram,
    pub in_flight: u32,
    pub queued: u32,
}

/// A bounded ring of [`Sample`]s.
#[derive(Debug)]
pub struct History {
    samples: VecDeque<Sample>,
    capacity: usize,
    kvs: Histogram,
    calls: Histogram,
}

fn p99_ms(h: &Histogram) -> Option<f64> {
    h.quantile_micros(0.99).map(|us| us as f64 / 1000.0)
}

impl History {
    /// A ring spanning `span` of samples taken every `period`.
    pub fn new(span: Duration, period: Duration) -> Self {
        let capacity = (span.as_micros() / period.as_micros().max(1)).clamp(1, 100_000) as usize;
        History {
            samples: VecDeque::with_capacity(capacity),
            capacity,
            kvs: Histogram::default(),
            calls: Histogram::default(),
        }
    }

    /// Adds one period's sample, dropping the oldest if the ring is full.
    pub fn push(&mut self, f: Figures) {
        let sample = Sample {
            at_ms: f.at_ms,
            kvs_ops: f.kvs_ops,
            kvs_p99_ms: p99_ms(&f.kvs.since(&self.kvs)),
            calls: f.calls,
            call_p99_ms: p99_ms(&f.call_latency.since(&self.calls)),
            in_flight: f.in_flight,
            queued: f.queued,
        };
        self.kvs = f.kvs;
        self.calls = f.call_latency;
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }

    /// The most samples it keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(at_ms: u64, kvs: Histogram) -> Figures {
        Figures {
            at_ms,
            kvs_ops: 10.0,
            kvs,
            calls: 0.0,
            call_latency: Histogram::default(),
            in_flight: 0,
            queued: 0,
        }
    }

    #[test]
    fn the_ring_keeps_its_span_and_quantiles_cover_one_period() {
        let mut h = History::new(Duration::from_secs(10), Duration::from_secs(1));
        assert_eq!(h.capacity(), 10);
        let mut kvs = Histogram::default();
        for t in 0..25 {
            // 100 slow operations in period 3, fast ones in every other.
            let (n, us) = if t == 3 { (100, 200_000) } else { (100, 300) };
            for _ in 0..n {
                kvs.record(Duration::from_micros(us));
            }
            h.push(figures(t * 1000, kvs));
        }
        let samples: Vec<&Sample> = h.samples().collect();
        assert_eq!(samples.len(), 10);
        assert_eq!(samples[0].at_ms, 15_000);
        assert!(samples.iter().all(|s| s.kvs_p99_ms == Some(0.5)));
        let mut h = History::new(Duration::from_secs(10), Duration::from_secs(1));
        let mut kvs = Histogram::default();
        h.push(figures(0, kvs));
        kvs.record(Duration::from_micros(200_000));
        h.push(figures(1000, kvs));
        h.push(figures(2000, kvs));
        let p99: Vec<Option<f64>> = h.samples().map(|s| s.kvs_p99_ms).collect();
        assert_eq!(p99, [None, Some(250.0), None]);
    }
}
