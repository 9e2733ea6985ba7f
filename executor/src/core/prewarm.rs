//! Prewarms: the monitor asks an executor that is not yet warm with a hot
//! function to load it (`Message::Prewarm`), so the scheduler, which
//! prefers warm executors, spreads the function's calls over more of them.
//!
//! A prewarm is a first call without the call. Its code comes from the
//! node's cache by the fetch an invocation makes (one fetch, however many
//! prewarms and calls wait for it), goes into the warm set (so the next
//! report lists it), and is then loaded on the worker by a load-only
//! [`Job`], which runs a class's initialiser as a first call would. Calls go
//! to the worker before loads, and a call of the function handed out first
//! makes its load moot. A prewarm of a warm function does nothing; one of a
//! function with no code stored is counted and logged at debug. A prewarm
//! waits for its code at most `default_timeout`.

use super::calls::{Running, Work};
use super::ExecutorCore;
use crate::job::{CallEnv, Job};
use anna::protocol::compute::CallError;
use anna::role::Outbox;
use anna::time::Time;
use tracing::debug;

/// A prewarm's loading of a function, on the worker.
#[derive(Debug)]
pub(super) struct Load {
    pub function: String,
    pub generation: u64,
}

impl ExecutorCore {
    pub(super) fn on_prewarm(&mut self, now: Time, function: String, out: &mut Outbox) {
        self.counters.prewarms += 1;
        if self.warm.contains_key(&function) || self.prewarms.contains_key(&function) {
            return;
        }
        self.ensure_fetch(now, &function, None, out);
        let until = now + self.config.default_timeout;
        self.prewarms.insert(function, until);
    }

    /// Forgets prewarms that waited for their code too long.
    pub(super) fn expire_prewarms(&mut self, now: Time) {
        self.prewarms.retain(|_, until| *until > now);
    }

    /// The code of `name` went into the warm set: a prewarm of it queues
    /// its load.
    pub(super) fn prewarm_installed(&mut self, name: &str) {
        if self.prewarms.remove(name).is_some() {
            self.loads.push_back(name.to_string());
        }
    }

    /// The fetch of `name` found no code (`unknown`) or none usable.
    pub(super) fn prewarm_failed(&mut self, name: &str, unknown: bool) {
        if self.prewarms.remove(name).is_none() {
            return;
        }
        if unknown {
            self.counters.prewarms_unknown += 1;
            debug!(function = name, "prewarm of a function with no code stored");
        } else {
            self.counters.prewarms_failed += 1;
            debug!(
                function = name,
                "prewarm of a function whose stored code is unusable"
            );
        }
    }

    /// The next prewarm load for the idle worker.
    pub(super) fn next_load(&mut self, now: Time) -> Option<Job> {
        while let Some(function) = self.loads.pop_front() {
            // Dropped from the warm set since (evicted, or its code changed).
            let Some(warm) = self.warm.get(&function) else {
                continue;
            };
            let (code, generation) = (warm.code.clone(), warm.generation);
            let deadline_ms = (now + self.config.default_timeout).as_millis();
            self.next_seq += 1;
            let job = Job {
                seq: self.next_seq,
                function: function.clone(),
                code,
                generation,
                payload: Vec::new(),
                upstream: Vec::new(),
                deadline_ms,
                env: CallEnv {
                    executor: self.id.address.clone(),
                    cache: self.id.cache.clone(),
                    peers: Vec::new(),
                    deadline_ms,
                    ..CallEnv::default()
                },
                evict: std::mem::take(&mut self.evicted),
                stale_values: std::mem::take(&mut self.stale_values),
                load_only: true,
            };
            let load = Load {
                function,
                generation,
            };
            self.on_worker.push_back(Running {
                seq: job.seq,
                work: Work::Load(load),
                started: now,
                deadline_ms,
            });
            return Some(job);
        }
        None
    }

    /// The worker finished a prewarm's load. Code that failed to load
    /// leaves the warm set, so reports stop calling it warm; the next call
    /// fetches it afresh and gets the error itself.
    pub(super) fn load_done(&mut self, load: Load, outcome: Result<Vec<u8>, CallError>) {
        let Err(error) = outcome else {
            return;
        };
        self.counters.prewarms_failed += 1;
        debug!(function = %load.function, error = %error.message, "loading a function to prewarm it failed");
        let current = self.warm.get(&load.function);
        if current.is_some_and(|w| w.generation == load.generation) {
            self.warm.remove(&load.function);
        }
    }
}
