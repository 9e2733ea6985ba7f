//! Calls: invokes and triggers in, fan-in assembly, the queue, the job
//! handed to the worker, and where a result or an error goes.

use super::prewarm::Load;
use super::ExecutorCore;
use crate::job::{call_error, invocation_writer, CallEnv, Effects, Job, JobDone};
use anna::lattice::{LatticeValue, Lww};
use anna::protocol::compute::{
    encode_value, function_key, CallError, CallErrorKind, CallId, CallOutcome, CallOutput,
    CallResult, CallTrace, Plan,
};
use anna::protocol::figures::TracedCall;
use anna::protocol::{Ack, Address, KeyOp, KvsRequest, Message, Session};
use anna::role::Outbox;
use anna::time::Time;
use std::sync::Arc;
use tracing::warn;

/// One function of one attempt of one call: what duplicates are told apart
/// by.
pub(super) type InvKey = (CallId, u32, u16);

/// A function ready to run once its code is warm.
#[derive(Clone, Debug)]
pub(super) struct Invocation {
    pub plan: Arc<Plan>,
    pub function: u16,
    pub upstream: Vec<Vec<u8>>,
    pub deadline_ms: u64,
    /// When it joined this executor's queue, and when it started running
    /// (for a traced call's timings).
    pub enqueued: Time,
    pub started: Option<Time>,
}

impl Invocation {
    pub fn name(&self) -> &str {
        &self.plan.functions[self.function as usize].name
    }
}

/// A function with several upstream functions, waiting for the rest of
/// their results.
#[derive(Debug)]
pub(super) struct PendingFanIn {
    plan: Arc<Plan>,
    results: Vec<Option<Vec<u8>>>,
    deadline_ms: u64,
}

/// The job on the worker.
#[derive(Debug)]
pub(super) struct Running {
    pub seq: u64,
    pub work: Work,
    pub started: Time,
    pub deadline_ms: u64,
}

/// What the job on the worker does.
#[derive(Debug)]
pub(super) enum Work {
    Call(Invocation),
    /// A prewarm's loading of a function.
    Load(Load),
}

impl ExecutorCore {
    fn deadline_ms(&self, now: Time, plan: &Plan) -> u64 {
        if plan.deadline_ms == 0 {
            (now + self.config.default_timeout).as_millis()
        } else {
            plan.deadline_ms
        }
    }

    fn valid_index(&mut self, plan: &Plan, index: u16) -> bool {
        let ok = (index as usize) < plan.functions.len();
        if !ok {
            self.counters.malformed += 1;
        }
        ok
    }

    pub(super) fn on_invoke(
        &mut self,
        now: Time,
        plan: Box<Plan>,
        function: u16,
        out: &mut Outbox,
    ) {
        self.counters.invokes += 1;
        if !self.valid_index(&plan, function) {
            return;
        }
        let key = (plan.id, plan.attempt, function);
        if self.seen.contains_key(&key) {
            self.counters.duplicates += 1;
            return;
        }
        let deadline_ms = self.deadline_ms(now, &plan);
        self.seen.insert(key, deadline_ms);
        let inv = Invocation {
            plan: Arc::from(plan),
            function,
            upstream: Vec::new(),
            deadline_ms,
            enqueued: now,
            started: None,
        };
        self.enqueue(now, inv, out);
    }

