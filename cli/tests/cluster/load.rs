//! Write load and the checks that nothing acknowledged was lost.

use super::Probe;
use anna::client::{ClientConfig, OpId, OpOutput};
use anna::lattice::LatticeValue;
use anna::protocol::{Address, Key, Outcome};
use squall_transport::Client;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The writer writes at most this many keys before [`Writer::mark`] and as
/// many again after it, bounding the read-back; at its cap it waits. (A
/// writer that stopped for good at its cap could never satisfy a
/// `wait_for(acked() + n)` after a mark on a fast machine.)
pub const MAX_KEYS: usize = 4000;

/// What a [`Writer`] did.
#[derive(Debug, Default)]
pub struct WriterReport {
    /// Keys whose put was acknowledged, with the bytes written.
    pub acked: Vec<(Key, Vec<u8>)>,
    /// Puts that failed (timeout, too few acknowledgements), with why.
    pub failed: Vec<(Key, String)>,
    /// How many were acknowledged after [`Writer::mark`] was called.
    pub acked_after_mark: usize,
}

/// A thread putting distinct last-writer-wins keys `PREFIX-N`, one at a
/// time, until stopped.
pub struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    mark: Arc<AtomicUsize>,
    thread: Option<JoinHandle<WriterReport>>,
}

impl Writer {
    /// Starts writing through the router `router`.
    pub fn start(router: Address, config: ClientConfig, prefix: &str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let mark = Arc::new(AtomicUsize::new(usize::MAX));
        let prefix = prefix.to_string();
        let thread = {
            let (stop, acked, mark) = (stop.clone(), acked.clone(), mark.clone());
            std::thread::spawn(move || {
                let mut client = Client::connect(vec![router], config).expect("client");
                let mut report = WriterReport::default();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let marked = mark.load(Ordering::Relaxed);
                    let cap = if marked == usize::MAX {
                        MAX_KEYS
                    } else {
                        marked + MAX_KEYS
                    };
                    if n >= cap {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    let key = format!("{prefix}-{n}");
                    let value = format!("value-{n}").into_bytes();
                    match client.put_lww(&key, value.clone()) {
                        Ok(()) => {
                            report.acked.push((key, value));
                            acked.store(report.acked.len(), Ordering::Relaxed);
                        }
                        Err(e) => report.failed.push((key, e.to_string())),
                    }
                    n += 1;
                }
                let marked = mark.load(Ordering::Relaxed);
                report.acked_after_mark = report.acked.len().saturating_sub(marked);
                report
            })
        };
        Writer {
            stop,
            acked,
            mark,
            thread: Some(thread),
        }
    }

    /// How many puts were acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `n` puts were acknowledged in all.
    pub fn wait_for(&self, n: usize, limit: Duration) {
        super::wait_until(&format!("{n} acknowledged puts"), limit, || {
            (self.acked() >= n).then_some(())
        });
    }

    /// Starts counting [`WriterReport::acked_after_mark`] from now.
    pub fn mark(&self) {
        self.mark.store(self.acked(), Ordering::Relaxed);
    }

    /// Stops the writer and returns what it did.
    pub fn stop(mut self) -> WriterReport {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("stopped once");
        let report = thread.join().expect("the writer thread panicked");
        eprintln!(
            "writer: {} puts acknowledged ({} after the mark), {} failed{}",
            report.acked.len(),
            report.acked_after_mark,
            report.failed.len(),
            report
                .failed
                .first()
                .map_or(String::new(), |(k, e)| format!(", e.g. {k}: {e}"))
        );
        report
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn holds(value: Option<&LatticeValue>, want: &[u8]) -> bool {
    matches!(value, Some(LatticeValue::Lww(l)) if l.value() == want)
}

/// Reads every key of `expected` through `client` (32 in flight), retrying
/// misses until `limit`; panics naming the keys that never read back.
pub fn assert_all_readable(client: &mut Client, expected: &[(Key, Vec<u8>)], limit: Duration) {
    const WINDOW: usize = 32;
    let deadline = Instant::now() + limit;
    let mut queue: VecDeque<usize> = (0..expected.len()).collect();
    let mut in_flight: HashMap<OpId, usize> = HashMap::new();
    let mut last_miss: BTreeMap<usize, String> = BTreeMap::new();
    while !queue.is_empty() || !in_flight.is_empty() {
        while in_flight.len() < WINDOW {
            let Some(i) = queue.pop_front() else { break };
            in_flight.insert(client.start_get(expected[i].0.clone()), i);
        }
        let (id, result) = client.wait_any().expect("client transport");
        let Some(i) = in_flight.remove(&id) else {
            continue;
        };
        let (key, want) = &expected[i];
        let why = match result {
            Ok(OpOutput::Value(v)) if holds(v.as_ref(), want) => {
                last_miss.remove(&i);
                continue;
            }
            Ok(other) => format!("read {other:?}"),
            Err(e) => e.to_string(),
        };
        last_miss.insert(i, why);
        if Instant::now() < deadline {
            queue.push_back(i);
        } else {
            eprintln!("gave up reading {key}: {}", last_miss[&i]);
        }
    }
    let missing: Vec<String> = last_miss
        .iter()
        .take(10)
        .map(|(i, why)| format!("{}: {why}", expected[*i].0))
        .collect();
    assert!(
        last_miss.is_empty(),
        "{} of {} acknowledged keys did not read back within {limit:?}, e.g. {missing:#?}",
        last_miss.len(),
        expected.len()
    );
}

/// Waits until every key of `expected` is held, with its value, by every
/// owner thread the router names, each read directly; panics naming what
/// is missing where after `limit`.
pub fn assert_on_every_owner(router: &Address, expected: &[(Key, Vec<u8>)], limit: Duration) {
    let mut probe = Probe::new();
    let want: HashMap<&Key, &Vec<u8>> = expected.iter().map(|(k, v)| (k, v)).collect();
    let mut todo: Vec<Key> = expected.iter().map(|(k, _)| k.clone()).collect();
    let deadline = Instant::now() + limit;
    let mut misses: Vec<String> = Vec::new();
    loop {
        misses.clear();
        let Some(placements) = probe.owners(router, &todo) else {
            assert!(Instant::now() < deadline, "the router did not answer");
            continue;
        };
        let mut by_thread: BTreeMap<Address, Vec<Key>> = BTreeMap::new();
        for (key, owners) in placements {
            if owners.is_empty() {
                misses.push(format!("{key}: no owner"));
            }
            for o in owners {
                by_thread.entry(o).or_default().push(key.clone());
            }
        }
        let mut still = Vec::new();
        for (thread, keys) in by_thread {
            let Some(results) = probe.read_at(&thread, &keys) else {
                misses.push(format!("{thread} did not answer"));
                still.extend(keys);
                continue;
            };
            for r in results {
                let ok = match &r.outcome {
                    Outcome::Value(v) => holds(Some(v), want[&r.key]),
                    _ => false,
                };
                if !ok {
                    misses.push(format!("{} at {thread}: {:?}", r.key, r.outcome));
                    still.push(r.key);
                }
            }
        }
        if misses.is_empty() {
            return;
        }
        still.sort();
        still.dedup();
        todo = still;
        assert!(
            Instant::now() < deadline,
            "{} key copies still missing after {limit:?}, e.g. {:#?}",
            misses.len(),
            &misses[..misses.len().min(10)]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
