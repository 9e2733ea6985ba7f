//! The closed-loop load generator: preload, warm up, measure.
//!
//! [`run`] preloads every key through one connection, opens one connection
//! per client (all before any request, so a store that cannot take them
//! fails the run up front), then starts the clients together. Each
//! client sends a request, waits for its answer, and sends the next: the
//! store sees exactly `clients` requests in flight. Latency is each
//! request's round trip, recorded in the client's own histogram in
//! microseconds and merged at the end. Being closed-loop, it does not
//! suffer coordinated omission in the usual sense: throughput is what the
//! store sustained at that concurrency, and a slow answer delays the next
//! request instead of hiding in the figures.
//!
//! A failed request is counted and the client reconnects; a client that
//! cannot reconnect stops, and the report names the first error.

use crate::backend::{BackendError, BackendFactory, KvBackend};
use crate::cpu::CpuSample;
use crate::report::{Report, HISTOGRAM_MAX_MICROS};
use crate::workload::{Stop, Workload, WorkloadError};
use crate::zipf::KeyChooser;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

/// How many keys one preload batch writes.
pub const PRELOAD_BATCH: usize = 1_000;

/// Why a run produced no report.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid workload: {0}")]
    Invalid(#[from] WorkloadError),
    #[error("{backend}: cannot open a connection: {source}")]
    Connect {
        backend: String,
        source: BackendError,
    },
    #[error("{backend}: preloading failed: {source}")]
    Preload {
        backend: String,
        source: BackendError,
    },
    #[error("{backend}: {wanted} clients need as many connections, not {got}")]
    Connections {
        backend: String,
        wanted: usize,
        got: usize,
    },
    #[error("{backend}: a client thread panicked")]
    ClientPanicked { backend: String },
}

/// Runs `workload` against the store `factory` connects to: [`preload`]
/// (if the workload asks for it), then [`measure`].
pub fn run(workload: &Workload, factory: &dyn BackendFactory) -> Result<Report, RunError> {
    if workload.preload {
        preload(workload, factory)?;
    }
    measure(workload, factory)
}

/// One client thread's connection.
pub type Connection = Box<dyn KvBackend + Send>;

/// Writes every key of `workload` once, with its value, in batches of
/// [`PRELOAD_BATCH`] through a new connection.
pub fn preload(workload: &Workload, factory: &dyn BackendFactory) -> Result<(), RunError> {
    let mut conn = connect_all(factory, 1)?;
    preload_on(workload, factory.name(), conn[0].as_mut())
}