    pub(super) fn on_trigger(
        &mut self,
        now: Time,
        plan: Box<Plan>,
        function: u16,
        from: u16,
        result: Vec<u8>,
        out: &mut Outbox,
    ) {
        self.counters.triggers += 1;
        if !self.valid_index(&plan, function) {
            return;
        }
        let upstream = &plan.functions[function as usize].upstream;
        let Some(position) = upstream.iter().position(|&u| u == from) else {
            self.counters.malformed += 1;
            return;
        };
        let key = (plan.id, plan.attempt, function);
        if self.seen.contains_key(&key) {
            self.counters.duplicates += 1;
            return;
        }
        let first = !self.fanins.contains_key(&key);
        let later = (!first).then(|| {
            (
                plan.written.clone(),
                plan.pinned.clone(),
                plan.output.clone(),
                plan.trace.clone(),
            )
        });
        if first {
            if self.fanins.len() >= self.config.max_pending_fanins {
                self.counters.fanins_dropped += 1;
                return;
            }
            let pending = PendingFanIn {
                results: vec![None; upstream.len()],
                deadline_ms: self.deadline_ms(now, &plan),
                plan: Arc::from(plan),
            };
            self.fanins.insert(key, pending);
        }
        let Some(pending) = self.fanins.get_mut(&key) else {
            return;
        };
        if pending.results[position].is_some() {
            self.counters.duplicates += 1;
            return;
        }
        pending.results[position] = Some(result);
        if let Some((written, pinned, output, trace)) = later {
            // Every upstream function's writes are read at least, its pins
            // hold (the first pin of a key wins), and its output reaches
            // the caller once.
            let plan = Arc::make_mut(&mut pending.plan);
            plan.written.join(&written);
            plan.pinned.pin_all(&pinned);
            if let (Some(mine), Some(theirs)) = (plan.trace.as_deref_mut(), trace) {
                // Each upstream function's step, as its own plan has it.
                for (m, t) in mine.steps.iter_mut().zip(theirs.steps) {
                    if t.done && !m.done {
                        *m = t;
                    }
                }
            }
            for o in output {
                if !plan.output.contains(&o) {
                    plan.output.push(o);
                }
            }
        }
        if pending.results.iter().any(Option::is_none) {
            return;
        }
        let Some(pending) = self.fanins.remove(&key) else {
            return;
        };
        self.seen.insert(key, pending.deadline_ms);
        let inv = Invocation {
            plan: pending.plan,
            function,
            upstream: pending.results.into_iter().flatten().collect(),
            deadline_ms: pending.deadline_ms,
            enqueued: now,
            started: None,
        };
        self.enqueue(now, inv, out);
    }

    /// Drops call `id` if it waits in this executor's queue, is a single
    /// function (a DAG's functions may have started elsewhere), and
    /// `reply_to` is its caller's; answers the caller whether it did, and
    /// tells the scheduler a dropped call is done.
    pub(super) fn on_cancel(&mut self, id: CallId, reply_to: Address, out: &mut Outbox) {
        let mine = |inv: &Invocation| {
            inv.plan.id == id && inv.plan.functions.len() == 1 && inv.plan.reply.address == reply_to
        };
        let mut dropped = self
            .ready
            .iter()
            .position(mine)
            .and_then(|i| self.ready.remove(i));
        if dropped.is_none() {
            for list in self.waiting.values_mut() {
                if let Some(i) = list.iter().position(mine) {
                    dropped = Some(list.remove(i));
                    break;
                }
            }
        }
        let cancelled = dropped.is_some();
        if let Some(inv) = dropped {
            self.counters.cancelled += 1;
            let done = Message::CallDone {
                id,
                attempt: inv.plan.attempt,
                function: inv.function,
                executor: self.id.address.clone(),
                failed: true,
            };
            out.send(inv.plan.scheduler.clone(), done);
        }
        out.send(reply_to, Message::CancelAnswer { id, cancelled });
    }

    fn enqueue(&mut self, now: Time, inv: Invocation, out: &mut Outbox) {
        if self.queue_len() >= self.config.max_queue {
            self.counters.overloaded += 1;
            let error = call_error(
                CallErrorKind::Overloaded,
                "Overloaded",
                format!(
                    "executor {} has {} calls queued",
                    self.id.address,
                    self.queue_len()
                ),
                inv.name(),
            );
            return self.finish(now, inv, Err(error), out);
        }
        let name = inv.name().to_string();
        let at_least = inv.plan.version(&function_key(&name));
        let at_least = at_least.as_ref();
        if self.warm_covers(&name, at_least) {
            if let Some(warm) = self.warm.get_mut(&name) {
                warm.last_used = now;
            }
            self.ready.push_back(inv);
        } else {
            self.waiting.entry(name.clone()).or_default().push(inv);
            self.ensure_fetch(now, &name, at_least, out);
        }
    }

