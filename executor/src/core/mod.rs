//! [`ExecutorCore`]: the executor's bookkeeping as a pure state machine.
//!
//! It owns no socket, thread or interpreter. The I/O thread hands it
//! messages and ticks through [`Role::step`], asks it for the next [`crate::job::Job`]
//! while the worker has room ([`ExecutorCore::next_job`], [`MIN_HANDED`]), and hands back
//! what the worker finished ([`ExecutorCore::job_done`]). Everything it wants
//! sent comes out of the [`Outbox`]; user messages for the mailbox come out
//! of [`ExecutorCore::take_deliveries`].
//!
//! - [`calls`]: invokes, triggers and fan-in, the queue, results and errors.
//! - [`functions`]: fetching code from the cache, the warm set, invalidation.
//! - [`prewarm`]: loading a function the monitor calls hot before any call
//!   of it arrives.
//! - [`values`]: watching referenced keys whose values the runtime keeps.
//! - [`coroutines`]: calls of coroutine functions in flight on the event
//!   loop, which do not hold the worker, bounded by `max_async_calls`.

mod calls;
mod coroutines;
mod functions;
mod prewarm;
#[cfg(test)]
mod tests;
mod values;

use crate::config::ExecutorConfig;
use anna::cluster::{ClusterState, ReplicationFactor};
use anna::lattice::{Hlc, WriterId};
use anna::protocol::compute::{CallErrorKind, ExecutorReport, UserMessage};
use anna::protocol::{Address, Message, RequestId};
use anna::role::{named_counters, Input, Outbox, Role, StableHashMap, TransportStats};
use anna::time::Time;
use calls::{InvKey, Invocation, PendingFanIn, Running};
use functions::{Fetch, Warm};
use std::collections::{BTreeMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

/// The worker holds the job it runs and the next, handed before the first
/// ends; more while the jobs it holds are expected to take less than
/// [`HANDED_WORK`] together (by the mean time of recent jobs), up to
/// [`MAX_HANDED`]. Handing one job at a time, the worker waited for a
/// wake-up of the I/O thread (and the I/O thread for a CPU) between any
/// two jobs: 10,000 tiny calls went at 5.5–6.3k calls/s on two cores
/// against 15–17k handing up to 16 (`benches/RESULTS.md`, issue 18).
///
/// A job handed early reads what it reads when it runs, at least at its
/// session (kept values are checked against it), as if it had started
/// when it was handed; a cancel no longer reaches it, and that is why
/// long jobs are not handed ahead beyond the next.
pub const MIN_HANDED: usize = 2;
/// See [`MIN_HANDED`].
pub const MAX_HANDED: usize = 16;
/// See [`MIN_HANDED`].
pub const HANDED_WORK: Duration = Duration::from_millis(2);

/// Who an executor is and whom it talks to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Its own address (its id).
    pub address: Address,
    /// The compute node it runs on.
    pub node: String,
    /// The node's cache.
    pub cache: Address,
    /// The schedulers that get its reports.
    pub schedulers: Vec<Address>,
    /// Fresh at every start of the process (see `ExecutorReport::boot`).
    pub boot: u64,
}

/// What the executor has counted, for status replies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub invokes: u64,
    pub triggers: u64,
    pub duplicates: u64,
    pub malformed: u64,
    pub calls_ok: u64,
    pub calls_failed: u64,
    pub timeouts: u64,
    pub overloaded: u64,
    /// Queued calls dropped because their callers cancelled them.
    pub cancelled: u64,
    pub fetches: u64,
    pub invalidations: u64,
    pub fanins_expired: u64,
    pub fanins_dropped: u64,
    pub user_messages: u64,
    pub mailbox_dropped: u64,
    /// Kept referenced values dropped because their key changed.
    pub value_invalidations: u64,
    /// `Prewarm` messages received.
    pub prewarms: u64,
    /// Prewarms of functions with no code stored.
    pub prewarms_unknown: u64,
    /// Prewarms whose code was unusable or failed to load.
    pub prewarms_failed: u64,
}

