//! Comparing backends fairly on a machine that is not quiet.
//!
//! On a shared 2-core machine, other processes come and go within seconds,
//! and one backend measured for 6 s before another can see a different
//! machine. [`run_interleaved`] splits each backend's measured time into
//! rounds and alternates them, so every backend samples the same stretch
//! of time and the same interference; each backend's rounds are merged
//! into one [`Report`]. The order turns from round to round (A B, B A, A B
//! ... with two; A B C, B C A, C A B ... with three), so no backend is
//! always the one measured right after another's load. The first round warms up for the
//! workload's full warm-up, later rounds for at most [`ROUND_WARMUP`].
//!
//! Connections come from a [`ConnectionPool`] and stay open from round to
//! round (and, with one pool for a whole matrix, from workload to
//! workload), as a benchmark client's would. Opening fresh ones each round
//! would leave hundreds of departed clients behind, and a ZeroMQ server
//! keeps trying to reconnect to every one of them (every 100 ms by
//! default), which burns CPU that then skews every later row.

use crate::backend::BackendFactory;
use crate::report::Report;
use crate::runner::{connect_all, measure_on, preload_on, Connection, RunError};
use crate::workload::{Stop, Workload};
use std::collections::HashMap;
use std::time::Duration;

/// The longest warm-up of every round after the first.
pub const ROUND_WARMUP: Duration = Duration::from_millis(200);

/// Open connections per backend (by name), reused from run to run.
#[derive(Default)]
pub struct ConnectionPool {
    idle: HashMap<String, Vec<Connection>>,
}

impl ConnectionPool {
    /// `n` connections to `factory`'s store: the pooled ones first, new
    /// ones if there are not enough.
    pub fn take(
        &mut self,
        factory: &dyn BackendFactory,
        n: usize,
    ) -> Result<Vec<Connection>, RunError> {
        let mut conns = self.idle.remove(factory.name()).unwrap_or_default();
        if conns.len() < n {
            conns.extend(connect_all(factory, n - conns.len())?);
        }
        let rest = conns.split_off(n);
        self.idle.insert(factory.name().to_string(), rest);
        Ok(conns)
    }

    /// Returns connections for the next [`ConnectionPool::take`].
    pub fn put_back(&mut self, factory: &dyn BackendFactory, mut conns: Vec<Connection>) {
        let idle = self.idle.entry(factory.name().to_string()).or_default();
        conns.append(idle);
        *idle = conns;
    }

    /// How many connections to `backend` are pooled.
    pub fn idle(&self, backend: &str) -> usize {
        self.idle.get(backend).map_or(0, Vec::len)
    }
}

/// Runs `workload` against every factory, preloading each once, then
/// alternating `rounds` slices of the measured period between them, on
/// connections that stay open throughout. Reports are in the order of
/// `factories`, each for the whole workload.
pub fn run_interleaved(
    workload: &Workload,
    factories: &[&dyn BackendFactory],
    rounds: usize,
) -> Result<Vec<Report>, RunError> {
    run_interleaved_pooled(&mut ConnectionPool::default(), workload, factories, rounds)
}

/// [`run_interleaved`] on connections from `pool`, returned to it after.
pub fn run_interleaved_pooled(
    pool: &mut ConnectionPool,
    workload: &Workload,
    factories: &[&dyn BackendFactory],
    rounds: usize,
) -> Result<Vec<Report>, RunError> {
    let rounds = rounds.max(1);
    workload.validate()?;
    if workload.preload {
        for factory in factories {
            let mut conns = pool.take(*factory, 1)?;
            let loaded = preload_on(workload, factory.name(), conns[0].as_mut());
            pool.put_back(*factory, conns);
            loaded?;
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
        for i in round_order(factories.len(), round) {
            let (factory, report) = (&factories[i], &mut reports[i]);
            let mut conns = pool.take(*factory, slice.clients)?;
            let measured = measure_on(&slice, *factory, &mut conns);
            pool.put_back(*factory, conns);
            let measured = measured?;
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

/// The order of `n` backends in round `round`: turned by one each round.
fn round_order(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| (round + k) % n)
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
        let mut pool = ConnectionPool::default();
        let reports = run_interleaved_pooled(&mut pool, &w, &[&a, &b], 4).unwrap();
        assert_eq!(reports.len(), 2);
        for (r, name) in reports.iter().zip(["a", "b"]) {
            assert_eq!(r.backend, name);
            assert_eq!(r.workload, w);
            assert_eq!(r.counts.reads + r.counts.writes, 1_001);
            assert_eq!(r.histogram.len(), 1_001);
        }
        // The preload connection becomes the first client's; the rounds
        // reuse both.
        assert_eq!(a.connects.load(Ordering::Relaxed), 2);
        assert_eq!(b.connects.load(Ordering::Relaxed), 2);
        assert_eq!(pool.idle("a"), 2);
        // A later workload with fewer clients opens nothing new.
        let one = Workload { clients: 1, ..w };
        run_interleaved_pooled(&mut pool, &one, &[&a], 2).unwrap();
        assert_eq!(a.connects.load(Ordering::Relaxed), 2);
        assert_eq!(pool.idle("a"), 2);
    }

    #[test]
    fn the_order_of_backends_turns_from_round_to_round() {
        let orders: Vec<Vec<usize>> = (0..4).map(|r| round_order(3, r).collect()).collect();
        assert_eq!(orders, [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]);
        let two: Vec<Vec<usize>> = (0..2).map(|r| round_order(2, r).collect()).collect();
        assert_eq!(two, [[0, 1], [1, 0]]);
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