    /// The next job for the worker, if it is idle and one is ready (calls
    /// first, then prewarm loads); calls whose deadline passed in the queue
    /// fail with a timeout instead.
    pub fn next_job(&mut self, now: Time, out: &mut Outbox) -> Option<Job> {
        if !self.worker_has_room() || self.stuck {
            return None;
        }
        while let Some(inv) = self.pop_startable() {
            if now.as_millis() >= inv.deadline_ms {
                let error = timeout_error(&inv, "waited in the executor's queue past its deadline");
                self.finish(now, inv, Err(error), out);
                continue;
            }
            let name = inv.name().to_string();
            let Some(warm) = self.warm.get_mut(&name) else {
                // Invalidated while queued: fetch the new code first.
                let at_least = inv.plan.version(&function_key(&name));
                self.waiting.entry(name.clone()).or_default().push(inv);
                self.ensure_fetch(now, &name, at_least.as_ref(), out);
                continue;
            };
            warm.last_used = now;
            let (code, generation) = (warm.code.clone(), warm.generation);
            self.next_seq += 1;
            let planned = &inv.plan.functions[inv.function as usize];
            let job = Job {
                seq: self.next_seq,
                function: name,
                code,
                generation,
                payload: planned.args.payload.clone(),
                upstream: inv.upstream.clone(),
                deadline_ms: inv.deadline_ms,
                env: CallEnv {
                    executor: self.id.address.clone(),
                    cache: self.id.cache.clone(),
                    peers: (inv.plan.functions.iter())
                        .map(|f| (f.name.clone(), f.executor.clone()))
                        .collect(),
                    deadline_ms: inv.deadline_ms,
                    session: read_session(&inv.plan),
                    consistency: inv.plan.consistency,
                    pinned: inv.plan.pinned.clone(),
                    writer: invocation_writer(inv.plan.id, inv.function),
                    call: inv.plan.id,
                    instance: inv.plan.instance.clone(),
                },
                evict: std::mem::take(&mut self.evicted),
                stale_values: Vec::new(),
                load_only: false,
            };
            let refs = planned.args.refs.clone();
            self.watch_values(now, &refs, out);
            let job = Job {
                stale_values: std::mem::take(&mut self.stale_values),
                ..job
            };
            // The call loads the code itself: a prewarm's load is moot.
            self.loads.retain(|n| *n != job.function);
            let inv = Invocation {
                started: Some(now),
                ..inv
            };
            self.on_worker.push_back(Running {
                seq: job.seq,
                deadline_ms: inv.deadline_ms,
                work: Work::Call(inv),
                started: now,
            });
            return Some(job);
        }
        self.next_load(now)
    }

    /// Whether the worker takes another job now; see [`super::MIN_HANDED`].
    fn worker_has_room(&self) -> bool {
        let held = self.on_worker.len();
        held < super::MIN_HANDED
            || (held < super::MAX_HANDED && self.job_time * (held as u32) < super::HANDED_WORK)
    }

    /// The worker is done with its front job (finished, or started as a
    /// coroutine): takes it off, counts its busy time, and starts the
    /// clock of the job behind it, which the worker takes up now.
    pub(super) fn worker_moved_on(&mut self, now: Time) -> Option<Running> {
        let done = self.on_worker.pop_front()?;
        let took = now.saturating_since(done.started);
        self.busy_in_period += now.saturating_since(done.started.max(self.period_start));
        self.job_time = (self.job_time * 7 + took) / 8;
        if let Some(next) = self.on_worker.front_mut() {
            next.started = now;
            if let Work::Call(inv) = &mut next.work {
                inv.started = Some(now);
            }
        }
        Some(done)
    }

    /// The worker finished a job, or the event loop a coroutine the worker
    /// started.
    pub fn job_done(&mut self, now: Time, done: JobDone, out: &mut Outbox) {
        let running = match self.on_worker.front() {
            Some(running) if running.seq == done.seq => self.worker_moved_on(now),
            // A coroutine, unless it already failed as stuck; or a stray
            // answer.
            _ => self.coroutines.remove(&done.seq),
        };
        let Some(running) = running else {
            return;
        };
        match running.work {
            Work::Call(inv) => {
                *self.calls.entry(inv.name().to_string()).or_default() += 1;
                self.finish_with(now, inv, done.outcome, done.effects, out);
            }
            Work::Load(load) => self.load_done(load, done.outcome),
        }
    }

    /// Sends a failed (or never run) function's outcome on; see
    /// [`ExecutorCore::finish_with`].
    pub(super) fn finish(
        &mut self,
        now: Time,
        inv: Invocation,
        outcome: Result<Vec<u8>, CallError>,
        out: &mut Outbox,
    ) {
        self.finish_with(now, inv, outcome, Effects::default(), out);
    }

