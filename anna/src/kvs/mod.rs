//! The storage worker: one thread's shard of the KVS, as a state machine.
//!
//! A node runs T workers, each owning its shard outright (a plain map, no
//! lock) and its own socket. A worker answers reads and writes for the keys
//! the [`Placement`] gives it, answers "not mine" (with the ring version) for
//! the others, gossips changed keys to their other replicas every gossip
//! period, sweeps its whole shard to the replicas more slowly (anti-entropy,
//! so a lost gossip message costs only time), and hands keys to their new
//! owners when the membership changes.
//!
//! # Layout
//!
//! - `mod.rs`: the worker's state, configuration and dispatch.
//! - [`requests`]: gets, puts and deletes, with acknowledgement levels and
//!   reads that consult the previous owners while keys move.
//! - [`gossip`]: periodic gossip, anti-entropy, receiving gossip and acks.
//! - [`membership`]: joining, heartbeats, ring changes and key handoff.
//! - [`departure`]: a node's graceful departure (SIGTERM), a role of its
//!   own that asks the workers to hand over, then tells the routers.
//! - [`stats`]: counters, and per-epoch access statistics (a Misra–Gries
//!   heavy-hitter summary) with the busy fraction.
//! - `report`: the answer to the monitor's `StatsRequest`.
//! - [`subscriptions`]: caches subscribed to keys, pushed every change.
//! - [`triggers`]: changes of watched key prefixes, kept for schedulers
//!   until the trigger's function ran.
//!
//! # State
//!
//! Besides its configuration and shard, a worker's state is grouped by
//! concern, each group a type in the file of its concern with the methods
//! that need only it; a handler that needs more takes the worker and
//! reaches the groups by name, so each touches visibly which:
//!
//! - `id` (`Identity`): the node, the thread's index and address, the
//!   routers; fixed at the start.
//! - `ring` ([`membership`]'s `Ring`): the cluster state, the placement,
//!   the placement before the last change, this node's incarnation, when
//!   thread 0 next heartbeats, and the buffer a key's owners are looked up
//!   into.
//! - `handoffs` ([`membership`]'s `Handoffs`): keys queued for new owners,
//!   batches sent and not acknowledged, keys stranded here unowned.
//! - `leave` ([`membership`]'s `Leave`): a graceful departure in progress.
//! - `rounds` ([`gossip`]'s `Rounds`): keys changed since the last gossip
//!   round, the anti-entropy sweep, and both rounds' timers.
//! - `reqs` ([`requests`]' `Requests`): client requests not yet answered,
//!   the acknowledgements and fetches they wait on, their deadlines, and
//!   the ids of the worker's own requests.
//! - `subs` ([`subscriptions`]' `Subscriptions`): subscribers, keys owed
//!   a push, and the pruning timer.
//! - `triggers` ([`triggers`]' `Triggers`): watched prefixes and the
//!   changes not yet done.
//! - `stats` ([`WorkerStats`]): counters and access statistics.

pub mod departure;
mod durability;
pub mod gossip;
pub mod membership;
mod replication;
mod report;
pub mod requests;
pub mod shard;
pub mod stats;
pub mod subscriptions;
pub mod triggers;

use crate::cluster::{ClusterState, Placement, ReplicationFactor};
use crate::lattice::KeyState;
use crate::protocol::{Address, Key, Message, NodeInfo, RequestId};
use crate::role::{Input, Outbox, Role, StableHashMap};
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub use shard::{FlushPolicy, MemoryStore, Recovered, Shard, ShardStore, SharedStore, StoreError};
pub use stats::WorkerStats;
pub use subscriptions::Subscribers;

