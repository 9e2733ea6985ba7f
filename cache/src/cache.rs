//! [`Cache`]: the cache's state, its dispatch and its timers.

use crate::config::CacheConfig;
use crate::report::CacheStats;
use crate::store::Store;
use anna::client::{ClientCore, OpId};
use anna::kvs::Subscribers;
use anna::lattice::WriterId;
use anna::protocol::{Address, Key, KeyResult, Message, RequestId};
use anna::role::{Input, Outbox, Role, StableHashMap, TransportStats};
use anna::shared::{Shared, ValueFiles};
use anna::time::Time;
use std::collections::BTreeSet;

/// An executor's request waiting for the KVS.
pub(crate) struct Pending {
    pub(crate) reply_to: Address,
    pub(crate) id: RequestId,
    pub(crate) results: Vec<KeyResult>,
    pub(crate) open: usize,
    /// Reads answered from what the cache held.
    pub(crate) hits: u32,
}

/// What a KVS operation of the embedded client is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// A fetch of a missing key for plain reads (answered by value).
    Get,
    /// A fetch for a [`anna::protocol::KeyOp::ReadState`] (answered by
    /// state), at least at the version it asked.
    ReadState,
    Write,
}

/// A KVS operation in flight, and the executor operations waiting on it
/// (several reads of one missing key share one fetch).
pub(crate) struct InFlight {
    pub(crate) key: Key,
    pub(crate) kind: OpKind,
    pub(crate) waiters: Vec<(u64, usize)>,
}

/// The per-node cache as a state machine. See the crate documentation.
pub struct Cache {
    pub(crate) config: CacheConfig,
    pub(crate) node: String,
    pub(crate) me: Address,
    pub(crate) schedulers: Vec<Address>,
    pub(crate) client: ClientCore,
    pub(crate) store: Store,
    /// Executors subscribed to keys at this cache.
    pub(crate) executors: Subscribers,
    pub(crate) pending: StableHashMap<u64, Pending>,
    pub(crate) ops: StableHashMap<OpId, InFlight>,
    pub(crate) fetching: StableHashMap<Key, OpId>,
    /// Held keys not yet subscribed at their owners (placement unknown).
    pub(crate) unsubscribed: BTreeSet<Key>,
    /// Held keys changed since executors were last told.
    pub(crate) to_push: BTreeSet<Key>,
    pub(crate) next_pending: u64,
    pub(crate) next_renewal: Time,
    pub(crate) next_report: Time,
    pub(crate) next_prune: Time,
    pub(crate) stats: CacheStats,
    /// Large values answered to executors in shared memory.
    pub(crate) shared: Shared,
}

impl Cache {
    /// The cache of compute node `node`, receiving at `me` (where the KVS
    /// pushes subscribed keys; executors may reach it at another endpoint
    /// of the same socket), reading through `routers`, reporting to
    /// `schedulers`, writing as `writer`.
    pub fn new(
        config: CacheConfig,
        node: String,
        me: Address,
        routers: Vec<Address>,
        schedulers: Vec<Address>,
        writer: WriterId,
    ) -> Self {
        let client = ClientCore::new(config.client.clone(), me.clone(), routers, writer);
        let shared = Shared::new(config.shared_min_bytes, config.shared_bytes);
        Cache {
            shared,
            store: Store::new(config.capacity_bytes),
            config,
            node,
            me,
            schedulers,
            client,
            executors: Subscribers::default(),
            pending: StableHashMap::default(),
            ops: StableHashMap::default(),
            fetching: StableHashMap::default(),
            unsubscribed: BTreeSet::new(),
            to_push: BTreeSet::new(),
            next_pending: 0,
            next_renewal: Time::default(),
            next_report: Time::default(),
            next_prune: Time::default(),
            stats: CacheStats::default(),
        }
    }

    /// Answers executors' reads of large values in files of `files` from
    /// now on (see [`anna::shared`]); without, every value is answered in
    /// the frame.
    pub fn share_values_in(&mut self, files: Box<dyn ValueFiles>) {
        self.shared.set_files(files);
    }

    /// The cache's KVS client, to be given what only its process knows
    /// (the shared memory it maps storage threads' files of:
    /// [`ClientCore::map_shared_memory`]).
    pub fn client_mut(&mut self) -> &mut ClientCore {
        &mut self.client
    }

    /// The address the KVS pushes to.
    pub fn address(&self) -> &Address {
        &self.me
    }

    /// Whether `key` is held.
    pub fn holds(&self, key: &str) -> bool {
        self.store.contains(key)
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> u64 {
        self.store.bytes()
    }

    /// The counters.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    fn on_message(&mut self, now: Time, msg: Message, out: &mut Outbox) {
        match msg {
            Message::Ping { id, reply_to } => out.send(reply_to, Message::Pong { id, boot: 0 }),
            Message::KvsRequest(req) => self.on_request(now, req, out),
            Message::Gossip(g) => self.on_gossip(g),
            Message::Subscribe(sub) => self.on_executor_subscribe(now, sub, out),
            msg @ (Message::KvsResponse(_) | Message::StatusReply { .. }) => {
                let done = self.client.handle(now, msg, out);
                self.complete(now, done, out);
            }
            Message::StatusRequest { id, reply_to } => self.on_status(id, reply_to, out),
            other => {
                self.stats.unexpected += 1;
                tracing::debug!(kind = other.kind(), "cache ignored a message");
            }
        }
    }

    fn on_tick(&mut self, now: Time, out: &mut Outbox) {
        let done = self.client.tick(now, out);
        self.complete(now, done, out);
        if !self.store.is_empty() && now >= self.next_renewal {
            self.renew(now, out);
        }
        if !self.schedulers.is_empty() && now >= self.next_report {
            self.report(now, out);
        }
        if now >= self.next_prune {
            self.next_prune = now + anna::kvs::subscriptions::PRUNE_PERIOD;
            self.executors.prune(now);
        }
        self.shared.tick(now);
    }

    /// After every step: evict beyond capacity, subscribe new keys at their
    /// owners, push changes to subscribed executors.
    fn flush(&mut self, now: Time, out: &mut Outbox) {
        for key in self.store.evict() {
            self.stats.evictions += 1;
            self.shared.retire(now, &key);
            self.unsubscribed.remove(&key);
            self.to_push.remove(&key);
        }
        if !self.unsubscribed.is_empty() {
            self.subscribe_new(now, out);
        }
        if !self.to_push.is_empty() {
            self.push_changes(now, out);
        }
    }

    pub(crate) fn fresh_pending(&mut self) -> u64 {
        self.next_pending += 1;
        self.next_pending
    }
}

impl Role for Cache {
    fn step(&mut self, now: Time, input: Input, out: &mut Outbox) {
        match input {
            Input::Message(msg) => self.on_message(now, msg, out),
            Input::Tick => self.on_tick(now, out),
        }
        self.flush(now, out);
    }

    fn next_tick(&self) -> Option<Time> {
        let mut next = self.client.next_tick();
        let mut consider = |t: Time| next = Some(next.map_or(t, |n: Time| n.min(t)));
        if !self.store.is_empty() {
            consider(self.next_renewal);
        }
        if !self.schedulers.is_empty() {
            consider(self.next_report);
        }
        if !self.executors.is_empty() {
            consider(self.next_prune);
        }
        if let Some(at) = self.shared.next_tick() {
            consider(at);
        }
        next
    }

    fn direct_endpoint(&self, thread: &Address) -> Option<&Address> {
        self.client.direct(thread)
    }

    fn observe_transport(&mut self, stats: TransportStats) {
        self.stats.transport = stats;
    }
}
