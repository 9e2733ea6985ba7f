//! What the scheduler knows of the compute tier: live executors (from their
//! reports, which are also heartbeats) with the invocations it has
//! outstanding on each, and the keys each node's cache holds.

use anna::protocol::compute::{CacheReport, ComputeStatus, ExecutorReport};
use anna::protocol::figures::KvsFigures;
use anna::protocol::{Address, Key};
use anna::role::StableHashMap;
use anna::time::Time;
use std::collections::BTreeMap;
use std::time::Duration;

/// How many functions' times an executor's entry keeps (it starts again
/// when more come).
const MAX_TIMED_FUNCTIONS: usize = 256;

/// One live executor.
#[derive(Debug)]
pub(crate) struct Executor {
    pub report: ExecutorReport,
    pub last_heard: Time,
    /// Functions of calls in flight this scheduler assigned to it and has
    /// not yet heard done (or given up on).
    pub outstanding: u32,
    /// How long each function takes it while it has work (by name: a
    /// moving average of the time between a completion of that function
    /// and the completion before it, while more were outstanding). Calls
    /// of a function it runs briefly may have it hold more outstanding
    /// (`placement::Limits`); a function not measured here may not.
    pub per_function: StableHashMap<String, Duration>,
    /// When it last completed a function for this scheduler.
    pub last_done: Option<Time>,
}

/// One node's cache, as last reported.
#[derive(Debug)]
pub(crate) struct Cache {
    pub cache: Address,
    pub sizes: StableHashMap<Key, u64>,
    pub hits: u64,
    pub misses: u64,
    /// The cache's own KVS figures, passed on to the monitor.
    pub kvs: Box<KvsFigures>,
    pub last_heard: Time,
}

/// Executors by address and caches by node, ordered so that iteration (and
/// so placement) is deterministic.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub executors: BTreeMap<Address, Executor>,
    pub caches: BTreeMap<String, Cache>,
    /// Rotates ties between equally good executors.
    pub turn: u64,
}

impl Registry {
    /// Records an executor's report; returns whether it was unknown.
    pub fn on_executor_report(&mut self, now: Time, report: ExecutorReport) -> bool {
        match self.executors.get_mut(&report.executor) {
            Some(e) => {
                e.report = report;
                e.last_heard = now;
                false
            }
            None => {
                tracing::info!(executor = %report.executor, node = %report.node, "executor registered");
                let executor = Executor {
                    report,
                    last_heard: now,
                    outstanding: 0,
                    per_function: StableHashMap::default(),
                    last_done: None,
                };
                self.executors
                    .insert(executor.report.executor.clone(), executor);
                true
            }
        }
    }

    /// Whether `report` comes from a new process at the address of a known
    /// executor (its `boot` differs).
    pub fn restarted(&self, report: &ExecutorReport) -> bool {
        self.executors
            .get(&report.executor)
            .is_some_and(|e| e.report.boot != report.boot)
    }

    /// Records the key set of a node's cache.
    pub fn on_cache_report(&mut self, now: Time, report: CacheReport) {
        let mut sizes = StableHashMap::default();
        sizes.extend(report.keys);
        self.caches.insert(
            report.node,
            Cache {
                cache: report.cache,
                sizes,
                hits: report.hits,
                misses: report.misses,
                kvs: report.kvs,
                last_heard: now,
            },
        );
    }

    /// Removes every executor (and cache) silent for `timeout`; returns the
    /// executors removed.
    pub fn expire(&mut self, now: Time, timeout: Duration) -> Vec<Address> {
        let dead: Vec<Address> = self
            .executors
            .iter()
            .filter(|(_, e)| e.last_heard + timeout <= now)
            .map(|(a, _)| a.clone())
            .collect();
        for a in &dead {
            self.executors.remove(a);
        }
        self.caches.retain(|_, c| c.last_heard + timeout > now);
        dead
    }

    /// Moves every last-heard time `by` later: the scheduler itself was not
    /// running that long, so it heard nobody, and their reports wait unread.
    pub fn forgive(&mut self, by: Duration) {
        for e in self.executors.values_mut() {
            e.last_heard = e.last_heard + by;
        }
        for c in self.caches.values_mut() {
            c.last_heard = c.last_heard + by;
        }
    }

    /// When the next executor or cache falls silent, if any is known.
    pub fn next_expiry(&self, timeout: Duration) -> Option<Time> {
        let executors = self.executors.values().map(|e| e.last_heard);
        let caches = self.caches.values().map(|c| c.last_heard);
        executors.chain(caches).min().map(|t| t + timeout)
    }

    /// Counts one more function outstanding on `executor`.
    pub fn take(&mut self, executor: &Address) {
        if let Some(e) = self.executors.get_mut(executor) {
            e.outstanding += 1;
        }
    }

    /// Counts one function fewer outstanding on `executor` (none if it is
    /// no longer known: it died and took its count with it).
    pub fn release(&mut self, executor: &Address) {
        if let Some(e) = self.executors.get_mut(executor) {
            e.outstanding = e.outstanding.saturating_sub(1);
        }
    }

    /// Counts `function` done on `executor` at `now`: one fewer
    /// outstanding, and, when it had others outstanding since its previous
    /// completion, a sample of the function's time there. (Completions
    /// that arrive together count as one interval shared among them, so
    /// the average stays the time per call.)
    pub fn done(&mut self, executor: &Address, function: &str, now: Time) {
        let Some(e) = self.executors.get_mut(executor) else {
            return;
        };
        if let Some(last) = e.last_done.filter(|_| e.outstanding >= 2) {
            let took = now.saturating_since(last);
            match e.per_function.get_mut(function) {
                Some(mean) => *mean = (*mean * 7 + took) / 8,
                None => {
                    if e.per_function.len() >= MAX_TIMED_FUNCTIONS {
                        e.per_function.clear();
                    }
                    e.per_function.insert(function.to_string(), took);
                }
            }
        }
        e.last_done = Some(now);
        e.outstanding = e.outstanding.saturating_sub(1);
    }

    /// Forgets `executor` (it left, or its process restarted); returns
    /// whether it was known.
    pub fn remove(&mut self, executor: &Address) -> bool {
        self.executors.remove(executor).is_some()
    }

    /// Whether `executor` is alive.
    pub fn is_live(&self, executor: &Address) -> bool {
        self.executors.contains_key(executor)
    }

    /// Reports of every executor and cache, for a status reply.
    pub fn status(&self, in_flight: u32, queued: u32) -> ComputeStatus {
        let executors = self.executors.values().map(|e| e.report.clone()).collect();
        let caches = self
            .caches
            .iter()
            .map(|(node, c)| {
                let mut keys: Vec<(Key, u64)> =
                    c.sizes.iter().map(|(k, s)| (k.clone(), *s)).collect();
                keys.sort();
                CacheReport {
                    node: node.clone(),
                    cache: c.cache.clone(),
                    keys,
                    hits: c.hits,
                    misses: c.misses,
                    kvs: c.kvs.clone(),
                }
            })
            .collect();
        ComputeStatus {
            executors,
            caches,
            in_flight,
            queued,
            calls: Default::default(),
        }
    }
}