/// Settings of a storage worker. Every field has a default that runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Replication factor of keys without an override: nodes (global) and
    /// threads per node (local). Capped by the live nodes and threads.
    pub replication: ReplicationFactor,
    /// How often changed keys are sent to their other replicas.
    #[serde(with = "crate::config::millis")]
    pub gossip_period: Duration,
    /// How often a slice of the whole shard is re-sent to the replicas, so
    /// replicas converge even after gossip was lost.
    #[serde(with = "crate::config::millis")]
    pub anti_entropy_period: Duration,
    /// How many keys each anti-entropy round re-sends.
    pub anti_entropy_keys: usize,
    /// How many bytes of values each anti-entropy round re-sends at most
    /// (`KeyState::approx_bytes`, counted once per replica it goes to),
    /// when that comes before `anti_entropy_keys`. A key larger than this
    /// still goes, alone, and the next round then waits as many periods as
    /// its bytes are worth: the shard is re-sent at no more than this many
    /// bytes per period, so a large value costs no CPU to speak of at idle
    /// (a 60 MB value with two other replicas, at the defaults: once every
    /// four minutes). At least 1.
    pub anti_entropy_bytes: usize,
    /// How long a put waits for the replicas its acknowledgement level asks
    /// for before answering with an error.
    #[serde(with = "crate::config::millis")]
    pub ack_timeout: Duration,
    /// How often thread 0 tells the routers the node is alive.
    #[serde(with = "crate::config::millis")]
    pub heartbeat_period: Duration,
    /// How long an unacknowledged key handoff waits before it is resent.
    #[serde(with = "crate::config::millis")]
    pub handoff_retry: Duration,
    /// After a ring change, how long reads of a key also ask its previous
    /// owners (whose handoff may not have arrived yet).
    #[serde(with = "crate::config::millis")]
    pub transition_window: Duration,
    /// Length of one statistics epoch.
    #[serde(with = "crate::config::millis")]
    pub stats_epoch: Duration,
    /// How long a node stopping gracefully (SIGTERM) may spend handing its
    /// keys over before it departs anyway.
    #[serde(with = "crate::config::millis")]
    pub leave_timeout: Duration,
    /// When a node with a data directory writes changed keys to disk and
    /// syncs them: `"always"` (before acknowledging any write), `"periodic"`
    /// (every `flush_period`; a crash loses at most that much of writes
    /// not acknowledged at `durable`), `"never"` (written every
    /// `flush_period`, synced by the operating system). Writes
    /// acknowledged at `durable` are synced first whatever the policy.
    pub flush: FlushPolicy,
    /// The period of `periodic` and `never`.
    #[serde(with = "crate::config::millis")]
    pub flush_period: Duration,
    /// Bytes of keys a node with a data directory keeps in memory (0: no
    /// limit), shared evenly by its threads. Past it, keys not read or
    /// written for a flush period leave memory and are served from disk
    /// (promoted back when read); keys changed since the last flush stay.
    pub memory_bytes: usize,
    /// The `[limits]` section: writes over `max_value_bytes` or timestamped
    /// past `max_clock_skew` are refused. Set by the process from the
    /// config file's own section.
    #[serde(skip)]
    pub limits: crate::config::Limits,
    /// The directory (on a `tmpfs`) where a thread writes large values
    /// read by clients on this machine, for them to map (see
    /// [`crate::shared`]): a reader whose request names the same shared
    /// memory gets a file instead of the bytes in the frame. Empty: every
    /// value is answered in the frame. Set by the process.
    pub shared_dir: String,
    /// Last-writer-wins values of at least this many bytes are answered in
    /// shared memory to readers on this machine.
    pub shared_min_bytes: u64,
    /// At most this many bytes of values in shared memory, per thread
    /// (beyond it the least recently read are dropped from it first).
    pub shared_bytes: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            replication: ReplicationFactor {
                global: 2,
                local: 1,
            },
            gossip_period: Duration::from_millis(10),
            anti_entropy_period: Duration::from_millis(500),
            anti_entropy_keys: 512,
            anti_entropy_bytes: 256 << 10,
            ack_timeout: Duration::from_secs(2),
            heartbeat_period: Duration::from_millis(500),
            handoff_retry: Duration::from_millis(300),
            transition_window: Duration::from_secs(3),
            stats_epoch: Duration::from_secs(1),
            leave_timeout: Duration::from_secs(30),
            flush: FlushPolicy::Periodic,
            flush_period: Duration::from_millis(100),
            memory_bytes: 0,
            limits: crate::config::Limits::default(),
            shared_dir: "/dev/shm".to_string(),
            shared_min_bytes: 1 << 20,
            shared_bytes: 1 << 30,
        }
    }
}

/// One storage thread.
pub struct StorageWorker {
    config: WorkerConfig,
    id: Identity,
    ring: membership::Ring,
    shard: Shard,
    flushes: durability::Flushes,
    rounds: gossip::Rounds,
    leave: Option<membership::Leave>,
    handoffs: membership::Handoffs,
    reqs: requests::Requests,
    stats: WorkerStats,
    subs: subscriptions::Subscriptions,
    triggers: triggers::Triggers,
    /// Large values answered in files of shared memory to readers on this
    /// machine ([`StorageWorker::with_shared_memory`]).
    shared: crate::shared::Shared,
    /// The shared memory those files are in (see
    /// [`crate::protocol::KvsRequest::shared_memory`]); `None`: none.
    shared_memory: Option<u64>,
}