/// [`preload`] through `conn`; `backend` names it in errors.
pub fn preload_on(
    workload: &Workload,
    backend: &str,
    conn: &mut dyn KvBackend,
) -> Result<(), RunError> {
    workload.validate()?;
    let keys: Vec<String> = (0..workload.keys).map(Workload::key_name).collect();
    let value = value_bytes(workload.value_size, workload.seed);
    for chunk in keys.chunks(PRELOAD_BATCH) {
        let items: Vec<(&str, &[u8])> = chunk.iter().map(|k| (k.as_str(), &value[..])).collect();
        conn.put_batch(&items).map_err(|source| RunError::Preload {
            backend: backend.to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Opens `n` connections.
pub fn connect_all(factory: &dyn BackendFactory, n: usize) -> Result<Vec<Connection>, RunError> {
    (0..n)
        .map(|_| factory.connect())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| RunError::Connect {
            backend: factory.name().to_string(),
            source,
        })
}

/// Warms up and measures `workload` on new connections, without
/// preloading. If `workload.preload` is set the keys are expected present
/// (someone called [`preload`]), and reads that find nothing are counted
/// as misses.
pub fn measure(workload: &Workload, factory: &dyn BackendFactory) -> Result<Report, RunError> {
    let mut conns = connect_all(factory, workload.clients)?;
    measure_on(workload, factory, &mut conns)
}

/// [`measure`] on open connections, one per client; a client whose request
/// fails replaces its connection in `conns` with a new one.
pub fn measure_on(
    workload: &Workload,
    factory: &dyn BackendFactory,
    conns: &mut [Connection],
) -> Result<Report, RunError> {
    let chooser = workload.validate()?;
    let backend = factory.name().to_string();
    if conns.len() != workload.clients {
        return Err(RunError::Connections {
            backend,
            wanted: workload.clients,
            got: conns.len(),
        });
    }
    let keys: Vec<String> = (0..workload.keys).map(Workload::key_name).collect();
    let value = value_bytes(workload.value_size, workload.seed);
    let pids = factory.server_pids();
    let cpu_before = CpuSample::now(&pids);
    let resident = |pids: &[u32]| {
        (!pids.is_empty())
            .then(|| crate::cluster::resident(pids))
            .flatten()
    };
    let resident_before = resident(&pids);
    let plan = Plan {
        workload,
        factory,
        keys: &keys,
        chooser: &chooser,
        value: &value,
        epoch: Instant::now(),
    };
    let outcomes = std::thread::scope(|scope| {
        let handles: Vec<_> = conns
            .iter_mut()
            .enumerate()
            .map(|(i, conn)| {
                let plan = &plan;
                scope.spawn(move || plan.client(i, conn))
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
    });

    let cpu_after = CpuSample::now(&pids);
    let resident_after = resident(&pids);

    let mut report = Report::empty(backend.clone(), workload.clone());
    report.interference = cpu_before
        .zip(cpu_after)
        .map(|(before, after)| before.interference_since(&after));
    report.resident = resident_before.zip(resident_after);
    let mut last_finish = Duration::ZERO;
    for outcome in outcomes {
        let outcome = outcome.map_err(|_| RunError::ClientPanicked {
            backend: backend.clone(),
        })?;
        last_finish = last_finish.max(outcome.finished_after);
        report.absorb(outcome.histogram, outcome.counts, outcome.error);
    }
    report.elapsed = match workload.stop {
        Stop::After(d) => d,
        Stop::Requests(_) => last_finish,
    };
    Ok(report)
}

/// Request counts of one client (or, merged, of a run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub reads: u64,
    pub writes: u64,
    /// Failed requests (not in the histogram).
    pub errors: u64,
    /// Reads of a preloaded key that found nothing: a correctness signal.
    pub misses: u64,
}

struct ClientOutcome {
    histogram: Histogram<u64>,
    counts: Counts,
    error: Option<String>,
    /// When the client's last measured request ended, after measuring began.
    finished_after: Duration,
}

/// What every client shares, borrowed for the run.
struct Plan<'a> {
    workload: &'a Workload,
    factory: &'a dyn BackendFactory,
    keys: &'a [String],
    chooser: &'a KeyChooser,
    value: &'a [u8],
    /// When the clients were started; warm-up is measured from here.
    epoch: Instant,
}

impl Plan<'_> {
    fn client(&self, index: usize, conn: &mut Connection) -> ClientOutcome {
        let w = self.workload;
        let mut rng = SmallRng::seed_from_u64(w.seed.wrapping_add(index as u64));
        let mut histogram = new_histogram();
        let mut counts = Counts::default();
        let mut error = None;
        let measure_from = self.epoch + w.warmup;
        let (until, mut quota) = match w.stop {
            Stop::After(d) => (Some(measure_from + d), u64::MAX),
            Stop::Requests(n) => (None, share(n, w.clients, index)),
        };
        let mut finished = measure_from;
        let mut batch = Vec::with_capacity(w.batch);

        while quota > 0 {
            let started = Instant::now();
            if until.is_some_and(|u| started >= u) {
                break;
            }
            let (read, result) = self.request(conn, &mut rng, &mut batch);
            let ended = Instant::now();
            let measured = started >= measure_from && until.is_none_or(|u| ended <= u);
            if !measured {
                // Warm-up, or a request straddling the end of the window.
                if let Err(e) = result {
                    if !self.reconnect(conn, e, &mut error) {
                        break;
                    }
                }
                continue;
            }
            quota -= 1;
            finished = ended;
            match result {
                Ok(missing) => {
                    histogram.saturating_record(micros(ended - started));
                    let keys = w.batch as u64;
                    if read {
                        counts.reads += keys;
                        if w.preload {
                            counts.misses += missing as u64;
                        }
                    } else {
                        counts.writes += keys;
                    }
                }
                Err(e) => {
                    counts.errors += 1;
                    if !self.reconnect(conn, e, &mut error) {
                        break;
                    }
                }
            }
        }
        ClientOutcome {
            histogram,
            counts,
            error,
            finished_after: finished.saturating_duration_since(measure_from),
        }
    }

    /// Makes one request of the workload's mix: whether it read, and how
    /// many of the keys it read held nothing. With batches of several keys,
    /// they are distinct and all read or all written.
    fn request<'k>(
        &'k self,
        conn: &mut Connection,
        rng: &mut SmallRng,
        batch: &mut Vec<&'k str>,
    ) -> (bool, Result<usize, BackendError>) {
        let w = self.workload;
        if w.batch == 1 {
            let key = &self.keys[self.chooser.sample(rng)];
            let read = rng.random_bool(w.read_ratio);
            let result = if read {
                conn.get(key).map(|v| usize::from(v.is_none()))
            } else {
                conn.put(key, self.value).map(|()| 0)
            };
            return (read, result);
        }
        batch.clear();
        while batch.len() < w.batch {
            let index = self.chooser.sample(rng);
            // (The same `&str` is the same key: compared by address, not
            // by its bytes, so choosing costs the client next to nothing.)
            let key = self.keys[index].as_str();
            if !batch.iter().any(|k| std::ptr::eq(*k, key)) {
                batch.push(key);
            }
        }
        let read = rng.random_bool(w.read_ratio);
        let result = if read {
            conn.get_many(batch)
        } else {
            let items: Vec<(&str, &[u8])> = batch.iter().map(|k| (*k, self.value)).collect();
            conn.put_many(&items).map(|()| 0)
        };
        (read, result)
    }

    /// Replaces a connection after a failed request; false if that failed
    /// too and the client should stop.
    fn reconnect(
        &self,
        conn: &mut Connection,
        cause: BackendError,
        first_error: &mut Option<String>,
    ) -> bool {
        first_error.get_or_insert_with(|| cause.to_string());
        match self.factory.connect() {
            Ok(fresh) => {
                *conn = fresh;
                true
            }
            Err(e) => {
                first_error.get_or_insert_with(|| e.to_string());
                false
            }
        }
    }
}

/// Client `index`'s part of `total` requests split over `clients`.
fn share(total: u64, clients: usize, index: usize) -> u64 {
    let clients = clients as u64;
    total / clients + u64::from((index as u64) < total % clients)
}

/// A histogram of microseconds from 1 µs to a minute, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3)
        .expect("constant histogram bounds are valid")
}

