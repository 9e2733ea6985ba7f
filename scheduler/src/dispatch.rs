//! Admitting calls: planning, placing, invoking, queueing when no executor
//! is free, and the bookkeeping of `CallDone`.

use crate::calls::{deadline_time, InFlight};
use crate::plan;
use crate::records::Waiting;
use crate::scheduler::Scheduler;
use anna::lattice::{LatticeValue, Lww};
use anna::protocol::compute::{
    encode_value, CallError, CallErrorKind, CallId, CallOutcome, CallRequest, CallResult, Dag,
    DagCallRequest, Plan, ReplyTo,
};
use anna::protocol::{Address, Message};
use anna::role::Outbox;
use anna::time::Time;

impl Scheduler {
    pub(crate) fn on_call(&mut self, now: Time, req: CallRequest, out: &mut Outbox) {
        self.stats.calls += 1;
        if self.calls.contains_key(&req.id) {
            self.stats.duplicates += 1;
            self.latency.resends += 1;
            return;
        }
        let deadline_ms = now.as_millis().saturating_add(u64::from(req.timeout_ms));
        if let Some(req) = self.through_split(now, req, deadline_ms, out) {
            self.admit_call(now, req, deadline_ms, out);
        }
    }

    /// Plans a single call, its function resolved, and admits it.
    pub(crate) fn admit_call(
        &mut self,
        now: Time,
        req: CallRequest,
        deadline_ms: u64,
        out: &mut Outbox,
    ) {
        let plan = plan::single(req, deadline_ms, &self.me);
        self.admit(now, plan, out);
    }

    pub(crate) fn on_call_dag(&mut self, now: Time, req: DagCallRequest, out: &mut Outbox) {
        self.stats.dag_calls += 1;
        if self.calls.contains_key(&req.id) {
            self.stats.duplicates += 1;
            self.latency.resends += 1;
            return;
        }
        let deadline_ms = now.as_millis().saturating_add(u64::from(req.timeout_ms));
        let at_least = req
            .session
            .get(&anna::protocol::compute::dag_key(&req.dag))
            .cloned();
        let ttl = self.config.dag_cache_ttl;
        if let Some(dag) = self.dags.lookup(&req.dag, now, ttl, at_least.as_ref()) {
            self.stats.dag_cache_hits += 1;
            return self.plan_dag(now, &dag, req, deadline_ms, out);
        }
        if self.queued() >= self.config.queue_capacity {
            return self.refuse_overloaded(now, req.id, &req.reply, out);
        }
        let name = req.dag.clone();
        let call = Waiting {
            req,
            deadline_ms,
            at_least,
        };
        if let Some(first) = self.dags.wait(&name, call) {
            self.start_dag_read(now, name, vec![first], out);
        }
    }

    /// Plans a call of `dag` and admits it, or refuses a bad shape.
    pub(crate) fn plan_dag(
        &mut self,
        now: Time,
        dag: &Dag,
        req: DagCallRequest,
        deadline_ms: u64,
        out: &mut Outbox,
    ) {
        let (id, reply) = (req.id, req.reply.clone());
        match plan::dag(dag, req, deadline_ms, &self.me) {
            Ok(plan) => self.admit(now, plan, out),
            Err(message) => {
                self.stats.bad_arguments += 1;
                self.answer_error(
                    now,
                    id,
                    &reply,
                    CallErrorKind::BadArguments,
                    message,
                    None,
                    out,
                );
            }
        }
    }

    /// Places and invokes `plan`, or queues it if no executor is free
    /// (behind any call already waiting: the queue is first in, first out).
    fn admit(&mut self, now: Time, mut plan: Plan, out: &mut Outbox) {
        if let Some(trace) = &mut plan.trace {
            trace.arrived_us = now.as_micros();
        }
        let limits = self.limits();
        if self.queue.is_empty() && self.registry.place(&mut plan, limits) {
            return self.launch(now, plan, Vec::new(), out);
        }
        if self.queued() >= self.config.queue_capacity {
            return self.refuse_overloaded(now, plan.id, &plan.reply, out);
        }
        self.stats.queued += 1;
        self.queue.push_back(plan);
    }

    /// Drops call `id` if it still waits in the queue and `reply_to` is its
    /// caller's reply address, and answers that it did. A single function
    /// placed on an executor: the executor is asked, and answers (it drops
    /// the call if it has not started it). Otherwise (a DAG under way, a
    /// call not known here) the answer is no.
    pub(crate) fn on_cancel(&mut self, id: CallId, reply_to: Address, out: &mut Outbox) {
        let queued = self
            .queue
            .iter()
            .position(|p| p.id == id && p.reply.address == reply_to);
        if queued.and_then(|i| self.queue.remove(i)).is_some() {
            self.stats.cancelled += 1;
            tracing::debug!(%id, "queued call cancelled");
            return out.send(
                reply_to,
                Message::CancelAnswer {
                    id,
                    cancelled: true,
                },
            );
        }
        let placed = self
            .calls
            .get(&id)
            .and_then(|call| match &call.plan.functions[..] {
                [f] if call.plan.reply.address == reply_to => Some(f.executor.clone()),
                _ => None,
            });
        match placed {
            Some(executor) => out.send(executor, Message::CancelCall { id, reply_to }),
            None => out.send(
                reply_to,
                Message::CancelAnswer {
                    id,
                    cancelled: false,
                },
            ),
        }
    }