impl Counters {
    fn named(&self) -> [(&'static str, u64); 19] {
        [
            ("invokes", self.invokes),
            ("triggers", self.triggers),
            ("duplicates", self.duplicates),
            ("malformed_calls", self.malformed),
            ("calls_ok", self.calls_ok),
            ("calls_failed", self.calls_failed),
            ("timeouts", self.timeouts),
            ("overloaded", self.overloaded),
            ("cancelled", self.cancelled),
            ("fetches", self.fetches),
            ("invalidations", self.invalidations),
            ("fanins_expired", self.fanins_expired),
            ("fanins_dropped", self.fanins_dropped),
            ("user_messages", self.user_messages),
            ("mailbox_dropped", self.mailbox_dropped),
            ("value_invalidations", self.value_invalidations),
            ("prewarms", self.prewarms),
            ("prewarms_unknown", self.prewarms_unknown),
            ("prewarms_failed", self.prewarms_failed),
        ]
    }
}

/// The executor's state machine; see the module docs.
pub struct ExecutorCore {
    config: ExecutorConfig,
    id: Identity,
    hlc: Hlc,
    next_request: u64,
    next_seq: u64,
    next_generation: u64,
    warm: StableHashMap<String, Warm>,
    fetches: StableHashMap<String, Fetch>,
    fetch_ids: StableHashMap<RequestId, String>,
    waiting: StableHashMap<String, Vec<Invocation>>,
    /// Prewarmed functions whose code is being fetched, and until when.
    prewarms: StableHashMap<String, Time>,
    /// Warm functions a prewarm asked the worker to load.
    loads: VecDeque<String>,
    evicted: Vec<String>,
    values: StableHashMap<String, values::Watched>,
    stale_values: Vec<String>,
    subscribed_at: Time,
    fanins: StableHashMap<InvKey, PendingFanIn>,
    seen: StableHashMap<InvKey, u64>,
    ready: VecDeque<Invocation>,
    /// Jobs handed to the worker, in order: the front one runs, the rest
    /// (see [`MIN_HANDED`]) wait in its channel, so it goes from one job
    /// to the next without waiting for this thread.
    on_worker: VecDeque<Running>,
    /// The mean time the worker spent on a job lately (a moving average
    /// of the time between the worker moving on from one job and from the
    /// next), deciding how many jobs it is handed.
    job_time: Duration,
    /// Calls of coroutine functions the worker started, in flight on its
    /// event loop, by job sequence number.
    coroutines: StableHashMap<u64, Running>,
    deliveries: Vec<UserMessage>,
    stuck: bool,
    next_report: Time,
    period_start: Time,
    busy_in_period: Duration,
    calls: BTreeMap<String, u64>,
    counters: Counters,
    /// Calls failed here, by error kind (a handful of kinds: searched in
    /// place, allocated once per kind), for `ExecutorReport::errors`.
    errors: Vec<(CallErrorKind, u64)>,
    transport: TransportStats,
}

impl ExecutorCore {
    /// An executor with nothing loaded, started at `now`.
    pub fn new(config: ExecutorConfig, id: Identity, now: Time) -> Self {
        let mut hasher = DefaultHasher::new();
        id.address.hash(&mut hasher);
        ExecutorCore {
            hlc: Hlc::new(WriterId(hasher.finish())),
            next_report: now + config.report_period,
            period_start: now,
            config,
            id,
            next_request: 0,
            next_seq: 0,
            next_generation: 0,
            warm: StableHashMap::default(),
            fetches: StableHashMap::default(),
            fetch_ids: StableHashMap::default(),
            waiting: StableHashMap::default(),
            prewarms: StableHashMap::default(),
            loads: VecDeque::new(),
            evicted: Vec::new(),
            values: StableHashMap::default(),
            stale_values: Vec::new(),
            subscribed_at: now,
            fanins: StableHashMap::default(),
            seen: StableHashMap::default(),
            ready: VecDeque::new(),
            on_worker: VecDeque::new(),
            job_time: HANDED_WORK,
            coroutines: StableHashMap::default(),
            deliveries: Vec::new(),
            stuck: false,
            busy_in_period: Duration::ZERO,
            calls: BTreeMap::new(),
            counters: Counters::default(),
            errors: Vec::new(),
            transport: TransportStats::default(),
        }
    }

    /// Who this executor is.
    pub fn identity(&self) -> &Identity {
        &self.id
    }

    /// What it has counted.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Whether a function overran its deadline by more than the grace: the
    /// worker thread is lost, its caller has been told, and the process
    /// must exit.
    pub fn is_stuck(&self) -> bool {
        self.stuck
    }

    /// Whether a job is running on the worker.
    pub fn is_busy(&self) -> bool {
        !self.on_worker.is_empty()
    }

    /// User messages received since the last call, for the mailbox.
    pub fn take_deliveries(&mut self) -> std::vec::Drain<'_, UserMessage> {
        self.deliveries.drain(..)
    }

