//! When things go wrong: executors that fall silent, restart or leave, and
//! calls that pass their deadline in flight, in the queue, or waiting for
//! their DAG.
//!
//! However an executor is found dead, one path handles it:
//! [`Scheduler::on_executors_died`]. An executor that says it is leaving
//! (`ExecutorLeaving`, sent when it is told to stop) takes that path at
//! once instead of after `executor_timeout` of silence.

use crate::config::Delivery;
use crate::scheduler::Scheduler;
use anna::protocol::compute::{CallErrorKind, CallId};
use anna::protocol::Address;
use anna::role::Outbox;
use anna::time::Time;
use std::collections::VecDeque;

impl Scheduler {
    /// `executor` is stopping and said so: it is dead now, exactly as if
    /// it had been silent for `executor_timeout`. An executor not (or no
    /// longer) known is ignored; a later report makes it live again, as
    /// any new executor.
    pub(crate) fn on_executor_leaving(&mut self, now: Time, executor: Address, out: &mut Outbox) {
        if !self.registry.remove(&executor) {
            return;
        }
        tracing::info!(%executor, "executor leaving: declared dead");
        self.stats.executors_left += 1;
        self.on_executors_died(now, &[executor], out);
        // Failed calls may have freed room on other executors.
        self.drain_queue(now, out);
    }

    /// `dead` executors were silent too long, restarted or left, and are
    /// already forgotten: every call with an unfinished function on one is
    /// re-planned (at least once, attempts left) or failed with
    /// `ExecutorDied`.
    pub(crate) fn on_executors_died(&mut self, now: Time, dead: &[Address], out: &mut Outbox) {
        self.stats.executor_deaths += dead.len() as u64;
        let affected: Vec<(CallId, Address, u16)> = self
            .calls
            .iter()
            .filter_map(|(id, call)| {
                dead.iter()
                    .find_map(|d| call.pending_on(d).map(|f| (*id, d.clone(), f)))
            })
            .collect();
        for call in self.calls.values_mut() {
            call.retired.retain(|(_, _, e)| !dead.contains(e));
        }
        for (id, executor, function) in affected {
            let Some(call) = self.calls.remove(&id) else {
                continue;
            };
            let attempt = call.plan.attempt;
            let retry =
                self.config.delivery == Delivery::AtLeastOnce && attempt < self.config.max_retries;
            if retry {
                self.stats.retries += 1;
                tracing::info!(%id, attempt = attempt + 1, "re-planning call after executor death");
                let mut retired: Vec<(u32, u16, Address)> = call
                    .unfinished()
                    .filter(|(_, e)| self.registry.is_live(e))
                    .map(|(f, e)| (attempt, f, e.clone()))
                    .collect();
                retired.extend(call.retired);
                let mut plan = call.plan;
                plan.attempt += 1;
                if self.registry.place(&mut plan, self.limits()) {
                    self.launch(call.dispatched, plan, retired, out);
                } else {
                    // No live executor is free: it waits first in line.
                    for (_, _, e) in &retired {
                        self.registry.release(e);
                    }
                    self.queue.push_front(plan);
                }
                continue;
            }
            self.release(&call);
            self.stats.executor_died += 1;
            let name = call.plan.functions[usize::from(function)].name.clone();
            let tries = attempt + 1;
            let message = match self.config.delivery {
                Delivery::AtMostOnce => format!(
                    "executor {executor} died running `{name}` (attempt {tries}); \
                     at-most-once delivery: not retried"
                ),
                Delivery::AtLeastOnce => format!(
                    "executor {executor} died running `{name}` on attempt {tries} of {}: \
                     retries exhausted",
                    self.config.max_retries + 1
                ),
            };
            let reply = call.plan.reply.clone();
            let kind = CallErrorKind::ExecutorDied;
            self.answer_error(now, id, &reply, kind, message, Some(name), out);
        }
    }

    /// Calls in flight past their deadline (and the grace): the scheduler
    /// answers `Timeout` itself and forgets them.
    pub(crate) fn expire_calls(&mut self, now: Time, out: &mut Outbox) {
        let grace = self.config.deadline_grace;
        let late: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.deadline() + grace <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let Some(call) = self.calls.remove(&id) else {
                continue;
            };
            self.release(&call);
            self.stats.timeouts += 1;
            let function = call
                .unfinished()
                .next()
                .map(|(f, _)| call.plan.functions[usize::from(f)].name.clone());
            let message = format!(
                "the call did not finish by its deadline (attempt {}; {} still running)",
                call.plan.attempt + 1,
                function.as_deref().unwrap_or("no function")
            );
            let reply = call.plan.reply.clone();
            self.answer_error(
                now,
                id,
                &reply,
                CallErrorKind::Timeout,
                message,
                function,
                out,
            );
        }
    }

    /// Calls in the queue, or waiting for their DAG's definition, past
    /// their deadline: `Timeout`.
    pub(crate) fn expire_waiting(&mut self, now: Time, out: &mut Outbox) {
        let now_ms = now.as_millis();
        if self.queue.iter().any(|p| p.deadline_ms <= now_ms) {
            let (late, on_time): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.queue)
                .into_iter()
                .partition(|p| p.deadline_ms <= now_ms);
            self.queue = on_time;
            for plan in late {
                self.queued_too_long(now, plan, out);
            }
        }
        for w in self.dags.expire(now_ms) {
            self.stats.timeouts += 1;
            let message = format!(
                "the definition of DAG `{}` could not be read before the call's deadline",
                w.req.dag
            );
            let kind = CallErrorKind::Timeout;
            self.answer_error(now, w.req.id, &w.req.reply, kind, message, None, out);
        }
    }
}
