//! [`Scheduler`]: the role's state and its entry point. The handlers live
//! beside it, one concern per file: `dispatch.rs` (admitting, queueing and
//! finishing calls), `dag_reads.rs` (DAG definitions from the KVS),
//! `splits.rs` (functions' traffic splits from the KVS),
//! `recovery.rs` (executor deaths and deadlines).

use crate::calls::{deadline_time, InFlight};
use crate::config::SchedulerConfig;
use crate::figures::CallLatency;
use crate::placement::Limits;
use crate::records::{Dags, Splits};
use crate::registry::Registry;
use crate::stats::SchedulerStats;
use crate::triggers::Triggers;
use anna::client::ClientCore;
use anna::cluster::{ClusterState, ReplicationFactor};
use anna::lattice::WriterId;
use anna::protocol::compute::{CallId, Plan};
use anna::protocol::{Address, Message};
use anna::role::{Input, Outbox, Role, TransportStats};
use anna::time::Time;
use std::collections::{BTreeMap, VecDeque};

/// The scheduler of the compute tier, as a state machine: see the crate
/// documentation for what it decides and when.
pub struct Scheduler {
    pub(crate) config: SchedulerConfig,
    pub(crate) me: Address,
    /// Reads DAG definitions; answers come to `me`.
    pub(crate) client: ClientCore,
    pub(crate) registry: Registry,
    /// Notices when this scheduler itself was not running (a stall), so
    /// that it is not taken for the silence of every executor.
    pub(crate) pause: anna::role::PauseDetector,
    pub(crate) calls: BTreeMap<CallId, InFlight>,
    /// Calls waiting for a free executor, oldest first; executors not yet
    /// chosen.
    pub(crate) queue: VecDeque<Plan>,
    pub(crate) dags: Dags,
    /// Functions' traffic splits, by plain name.
    pub(crate) splits: Splits,
    /// The storage cluster as last seen by the client, for status replies.
    cluster: ClusterState,
    replication: ReplicationFactor,
    pub(crate) stats: SchedulerStats,
    /// Latency per function and DAG, errors by kind, for the monitor.
    pub(crate) latency: CallLatency,
    pub(crate) triggers: Triggers,
}

impl Scheduler {
    /// A scheduler receiving at `me`, reading the KVS through `routers` as
    /// writer `writer` (unique per scheduler).
    pub fn new(
        config: SchedulerConfig,
        me: Address,
        routers: Vec<Address>,
        writer: WriterId,
    ) -> Self {
        let client = ClientCore::new(config.client.clone(), me.clone(), routers, writer);
        Scheduler {
            config,
            me,
            client,
            registry: Registry::default(),
            pause: anna::role::PauseDetector::default(),
            calls: BTreeMap::new(),
            queue: VecDeque::new(),
            dags: Dags::default(),
            splits: Splits::default(),
            cluster: ClusterState::default(),
            replication: anna::kvs::WorkerConfig::default().replication,
            stats: SchedulerStats::default(),
            latency: CallLatency::default(),
            triggers: Triggers::default(),
        }
    }

    /// The address it receives at.
    pub fn address(&self) -> &Address {
        &self.me
    }

    /// Its settings.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Its counters.
    pub fn stats(&self) -> &SchedulerStats {
        &self.stats
    }

    /// Calls in flight (placed and invoked, not yet finished).
    pub fn in_flight(&self) -> usize {
        self.calls.len()
    }

    /// Calls waiting: for a free executor, for their DAG's definition or
    /// for their function's split.
    pub fn queued(&self) -> usize {
        self.queue.len() + self.dags.waiting() + self.splits.waiting()
    }

    pub(crate) fn limits(&self) -> Limits {
        Limits {
            capacity: self.config.executor_capacity,
            busy_permille: self.config.busy_permille,
            colocate_chains: self.config.colocate_chains,
        }
    }

    fn on_tick(&mut self, now: Time, out: &mut Outbox) {
        let done = self.client.tick(now, out);
        self.on_completions(now, done, out);
        let dead = self.registry.expire(now, self.config.executor_timeout);
        if !dead.is_empty() {
            for executor in &dead {
                tracing::warn!(%executor, "executor silent too long: declared dead");
            }
            self.on_executors_died(now, &dead, out);
        }
        self.expire_calls(now, out);
        self.expire_waiting(now, out);
        self.expire_split_waiting(now, out);
        self.dags.prune(now, self.config.dag_cache_ttl);
        // A split older than the TTL still serves while it is read again.
        self.splits.prune(now, self.config.dag_cache_ttl * 2);
        self.refresh_triggers(now, out);
        self.drain_queue(now, out);
    }

    fn on_status_request(
        &self,
        id: anna::protocol::RequestId,
        reply_to: Address,
        out: &mut Outbox,
    ) {
        let reply = Message::status_reply(
            id,
            &self.me,
            &self.cluster,
            self.replication,
            self.stats.counters(),
        );
        out.send(reply_to, reply);
    }