    /// The names of the warm functions, sorted.
    pub fn warm_functions(&self) -> Vec<String> {
        let mut names: Vec<String> = self.warm.keys().cloned().collect();
        names.sort();
        names
    }

    fn request_id(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    fn on_tick(&mut self, now: Time, out: &mut Outbox) {
        self.expire(now, out);
        self.retry_fetches(now, out);
        self.renew_subscriptions(now, out);
        self.check_stuck(now, out);
        self.check_stuck_coroutines(now, out);
        if now >= self.next_report {
            self.report(now, out);
            self.next_report = now + self.config.report_period;
        }
    }

    fn report(&mut self, now: Time, out: &mut Outbox) {
        let mut busy = self.busy_in_period;
        if let Some(running) = self.on_worker.front() {
            busy += now.saturating_since(running.started.max(self.period_start));
        }
        let elapsed = now
            .saturating_since(self.period_start)
            .max(Duration::from_micros(1));
        let permille = (busy.as_micros() * 1000 / elapsed.as_micros()).min(1000) as u16;
        self.period_start = now;
        self.busy_in_period = Duration::ZERO;
        let report = ExecutorReport {
            executor: self.id.address.clone(),
            node: self.id.node.clone(),
            cache: self.id.cache.clone(),
            busy_permille: permille,
            queue: self.queue_len() as u32,
            warm: self.warm_functions(),
            calls: self.calls.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            boot: self.id.boot,
            errors: self
                .errors
                .iter()
                .map(|(k, n)| (format!("{k:?}"), *n))
                .collect(),
            async_running: self.coroutines.len() as u32,
            async_limit: self.config.max_async_calls as u32,
            async_functions: self.async_functions(),
        };
        for scheduler in &self.id.schedulers {
            out.send(scheduler.clone(), Message::ExecutorReport(report.clone()));
        }
    }

    /// Tells every scheduler this executor is going, because it was asked
    /// to stop: they re-plan its calls now instead of after their
    /// `executor_timeout` of silence. The last thing the core sends.
    pub fn leave(&self, out: &mut Outbox) {
        for scheduler in &self.id.schedulers {
            let executor = self.id.address.clone();
            out.send(scheduler.clone(), Message::ExecutorLeaving { executor });
        }
    }

    fn queue_len(&self) -> usize {
        self.ready.len() + self.waiting.values().map(Vec::len).sum::<usize>()
    }

    fn on_user_message(&mut self, msg: UserMessage) {
        self.counters.user_messages += 1;
        if self.deliveries.len() >= self.config.mailbox_capacity {
            self.counters.mailbox_dropped += 1;
        } else {
            self.deliveries.push(msg);
        }
    }

    /// Counts a user message the mailbox had no room for.
    pub fn count_mailbox_drop(&mut self) {
        self.counters.mailbox_dropped += 1;
    }
}

impl Role for ExecutorCore {
    fn step(&mut self, now: Time, input: Input, out: &mut Outbox) {
        let msg = match input {
            Input::Tick => return self.on_tick(now, out),
            Input::Message(msg) => msg,
        };
        match msg {
            Message::Invoke { plan, function } => self.on_invoke(now, plan, function, out),
            Message::Trigger {
                plan,
                function,
                from,
                result,
            } => self.on_trigger(now, plan, function, from, result, out),
            Message::KvsResponse(response) => self.on_kvs_response(now, response, out),
            Message::Gossip(gossip) => {
                self.on_gossip(&gossip);
                self.on_value_gossip(&gossip);
            }
            Message::UserMessage(msg) => self.on_user_message(msg),
            Message::Prewarm { function } => self.on_prewarm(now, function, out),
            Message::CancelCall { id, reply_to } => self.on_cancel(id, reply_to, out),
            Message::Ping { id, reply_to } => out.send(reply_to, Message::Pong { id, boot: 0 }),
            Message::StatusRequest { id, reply_to } => {
                let counters = named_counters(&self.counters.named(), &self.transport);
                let factor = ReplicationFactor {
                    global: 1,
                    local: 1,
                };
                let reply = Message::status_reply(
                    id,
                    &self.id.address,
                    &ClusterState::default(),
                    factor,
                    counters,
                );
                out.send(reply_to, reply);
            }
            _ => self.counters.malformed += 1,
        }
    }

    fn next_tick(&self) -> Option<Time> {
        Some(self.next_report)
    }

    fn observe_transport(&mut self, stats: TransportStats) {
        self.transport = stats;
    }
}