/// Who a storage thread is: fixed at its start.
struct Identity {
    /// Its node (id, incarnation, every thread's address).
    node: NodeInfo,
    /// Its index among the node's threads.
    thread: u32,
    /// The address it receives at (`node.threads[thread]`).
    me: Address,
    /// The routers it joins and reports through.
    routers: Vec<Address>,
}

impl StorageWorker {
    /// Thread `thread` of `node`, which joins through `routers`.
    ///
    /// Panics if `thread` is not one of `node`'s threads: that is a wiring
    /// bug in the launcher, not input.
    pub fn new(config: WorkerConfig, node: NodeInfo, thread: u32, routers: Vec<Address>) -> Self {
        let me = node.threads[thread as usize].clone();
        let triggers = triggers::Triggers::new(&me);
        let ring = membership::Ring::new(config.replication);
        let shared = crate::shared::Shared::new(config.shared_min_bytes, config.shared_bytes);
        StorageWorker {
            stats: WorkerStats::new(config.stats_epoch),
            config,
            id: Identity {
                node,
                thread,
                me,
                routers,
            },
            ring,
            shard: Shard::in_memory(),
            flushes: durability::Flushes::default(),
            rounds: gossip::Rounds::default(),
            leave: None,
            handoffs: membership::Handoffs::default(),
            reqs: requests::Requests::default(),
            subs: subscriptions::Subscriptions::default(),
            triggers,
            shared,
            shared_memory: None,
        }
    }

    /// This worker answering large values' reads from readers whose
    /// requests name `identity` (the shared memory `files` are in) with a
    /// file of `files` instead of the bytes ([`crate::shared`]).
    pub fn with_shared_memory(
        mut self,
        files: Box<dyn crate::shared::ValueFiles>,
        identity: u64,
    ) -> Self {
        self.shared.set_files(files);
        self.shared_memory = Some(identity);
        self
    }

    /// The address this worker receives at.
    pub fn address(&self) -> &Address {
        &self.id.me
    }

    /// The state held in memory for `key`, owned or not (see
    /// [`StorageWorker::peek_state`] for keys on disk only).
    pub fn get_state(&self, key: &str) -> Option<&KeyState> {
        self.shard.get(key)
    }

    /// The state held for `key` in either tier, owned or not, read without
    /// bringing it into memory.
    pub fn peek_state(&mut self, key: &str) -> Option<KeyState> {
        self.shard.peek(key).map(std::borrow::Cow::into_owned)
    }

    /// The keys held in memory, with their states (every key held,
    /// without a memory budget).
    pub fn shard(&self) -> &StableHashMap<Key, KeyState> {
        self.shard.memory()
    }

    /// Keys, bytes and hits of the memory and disk tiers.
    pub fn tiers(&self) -> shard::TierStats {
        self.shard.tiers()
    }

    /// This worker keeping its keys in `store` too, starting with the keys
    /// the store holds (a restarted node's); the number of records the
    /// store could not decode (skipped). A worker without a store keeps
    /// its keys in memory only.
    pub fn with_store(mut self, store: Box<dyn ShardStore>) -> Result<(Self, u64), StoreError> {
        let threads = self.id.node.threads.len().max(1);
        let (shard, skipped) = Shard::recover(store, self.config.memory_bytes / threads)?;
        self.shard = shard;
        Ok((self, skipped))
    }

    /// The membership this worker knows.
    pub fn cluster(&self) -> &ClusterState {
        self.ring.cluster()
    }

    /// The placement this worker routes by.
    pub fn placement(&self) -> &Placement {
        self.ring.placement()
    }

    /// The counters and access statistics.
    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// Whether this worker is in the ring.
    pub fn joined(&self) -> bool {
        self.ring.joined()
    }

    /// Whether no handoff is outstanding and every key held is owned.
    pub fn settled(&self) -> bool {
        self.handoffs.is_idle() && self.shard.keys().all(|k| self.owns(k))
    }

    /// Whether a graceful departure has handed every key over.
    pub fn left(&self) -> bool {
        self.leave.as_ref().is_some_and(|l| l.reported())
    }

    /// Whether this worker holds `key` under the current placement. A
    /// worker that has not joined (or whose incarnation was declared
    /// departed) owns nothing, even if an older incarnation at the same
    /// addresses is still in the ring; nor does one that has handed all its
    /// keys over to leave (a write it took now would not be handed over).
    fn owns(&self, key: &str) -> bool {
        self.ring.joined()
            && !self.left()
            && self
                .ring
                .placement()
                .is_owner(key, self.id.node.id, self.id.thread)
    }