    fn on_kvs_answer(&mut self, now: Time, msg: Message, out: &mut Outbox) {
        if let Message::StatusReply {
            cluster,
            replication,
            ..
        } = &msg
        {
            self.cluster = cluster.clone();
            self.replication = *replication;
        }
        let done = self.client.handle(now, msg, out);
        self.on_completions(now, done, out);
    }
}

impl Role for Scheduler {
    fn step(&mut self, now: Time, input: Input, out: &mut Outbox) {
        if let Some(idle) = self.pause.woke(now, self.config.executor_timeout / 2) {
            tracing::warn!(
                idle_ms = idle.as_millis() as u64,
                "scheduler ran late: not counting its own pause against the executors"
            );
            self.registry.forgive(idle);
        }
        self.dispatch(now, input, out);
        if self.triggers.next_refresh().is_none() && !self.registry.executors.is_empty() {
            self.refresh_triggers(now, out);
        }
        self.pause.asked(now, self.next_tick());
    }

    fn next_tick(&self) -> Option<Time> {
        self.next_wake()
    }

    fn direct_endpoint(&self, thread: &Address) -> Option<&Address> {
        self.client.direct(thread)
    }

    fn observe_transport(&mut self, stats: TransportStats) {
        self.stats.transport = stats;
    }
}

impl Scheduler {
    fn dispatch(&mut self, now: Time, input: Input, out: &mut Outbox) {
        let msg = match input {
            Input::Tick => return self.on_tick(now, out),
            Input::Message(msg) => msg,
        };
        match msg {
            Message::Call(req) => self.on_call(now, req, out),
            Message::CallDag(req) => self.on_call_dag(now, req, out),
            Message::CallDone {
                id,
                attempt,
                function,
                executor,
                failed,
            } => self.on_call_done(now, id, attempt, function, &executor, failed, out),
            Message::ExecutorReport(report) => {
                if self.registry.restarted(&report) {
                    // The process that had our calls died and was started
                    // again before it fell silent for long: its calls are
                    // lost all the same.
                    let address = report.executor.clone();
                    tracing::warn!(executor = %address, "executor restarted: declared dead");
                    self.registry.remove(&address);
                    self.on_executors_died(now, &[address], out);
                }
                self.registry.on_executor_report(now, report);
                self.drain_queue(now, out);
            }
            Message::ExecutorLeaving { executor } => self.on_executor_leaving(now, executor, out),
            Message::CancelCall { id, reply_to } => self.on_cancel(id, reply_to, out),
            Message::CallTraced(traced) => self.latency.traced(*traced),
            Message::CacheReport(report) => self.registry.on_cache_report(now, report),
            Message::DagChanged(changed) => self.dags.changed(&changed.name),
            Message::Changes(changes) => self.on_changes(now, changes, out),
            Message::WatchState(state) => self.on_watch_state(state),
            Message::CallResult(result) => self.on_trigger_result(result, out),
            m @ (Message::KvsResponse(_) | Message::StatusReply { .. }) => {
                self.on_kvs_answer(now, m, out)
            }
            Message::StatusRequest { id, reply_to } => self.on_status_request(id, reply_to, out),
            Message::ComputeStatusRequest { id, reply_to } => {
                let mut status = self
                    .registry
                    .status(count(self.calls.len()), count(self.queued()));
                status.calls = self.latency.figures(&self.stats);
                status.calls.triggers = self.triggers.figures();
                out.send(reply_to, Message::ComputeStatusReply { id, status });
            }
            Message::Ping { id, reply_to } => out.send(
                reply_to,
                Message::Pong {
                    id,
                    boot: self.client.writer().0,
                },
            ),
            other => {
                self.stats.unexpected += 1;
                tracing::debug!(kind = other.kind(), "scheduler ignored a message");
            }
        }
    }

    /// When the scheduler next has work: an executor falling silent, a
    /// deadline, its client's retries.
    fn next_wake(&self) -> Option<Time> {
        let executors = self.registry.next_expiry(self.config.executor_timeout);
        let grace = self.config.deadline_grace;
        let in_flight = self.calls.values().map(|c| c.deadline() + grace).min();
        let queued = self.queue.iter().map(|p| p.deadline_ms).min();
        let waiting = self.dags.next_deadline_ms();
        let split = self.splits.next_deadline_ms();
        let deadline = [queued, waiting, split].into_iter().flatten().min();
        [
            executors,
            in_flight,
            deadline.map(deadline_time),
            self.client.next_tick(),
            // Triggers need executors to run on; an idle scheduler asks
            // for no tick.
            self.triggers
                .next_refresh()
                .filter(|_| !self.registry.executors.is_empty()),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
