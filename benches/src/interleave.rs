//! Comparing backends fairly on a machine that is not quiet.
//!
//! On a shared 2-core machine, other processes come and go within seconds,
//! and one backend measured for 6 s before another can see a different
//! machine. [`run_interleaved`] splits each backend's measured time into
//! rounds and alternates them (A B A B ...), so every backend samples the
//! same stretch of time and the same interference; each backend's rounds
//! are merged into one [`Report`]. The first round warms up for the
//! workload's full warm-up, later rounds (fresh connections) for at most
//! [`ROUND_WARMUP`].

use crate::backend::BackendFactory;
use crate::report::Report;
use crate::runner::{measure, preload, RunError};
use crate::workload::{Stop, Workload};
use std::time::Duration;

/// The longest warm-up of every round after the first.
pub const ROUND_WARMUP: Duration = Duration::from_millis(200);

/// Runs `workload` against every factory, preloading each once, then
/// alternating `rounds` slices of the measured period between them. Reports
/// are in the order of `factories`, each for the whole workload.
pub fn run_interleaved(
    workload: &Workload,
    factories: &[&dyn BackendFactory],
    rounds: usize,
) -> Result<Vec<Report>, RunError> {
    let rounds = rounds.max(1);
    workload.validate()?;
    if workload.preload {
        for factory in factories {
            preload(workload, *factory)?;
        }
    }
    let mut reports: Vec<Option<Report>> = factories.iter().map(|_| None).collect();
    for round in 0..rounds {
        let slice = Workload {
            stop: slice(workload.stop, rounds, round),
            warmup: if round == 0 {
                workload.warmup
            } else {
                workload.warmup.min(ROUND_WARMUP)
            },
            // Each round draws a different request sequence, the same for
            // every backend.
            seed: workload.seed.wrapping_add(1_000_003 * round as u64),
            ..workload.clone()
        };
        for (factory, report) in factories.iter().zip(&mut reports) {
            let measured = measure(&slice, *factory)?;
            match report {
                Some(r) => r.merge(measured),
                None => *report = Some(measured),
            }
        }
    }
    Ok(reports
        .into_iter()
        .flatten()
        .map(|mut r| {
            r.workload = workload.clone();
            r
        })
        .collect())
}

/// Round `round`'s share of the measured period (the remainder goes to the
/// first rounds).
fn slice(stop: Stop, rounds: usize, round: usize) -> Stop {
    let n = rounds as u32;
    match stop {
        Stop::After(d) => Stop::After(d / n),
        Stop::Requests(total) => {
            let rounds = rounds as u64;
            Stop::Requests(total / rounds + u64::from((round as u64) < total % rounds))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{KvBackend, Result};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Counts connections and answers every request at once.
    #[derive(Default)]
    struct Null {
        name: &'static str,
        connects: AtomicU64,
    }

    struct NullConn;

    impl KvBackend for NullConn {
        fn get(&mut self, _key: &str) -> Result<Option<Vec<u8>>> {
            Ok(Some(Vec::new()))
        }
        fn put(&mut self, _key: &str, _value: &[u8]) -> Result<()> {
            Ok(())
        }
    }

    impl BackendFactory for Null {
        fn name(&self) -> &str {
            self.name
        }
        fn connect(&self) -> Result<Box<dyn KvBackend + Send>> {
            self.connects.fetch_add(1, Ordering::Relaxed);
            Ok(Box::new(NullConn))
        }
    }

    #[test]
    fn rounds_alternate_and_merge_into_one_report_per_backend() {
        let a = Null {
            name: "a",
            ..Null::default()
        };
        let b = Null {
            name: "b",
            ..Null::default()
        };
        let w = Workload {
            clients: 2,
            keys: 10,
            stop: Stop::Requests(1_001),
            warmup: Duration::ZERO,
            ..Workload::default()
        };
        let reports = run_interleaved(&w, &[&a, &b], 4).unwrap();
        assert_eq!(reports.len(), 2);
        for (r, name) in reports.iter().zip(["a", "b"]) {
            assert_eq!(r.backend, name);
            assert_eq!(r.workload, w);
            assert_eq!(r.counts.reads + r.counts.writes, 1_001);
            assert_eq!(r.histogram.len(), 1_001);
        }
        // One preload connection, then two clients in each of four rounds.
        assert_eq!(a.connects.load(Ordering::Relaxed), 1 + 4 * 2);
        assert_eq!(b.connects.load(Ordering::Relaxed), 1 + 4 * 2);
    }

    #[test]
    fn a_period_splits_into_equal_rounds() {
        let d = Stop::After(Duration::from_secs(6));
        assert_eq!(slice(d, 6, 5), Stop::After(Duration::from_secs(1)));
        let shares: Vec<Stop> = (0..3).map(|i| slice(Stop::Requests(10), 3, i)).collect();
        assert_eq!(
            shares,
            [Stop::Requests(4), Stop::Requests(3), Stop::Requests(3)]
        );
    }
}