    fn fresh_id(&mut self) -> RequestId {
        self.reqs.fresh_id()
    }
}

impl Role for StorageWorker {
    fn step(&mut self, now: Time, input: Input, out: &mut Outbox) {
        self.stats.advance(now);
        match input {
            Input::Message(msg) => self.on_message(now, msg, out),
            Input::Tick => self.on_tick(now, out),
        }
    }

    fn observe_transport(&mut self, stats: crate::role::TransportStats) {
        self.stats.transport = stats;
    }

    fn next_tick(&self) -> Option<Time> {
        let mut next = None;
        let mut consider = |t: Time| {
            next = Some(next.map_or(t, |n: Time| n.min(t)));
        };
        if self.rounds.has_changed() || self.handoffs.queued() || self.subs.owed() {
            consider(self.rounds.next_gossip());
        }
        if let Some(t) = self.subs.prune_due() {
            consider(t);
        }
        if !self.shard.is_empty() {
            consider(self.rounds.next_anti_entropy());
        }
        if self.id.thread == 0 {
            consider(self.ring.next_heartbeat());
        }
        if let Some(t) = self.reqs.next_deadline() {
            consider(t);
        }
        if let Some(t) = self.shared.next_tick() {
            consider(t);
        }
        if let Some(h) = self.handoffs.next_retry() {
            consider(h);
        }
        if let Some(t) = self.reqs.fetch_retry_due(self.config.handoff_retry) {
            consider(t);
        }
        if let Some(t) = self.handoffs.next_stranded_check() {
            consider(t);
        }
        if let Some(leave) = &self.leave {
            if leave.unfinished() {
                consider(self.rounds.next_gossip());
            }
        }
        if let Some(t) = self.next_flush() {
            consider(t);
        }
        if let Some(t) = self.triggers.next_due(self.rounds.next_gossip()) {
            consider(t);
        }
        next
    }
}

impl StorageWorker {
    fn on_message(&mut self, now: Time, msg: Message, out: &mut Outbox) {
        match msg {
            Message::Ping { id, reply_to } => out.send(
                reply_to,
                Message::Pong {
                    id,
                    boot: self.id.node.boot,
                },
            ),
            Message::KvsRequest(req) => self.on_request(now, req, out),
            Message::Gossip(g) => self.on_gossip(now, g, out),
            Message::GossipAck { id, from } => self.on_gossip_ack(now, id, from, out),
            Message::Fetch { id, reply_to, keys } => self.on_fetch(id, reply_to, keys, out),
            Message::FetchReply { id, from, entries } => {
                self.on_fetch_reply(now, id, from, entries, out)
            }
            Message::Membership(m) => self.on_membership(now, m, out),
            Message::Subscribe(sub) => self.on_subscribe(now, sub, out),
            Message::Watch(watch) => self.on_watch(now, *watch, out),
            Message::ChangesDone { seqs, .. } => self.triggers.done(&seqs),
            Message::StatusRequest { id, reply_to } => {
                let mut counters =
                    (self.stats).counters(self.shard.len(), self.subs.len(), self.shard.tiers());
                counters.extend(
                    (self.shared.counters()).map(|(name, value)| (name.to_string(), value)),
                );
                let reply = Message::status_reply(
                    id,
                    &self.id.me,
                    self.ring.cluster(),
                    self.config.replication,
                    counters,
                );
                out.send(reply_to, reply)
            }
            Message::StatsRequest { id, reply_to } => self.on_stats_request(id, reply_to, out),
            other => {
                self.stats.unexpected += 1;
                tracing::debug!(kind = other.kind(), "storage worker ignored a message");
            }
        }
    }

    fn on_tick(&mut self, now: Time, out: &mut Outbox) {
        // First: writes that waited for a sync are answered before their
        // deadline can expire them.
        self.flush(now, out);
        self.expire_pending(now, out);
        if now >= self.rounds.next_gossip() {
            self.gossip(now, out);
        }
        if now >= self.rounds.next_anti_entropy() {
            self.anti_entropy(now, out);
        }
        if self.id.thread == 0 && now >= self.ring.next_heartbeat() {
            self.heartbeat(now, out);
        }
        self.retry_handoffs(now, out);
        self.reqs
            .retry_fetches(now, self.config.handoff_retry, &self.id.me, out);
        self.rehome_stranded(now);
        self.triggers.send(now, &self.id.me, out);
        self.continue_leave(now, out);
        self.subs.prune(now);
        self.shared.tick(now);
    }
}