    /// Sends a finished function's result downstream or to the caller, and
    /// tells the scheduler. What the function wrote joins the plan's
    /// `written` (downstream functions read at least at it, and the caller
    /// gets it with the result), what it pinned the plan's `pinned`.
    pub(super) fn finish_with(
        &mut self,
        now: Time,
        mut inv: Invocation,
        outcome: Result<Vec<u8>, CallError>,
        effects: Effects,
        out: &mut Outbox,
    ) {
        if inv.plan.trace.is_some() {
            record_step(now, &mut inv, &effects);
        }
        if effects.change_the_plan() {
            let name = inv.plan.functions[inv.function as usize].name.clone();
            add_effects(&mut inv.plan, &name, effects);
        }
        let plan = &inv.plan;
        let planned = &plan.functions[inv.function as usize];
        let limit = self.config.limits.max_value_bytes;
        let outcome = match outcome {
            // Refused here, where it was made: a frame too large to send
            // would leave the caller waiting out its deadline.
            Ok(result) if result.len() > limit => Err(call_error(
                CallErrorKind::TooLarge,
                "TooLarge",
                format!(
                    "result of {} bytes is over the limit of {limit} bytes ([limits] max_value_bytes)",
                    result.len()
                ),
                &planned.name,
            )),
            other => other,
        };
        let failed = outcome.is_err();
        // Downstream functions planned on this executor are triggered here,
        // without a trip through a socket.
        let mut local = Vec::new();
        match outcome {
            Ok(result) if !planned.downstream.is_empty() => {
                self.counters.calls_ok += 1;
                for &d in &planned.downstream {
                    let Some(target) = plan.functions.get(d as usize) else {
                        continue;
                    };
                    if target.executor == self.id.address {
                        local.push((d, result.clone()));
                        continue;
                    }
                    let trigger = Message::Trigger {
                        plan: Box::new(Plan::clone(plan)),
                        function: d,
                        from: inv.function,
                        result: result.clone(),
                    };
                    out.send(target.executor.clone(), trigger);
                }
            }
            Ok(result) => {
                self.counters.calls_ok += 1;
                self.reply(now, plan, CallOutcome::Value(result), out);
            }
            Err(error) => {
                self.counters.calls_failed += 1;
                match self.errors.iter_mut().find(|(k, _)| *k == error.kind) {
                    Some((_, n)) => *n += 1,
                    None => self.errors.push((error.kind, 1)),
                }
                if error.kind == CallErrorKind::Timeout {
                    self.counters.timeouts += 1;
                }
                self.reply(now, plan, CallOutcome::Error(error), out);
            }
        }
        let done = Message::CallDone {
            id: plan.id,
            attempt: plan.attempt,
            function: inv.function,
            executor: self.id.address.clone(),
            failed,
        };
        out.send(plan.scheduler.clone(), done);
        for (d, result) in local {
            let plan = Box::new(Plan::clone(&inv.plan));
            self.on_trigger(now, plan, d, inv.function, result, out);
        }
    }

    fn reply(&mut self, now: Time, plan: &Plan, outcome: CallOutcome, out: &mut Outbox) {
        if let Some(key) = &plan.reply.response_key {
            let stamp = self.hlc.now(now.as_millis());
            let value = LatticeValue::Lww(Lww::new(stamp, encode_value(&outcome)));
            let put = KvsRequest {
                id: self.request_id(),
                reply_to: self.id.address.clone(),
                ops: vec![KeyOp::Put {
                    key: key.clone(),
                    value,
                }],
                ack: Ack::FirstReplica,
                shared_memory: None,
            };
            out.send(self.id.cache.clone(), Message::KvsRequest(put));
        }
        if let Some(trace) = &plan.trace {
            let name = match (&plan.dag, plan.functions.as_slice()) {
                (Some(dag), _) => dag.clone(),
                (None, [f]) => f.name.clone(),
                (None, _) => String::new(),
            };
            let traced = TracedCall {
                id: plan.id,
                name,
                failed: matches!(outcome, CallOutcome::Error(_)),
                trace: CallTrace::clone(trace),
            };
            out.send(
                plan.scheduler.clone(),
                Message::CallTraced(Box::new(traced)),
            );
        }
        let result = CallResult {
            id: plan.id,
            outcome,
            written: plan.written.clone(),
            output: plan.output.clone(),
            trace: plan.trace.clone(),
        };
        out.send(plan.reply.address.clone(), Message::CallResult(result));
    }