/// A duration in whole microseconds, rounded, at least 1.
fn micros(d: Duration) -> u64 {
    let us = (d.as_nanos() + 500) / 1000;
    u64::try_from(us).unwrap_or(u64::MAX).max(1)
}

/// The value every write stores: printable bytes, different per seed.
fn value_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed_5eed);
    (0..size).map(|_| rng.random_range(b'a'..=b'z')).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// A store in a shared map, with a failure switch.
    #[derive(Default)]
    struct MapFactory {
        map: std::sync::Arc<Mutex<HashMap<String, Vec<u8>>>>,
    }

    struct MapConn(std::sync::Arc<Mutex<HashMap<String, Vec<u8>>>>);

    impl KvBackend for MapConn {
        fn get(&mut self, key: &str) -> crate::backend::Result<Option<Vec<u8>>> {
            if key == Workload::key_name(3) {
                return Err(BackendError::Server("key 3 is cursed".into()));
            }
            Ok(self.0.lock().unwrap().get(key).cloned())
        }
        fn put(&mut self, key: &str, value: &[u8]) -> crate::backend::Result<()> {
            self.0.lock().unwrap().insert(key.into(), value.into());
            Ok(())
        }
    }

    impl BackendFactory for MapFactory {
        fn name(&self) -> &str {
            "map"
        }
        fn connect(&self) -> crate::backend::Result<Box<dyn KvBackend + Send>> {
            Ok(Box::new(MapConn(self.map.clone())))
        }
    }

    #[test]
    fn a_request_count_run_counts_every_request_and_error() {
        let factory = MapFactory::default();
        let w = Workload {
            clients: 3,
            keys: 10,
            read_ratio: 0.5,
            stop: Stop::Requests(10_000),
            warmup: Duration::ZERO,
            ..Workload::default()
        };
        let report = run(&w, &factory).unwrap();
        let c = report.counts;
        assert_eq!(c.reads + c.writes + c.errors, 10_000);
        assert!(c.errors > 100, "reads of key 3 fail: {c:?}");
        assert_eq!(c.misses, 0, "every key was preloaded");
        assert_eq!(report.histogram.len(), c.reads + c.writes);
        assert!(report.first_error.as_deref().unwrap().contains("cursed"));
        assert_eq!(factory.map.lock().unwrap().len(), 10);
        assert_eq!(
            factory.map.lock().unwrap()[&Workload::key_name(0)].len(),
            100
        );
    }

    #[test]
    fn a_batched_run_counts_keys_and_times_requests() {
        let factory = MapFactory::default();
        // Keys 0-2: none of them the cursed key 3.
        let w = Workload {
            clients: 2,
            keys: 3,
            batch: 3,
            read_ratio: 0.5,
            stop: Stop::Requests(100),
            warmup: Duration::ZERO,
            ..Workload::default()
        };
        let report = run(&w, &factory).unwrap();
        let c = report.counts;
        assert_eq!((c.reads + c.writes, c.errors, c.misses), (300, 0, 0));
        assert!(c.reads > 0 && c.writes > 0, "{c:?}");
        assert_eq!(report.histogram.len(), 100, "one latency per request");
    }

    #[test]
    fn reads_without_preload_count_no_misses() {
        let factory = MapFactory::default();
        let w = Workload {
            clients: 1,
            keys: 2,
            read_ratio: 1.0,
            preload: false,
            stop: Stop::After(Duration::from_millis(50)),
            warmup: Duration::from_millis(10),
            ..Workload::default()
        };
        let report = run(&w, &factory).unwrap();
        assert!(report.counts.reads > 0);
        assert_eq!(report.counts.misses, 0);
        assert!(factory.map.lock().unwrap().is_empty());
    }

    #[test]
    fn requests_split_evenly_over_clients() {
        assert_eq!(
            (0..3).map(|i| share(10, 3, i)).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!(micros(Duration::from_nanos(1)), 1);
        assert_eq!(micros(Duration::from_nanos(61_600)), 62);
    }
}