    pub(crate) fn refuse_overloaded(
        &mut self,
        now: Time,
        id: CallId,
        reply: &ReplyTo,
        out: &mut Outbox,
    ) {
        self.stats.overloaded += 1;
        let message = format!(
            "no executor is free and the scheduler's queue is full ({} calls waiting)",
            self.queued()
        );
        self.answer_error(
            now,
            id,
            reply,
            CallErrorKind::Overloaded,
            message,
            None,
            out,
        );
    }

    /// Sends `Invoke` to the executor of every source function of a placed
    /// plan and records the call as in flight, dispatched at `dispatched`
    /// (now, or the first dispatch of a call dispatched again).
    pub(crate) fn launch(
        &mut self,
        dispatched: Time,
        mut plan: Plan,
        retired: Vec<(u32, u16, Address)>,
        out: &mut Outbox,
    ) {
        if let Some(trace) = &mut plan.trace {
            trace.queued_us = dispatched.as_micros().saturating_sub(trace.arrived_us);
        }
        for function in plan.sources() {
            let executor = plan.functions[usize::from(function)].executor.clone();
            let invoke = Message::Invoke {
                plan: Box::new(plan.clone()),
                function,
            };
            self.stats.invokes += 1;
            out.send(executor, invoke);
        }
        let id = plan.id;
        let call = InFlight::new(plan, retired, dispatched);
        if let Some(old) = self.calls.insert(id, call) {
            self.release(&old);
        }
    }

    /// Dispatches queued calls, oldest first, while executors are free;
    /// answers `Timeout` to those whose deadline has passed.
    pub(crate) fn drain_queue(&mut self, now: Time, out: &mut Outbox) {
        let limits = self.limits();
        while let Some(mut plan) = self.queue.pop_front() {
            if self.calls.contains_key(&plan.id) {
                self.stats.duplicates += 1;
                continue;
            }
            if deadline_time(plan.deadline_ms) <= now {
                self.queued_too_long(now, plan, out);
                continue;
            }
            if !self.registry.place(&mut plan, limits) {
                self.queue.push_front(plan);
                return;
            }
            self.launch(now, plan, Vec::new(), out);
        }
    }

    /// Answers `Timeout` to a call that waited in the queue past its
    /// deadline.
    pub(crate) fn queued_too_long(&mut self, now: Time, plan: Plan, out: &mut Outbox) {
        self.stats.timeouts += 1;
        let why = if self.registry.executors.is_empty() {
            "no executor is registered with the scheduler".to_string()
        } else {
            format!(
                "no executor was free ({} registered, all busy)",
                self.registry.executors.len()
            )
        };
        let message = format!("{why}: the call waited in the queue until its deadline");
        self.answer_error(
            now,
            plan.id,
            &plan.reply,
            CallErrorKind::Timeout,
            message,
            None,
            out,
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_call_done(
        &mut self,
        now: Time,
        id: CallId,
        attempt: u32,
        function: u16,
        executor: &Address,
        failed: bool,
        out: &mut Outbox,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            self.stats.stale_done += 1;
            return;
        };
        if attempt != call.plan.attempt {
            self.stats.stale_done += 1;
            let retired = call
                .retired
                .iter()
                .position(|(a, f, _)| *a == attempt && *f == function);
            if let Some(i) = retired {
                let (_, _, executor) = call.retired.swap_remove(i);
                self.registry.release(&executor);
                self.drain_queue(now, out);
            }
            return;
        }
        let i = usize::from(function);
        if call.done.get(i) != Some(&false) {
            self.stats.duplicates += 1;
            return;
        }
        call.done[i] = true;
        let placed = &call.plan.functions[i].executor;
        if placed != executor {
            tracing::debug!(%id, %placed, %executor, "call done reported by another executor");
        }
        let placed = placed.clone();
        let finished = failed || call.sinks_done();
        self.registry
            .done(&placed, &call.plan.functions[i].name, now);
        if finished {
            if let Some(call) = self.calls.remove(&id) {
                self.release(&call);
                let took = now.saturating_since(call.dispatched);
                self.latency.finished(&call.plan, took);
            }
            if failed {
                self.stats.failed += 1;
            } else {
                self.stats.completed += 1;
            }
        }
        self.drain_queue(now, out);
    }

    /// Releases what a call that ends still holds on executors.
    pub(crate) fn release(&mut self, call: &InFlight) {
        for (_, executor) in call.unfinished() {
            self.registry.release(executor);
        }
        for (_, _, executor) in &call.retired {
            self.registry.release(executor);
        }
    }

    /// Fails call `id` with an error of the scheduler's own: to the caller,
    /// and under the call's response key if it has one.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn answer_error(
        &mut self,
        now: Time,
        id: CallId,
        reply: &ReplyTo,
        kind: CallErrorKind,
        message: String,
        function: Option<String>,
        out: &mut Outbox,
    ) {
        tracing::debug!(%id, ?kind, %message, "call failed at the scheduler");
        self.latency.failed(kind);
        let outcome = CallOutcome::Error(CallError {
            kind,
            type_name: format!("{kind:?}"),
            message,
            traceback: String::new(),
            function,
        });
        if let Some(key) = &reply.response_key {
            let at = self.client.timestamp(now);
            let value = LatticeValue::Lww(Lww::new(at, encode_value(&outcome)));
            self.client.put(now, key.clone(), value, out);
        }
        out.send(
            reply.address.clone(),
            Message::CallResult(CallResult {
                id,
                outcome,
                written: Default::default(),
                output: Vec::new(),
                trace: None,
            }),
        );
    }
}