    /// Fails what waited past its deadline and forgets old duplicates.
    pub(super) fn expire(&mut self, now: Time, out: &mut Outbox) {
        let now_ms = now.as_millis();
        let before = self.fanins.len();
        self.fanins.retain(|_, f| f.deadline_ms > now_ms);
        self.counters.fanins_expired += (before - self.fanins.len()) as u64;
        let keep_ms = self.config.grace.as_millis() as u64;
        self.seen
            .retain(|_, deadline| deadline.saturating_add(keep_ms) > now_ms);
        let mut expired = Vec::new();
        for list in self.waiting.values_mut() {
            let (late, on_time): (Vec<_>, Vec<_>) =
                list.drain(..).partition(|inv| inv.deadline_ms <= now_ms);
            *list = on_time;
            expired.extend(late);
        }
        self.waiting.retain(|_, list| !list.is_empty());
        let (late, on_time): (Vec<_>, Vec<_>) = self
            .ready
            .drain(..)
            .partition(|inv| inv.deadline_ms <= now_ms);
        self.ready = on_time.into();
        expired.extend(late);
        for inv in expired {
            let error = timeout_error(&inv, "did not start before its deadline");
            self.finish(now, inv, Err(error), out);
        }
    }

    /// A function past its deadline by more than the grace is stuck where
    /// the timeout cannot reach it: its caller gets the timeout and the
    /// executor gives up (the driver exits the process).
    pub(super) fn check_stuck(&mut self, now: Time, out: &mut Outbox) {
        let Some(running) = self.on_worker.front() else {
            return;
        };
        let limit = running.deadline_ms + self.config.grace.as_millis() as u64;
        if self.stuck || now.as_millis() < limit {
            return;
        }
        let Some(running) = self.on_worker.pop_front() else {
            return;
        };
        // The jobs behind it never run: the process exits, and their
        // schedulers re-plan them as they do the queued calls.
        self.stuck = true;
        let grace_ms = self.config.grace.as_millis() as u64;
        let (function, call) = match &running.work {
            Work::Call(inv) => (inv.name(), Some(inv.plan.id)),
            Work::Load(load) => (load.function.as_str(), None),
        };
        warn!(
            function,
            ?call,
            grace_ms,
            "function did not return after its deadline and grace; the executor gives up"
        );
        if let Work::Call(inv) = running.work {
            let why = "did not return by its deadline and could not be interrupted";
            let error = timeout_error(&inv, why);
            self.finish(now, inv, Err(error), out);
        }
    }
}

fn timeout_error(inv: &Invocation, what: &str) -> CallError {
    call_error(
        CallErrorKind::Timeout,
        "Timeout",
        format!("call {} of {} {what}", inv.plan.id, inv.name()),
        inv.name(),
    )
}

/// The versions a function of `plan` reads at least: its caller's session
/// joined with what upstream functions wrote.
fn read_session(plan: &Plan) -> Session {
    let mut session = plan.session.clone();
    session.join(&plan.written);
    session
}

/// Fills a traced call's step of `inv`'s function: its time in the queue
/// and running, and its reads.
fn record_step(now: Time, inv: &mut Invocation, effects: &Effects) {
    let (function, enqueued, started) = (inv.function as usize, inv.enqueued, inv.started);
    let plan = Arc::make_mut(&mut inv.plan);
    let Some(trace) = plan.trace.as_deref_mut() else {
        return;
    };
    let Some(step) = trace.steps.get_mut(function) else {
        return;
    };
    let began = started.unwrap_or(now);
    step.waited_us = began.saturating_since(enqueued).as_micros() as u64;
    step.ran_us = started.map_or(0, |s| now.saturating_since(s).as_micros() as u64);
    step.reads = effects.reads.reads;
    step.cache_hits = effects.reads.cache_hits;
    step.kept_reads = effects.kept_reads;
    step.bytes_read = effects.reads.bytes;
    step.done = true;
}

/// Adds a function's effects to the plan its downstream functions (and
/// its caller) get.
fn add_effects(plan: &mut Arc<Plan>, function: &str, effects: Effects) {
    let plan = Arc::make_mut(plan);
    plan.written.join(&effects.written);
    plan.pinned.pin_all(&effects.pinned);
    if !effects.output.is_empty() {
        plan.output.push(CallOutput {
            function: function.to_string(),
            text: effects.output,
        });
    }
}
