//! Coroutines: calls of `async def` functions. The worker starts one on
//! the runtime's event loop and says so at once ([`ExecutorCore::job_started`]);
//! from then on the call is in flight without holding the worker, which
//! takes the next job. Its [`crate::job::JobDone`] comes later, the same
//! way a finished job's does.
//!
//! At most `max_async_calls` are in flight: beyond it the calls of
//! functions known to be coroutine functions stay in the queue, while
//! other functions' calls still start. Whether a function is one is learnt
//! from its first started call (a call of a function not yet known may go
//! one over the limit). A coroutine past its deadline is cancelled by the
//! runtime; one still in flight after the deadline and the grace means the
//! event loop itself is blocked (a coroutine that called something that
//! never returns): the executor gives up, as for a stuck worker.

use super::calls::{Invocation, Work};
use super::ExecutorCore;
use crate::job::call_error;
use anna::protocol::compute::CallErrorKind;
use anna::role::Outbox;
use anna::time::Time;
use tracing::warn;

impl ExecutorCore {
    /// The worker started job `seq` as a coroutine and is free again.
    pub fn job_started(&mut self, now: Time, seq: u64) {
        match self.on_worker.front() {
            Some(running) if running.seq == seq => {}
            _ => return,
        }
        let Some(running) = self.worker_moved_on(now) else {
            return;
        };
        if let Work::Call(inv) = &running.work {
            if let Some(warm) = self.warm.get_mut(inv.name()) {
                warm.is_async = true;
            }
        }
        self.coroutines.insert(seq, running);
    }

    /// How many coroutines are in flight.
    pub fn coroutines_in_flight(&self) -> usize {
        self.coroutines.len()
    }

    /// The warm functions known to be coroutine functions, sorted.
    pub(super) fn async_functions(&self) -> Vec<String> {
        let mut names: Vec<String> = (self.warm.iter())
            .filter(|(_, w)| w.is_async)
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    fn known_async(&self, name: &str) -> bool {
        self.warm.get(name).is_some_and(|w| w.is_async)
    }

    /// The first ready invocation that may start: the queue's head, or,
    /// with every coroutine slot taken, the first that is not a call of a
    /// coroutine function.
    pub(super) fn pop_startable(&mut self) -> Option<Invocation> {
        // A job handed to the worker may start a coroutine too.
        if self.coroutines.len() + self.on_worker.len() < self.config.max_async_calls {
            return self.ready.pop_front();
        }
        let i = (self.ready.iter()).position(|inv| !self.known_async(inv.name()))?;
        self.ready.remove(i)
    }

    /// Coroutines past their deadline plus the grace: the event loop did
    /// not cancel them, so it is blocked. Their callers get the timeout and
    /// the executor gives up (the driver exits the process).
    pub(super) fn check_stuck_coroutines(&mut self, now: Time, out: &mut Outbox) {
        let grace_ms = self.config.grace.as_millis() as u64;
        let mut late: Vec<u64> = (self.coroutines.iter())
            .filter(|(_, r)| now.as_millis() >= r.deadline_ms.saturating_add(grace_ms))
            .map(|(seq, _)| *seq)
            .collect();
        if late.is_empty() {
            return;
        }
        late.sort_unstable();
        self.stuck = true;
        warn!(
            coroutines = late.len(),
            grace_ms, "coroutines were not cancelled by their deadline and grace: the event loop is blocked; the executor gives up"
        );
        for seq in late {
            let Some(running) = self.coroutines.remove(&seq) else {
                continue;
            };
            if let Work::Call(inv) = running.work {
                let error = call_error(
                    CallErrorKind::Timeout,
                    "Timeout",
                    format!(
                        "call {} of {} did not return by its deadline and could not be interrupted",
                        inv.plan.id,
                        inv.name()
                    ),
                    inv.name(),
                );
                self.finish(now, inv, Err(error), out);
            }
        }
    }
}
