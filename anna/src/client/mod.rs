//! The KVS client.
//!
//! [`ClientCore`] is the protocol as a state machine (no socket, no clock):
//! it fetches the cluster state from a router once and places keys itself
//! (the same [`Placement`] the routers and workers compute), sends each
//! operation to one of the key's replicas (spreading operations over them),
//! retries another replica when one does not answer in time, fetches the
//! state again when a thread says "not mine", and gives up with a clear
//! error at the operation's deadline. No per-key routing round trip. The
//! simulator drives it directly; `squall_transport::Client` drives it over
//! ZeroMQ with blocking calls.

use crate::cluster::{ClusterState, Placement, ReplicationFactor};
use crate::lattice::{
    Hlc, KeyState, Lattice, LatticeKind, LatticeValue, Timestamp, TypeMismatch, WriterId,
};
use crate::protocol::figures::KvsFigures;
use crate::protocol::{
    Ack, Address, Key, KeyOp, KvsError, KvsRequest, KvsResponse, Message, Outcome, RequestId,
    Session, SessionLog, SharedValue,
};
use crate::role::Outbox;
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Settings of a client. Every field has a default that runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// How long one attempt (at one replica, or one router) may take
    /// before the next is tried.
    #[serde(with = "crate::config::millis")]
    pub attempt_timeout: Duration,
    /// How long an operation may take in all before it fails with
    /// [`ClientError::Timeout`].
    #[serde(with = "crate::config::millis")]
    pub op_timeout: Duration,
    /// Acknowledgement level of puts.
    pub put_ack: Ack,
    /// Acknowledgement level of deletes (all replicas, so no later put
    /// lands on a replica that missed the delete).
    pub delete_ack: Ack,
    /// A cluster state older than this is fetched again in the background
    /// (operations go on with the old one meanwhile), so that a key whose
    /// replication was raised is spread over its new replicas without any
    /// "not mine" to tell the client.
    #[serde(with = "crate::config::millis")]
    pub placement_refresh: Duration,
    /// Send requests to a storage thread straight over TCP where its node
    /// serves that (answers come back on the same connection: two thread
    /// crossings instead of four); otherwise, or with `false`, over
    /// ZeroMQ.
    pub direct: bool,
    /// Read large values that a storage thread on this machine holds from
    /// a file of its shared memory (`/dev/shm`), mapped, instead of in the
    /// frame ([`crate::shared`]); `false`: always in the frame.
    pub shared_memory: bool,
    /// The `[limits]` section: a put over `max_value_bytes` fails at once,
    /// without being sent. Set by the process from the config file's own
    /// section.
    #[serde(skip)]
    pub limits: crate::config::Limits,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            attempt_timeout: Duration::from_millis(500),
            op_timeout: Duration::from_secs(5),
            put_ack: Ack::FirstReplica,
            delete_ack: Ack::All,
            placement_refresh: Duration::from_secs(1),
            direct: true,
            shared_memory: true,
            limits: crate::config::Limits::default(),
        }
    }
}

/// Why an operation failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// No answer in time from any replica or router tried.
    #[error("`{key}`: no answer within {after:?} (tried {tried})")]
    Timeout {
        key: Key,
        after: Duration,
        tried: String,
    },
    /// The key holds another lattice type than the one written.
    #[error("`{key}`: {mismatch}")]
    TypeMismatch { key: Key, mismatch: TypeMismatch },
    /// Fewer replicas than asked acknowledged the write in time.
    #[error("`{key}`: only {acked} of {wanted} replicas acknowledged the write in time")]
    AckTimeout { key: Key, acked: u8, wanted: u8 },
    /// The key holds another type than the caller expects.
    #[error("`{key}` holds {stored}, not {wanted}")]
    WrongKind {
        key: Key,
        stored: LatticeKind,
        wanted: LatticeKind,
    },
    /// The routers know no live storage node.
    #[error("`{key}`: the cluster has no live storage node")]
    NoNodes { key: Key },
    /// No replica answered with the version the read must see (this
    /// client's own write, or its caller's) before the deadline.
    #[error("`{key}`: no replica reached holds this session's write of it (tried {tried})")]
    Stale { key: Key, tried: String },
    /// The write was refused by the `[limits]` (a value too large, a
    /// timestamp too far ahead), by this client before sending or by the
    /// replica.
    #[error("`{key}`: {reason}")]
    Refused { key: Key, reason: KvsError },
    /// A write asked to be durable did not reach a replica's disk (it may
    /// be held in memory).
    #[error("`{key}` is not durable: {reason}")]
    NotDurable { key: Key, reason: String },
    /// The client's key lacks the right the operation needs.
    #[error("`{key}`: {reason}")]
    PermissionDenied { key: Key, reason: String },
    /// A socket failed.
    #[error("transport: {0}")]
    Transport(String),
}

impl ClientError {
    /// The error a replica's refusal `error` of an operation on `key`
    /// becomes; `tried` names where the operation went (for `Stale`).
    pub fn from_kvs(key: Key, error: KvsError, tried: impl FnOnce() -> String) -> Self {
        match error {
            KvsError::TypeMismatch(mismatch) => ClientError::TypeMismatch { key, mismatch },
            KvsError::AckTimeout { acked, wanted } => {
                ClientError::AckTimeout { key, acked, wanted }
            }
            KvsError::WrongKind { stored, wanted } => ClientError::WrongKind {
                key,
                stored,
                wanted,
            },
            KvsError::Stale => ClientError::Stale {
                key,
                tried: tried(),
            },
            reason @ (KvsError::TooLarge { .. }
            | KvsError::ClockAhead { .. }
            | KvsError::DiskRead { .. }) => ClientError::Refused { key, reason },
            KvsError::NotDurable { reason } => ClientError::NotDurable { key, reason },
            KvsError::PermissionDenied { reason } => ClientError::PermissionDenied { key, reason },
        }
    }

    /// The protocol error this failure is relayed as (by a cache to the
    /// executor that asked): a replica's refusal as it was; a timeout or a
    /// transport failure reads as a write no replica acknowledged.
    pub fn to_kvs(&self) -> KvsError {
        match self {
            ClientError::TypeMismatch { mismatch, .. } => KvsError::TypeMismatch(mismatch.clone()),
            ClientError::AckTimeout { acked, wanted, .. } => KvsError::AckTimeout {
                acked: *acked,
                wanted: *wanted,
            },
            ClientError::WrongKind { stored, wanted, .. } => KvsError::WrongKind {
                stored: *stored,
                wanted: *wanted,
            },
            ClientError::Stale { .. } => KvsError::Stale,
            ClientError::Refused { reason, .. } => reason.clone(),
            ClientError::NotDurable { reason, .. } => KvsError::NotDurable {
                reason: reason.clone(),
            },
            ClientError::PermissionDenied { reason, .. } => KvsError::PermissionDenied {
                reason: reason.clone(),
            },
            ClientError::Timeout { .. }
            | ClientError::NoNodes { .. }
            | ClientError::Transport(_) => KvsError::AckTimeout {
                acked: 0,
                wanted: 1,
            },
        }
    }
}

/// How long a read that found only older versions than its session's waits
/// before asking the replicas again (gossip brings a write to every replica
/// within a few 10 ms periods).
const STALE_RETRY: Duration = Duration::from_millis(5);

/// How long after writing a key a client sends its further writes of the
/// key to the replica that took the first: one replica then sees the
/// client's writes in order, so a write of another lattice type than the
/// client's previous one is refused there (`TypeMismatch`) instead of
/// landing on a replica gossip has not reached yet. Reads spread anyway;
/// the session makes them see the writes.
pub const WRITE_AFFINITY: Duration = Duration::from_secs(1);

/// Most keys remembered for [`WRITE_AFFINITY`]; beyond, expired entries are
/// dropped, and if none has expired, all.
const MAX_RECENT_WRITES: usize = 4096;

/// Reads the file at `path` of a value in shared memory: its `len`
/// bytes (mapped, not copied, by `squall_transport::shared::map_file`).
pub type MapFile = fn(path: &str, len: u64) -> std::io::Result<bytes::Bytes>;

/// Most keys whose file of shared memory a client remembers
/// ([`ClientCore::shared_source`]); beyond, it forgets them all.
const MAX_SHARED_SOURCES: usize = 1024;

/// Identifies one operation of a [`ClientCore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// What a finished operation gives back.
#[derive(Clone, Debug, PartialEq)]
pub enum OpOutput {
    /// A read's value, `None` if the key holds nothing.
    Value(Option<LatticeValue>),
    /// A write (put or delete) was acknowledged, made in delete epoch
    /// `epoch` (see `Outcome::Stored`).
    Written { epoch: Option<Timestamp> },
    /// A [`ClientCore::read_state`]'s state.
    State(KeyState),
}

/// A finished operation.
pub type Completion = (OpId, Result<OpOutput, ClientError>);

#[derive(Clone, Debug)]
enum OpKind {
    Get,
    /// A read of the whole state (boxed: states are large, most ops are
    /// not these).
    Read(Box<StateRead>),
    Put(LatticeValue, Ack),
    Delete(Timestamp, Ack),
}

/// A read that must see at least `at_least` (answered from `merged`, the
/// merge of every replica's answer so far), or wants the whole state
/// (`whole`).
#[derive(Clone, Debug)]
struct StateRead {
    at_least: Option<KeyState>,
    merged: KeyState,
    whole: bool,
}

impl OpKind {
    fn read(at_least: Option<KeyState>, whole: bool) -> Self {
        OpKind::Read(Box::new(StateRead {
            at_least,
            merged: KeyState::default(),
            whole,
        }))
    }
}

#[derive(Debug)]
struct Op {
    key: Key,
    kind: OpKind,
    deadline: Time,
    attempt_deadline: Time,
    /// Where the current attempt went: a replica, or `None` while waiting
    /// for the cluster state.
    at: Option<Address>,
    tried: Vec<Address>,
    /// The request carrying the current attempt, and the operation's place
    /// among that request's operations.
    request: (RequestId, u32),
    /// Which replica of its key the operation tries first: consecutive
    /// operations start at consecutive replicas.
    turn: u64,
    /// When it started, for its latency.
    started: Time,
    /// An attempt was sent: the next one is a retry.
    sent: bool,
    /// Its answer named a file of shared memory that was gone by the time
    /// it was opened (replaced by a newer version's meanwhile).
    vanished: bool,
}

/// The client protocol as a state machine.
pub struct ClientCore {
    config: ClientConfig,
    me: Address,
    routers: Vec<Address>,
    hlc: Hlc,
    placement: Option<Placement>,
    /// When the placement's cluster state arrived.
    placement_at: Time,
    /// Operations started, for [`Op::turn`].
    turns: u64,
    /// Every acknowledged write's version: reads of a key wait for it.
    session: SessionLog,
    /// Keys written lately: the replica each write went to, and until when
    /// further writes of the key go there first ([`WRITE_AFFINITY`]).
    recent_writes: HashMap<Key, (Address, Time)>,
    /// The outstanding cluster-state request, and when it was sent.
    asking: Option<(RequestId, Time)>,
    asked: u64,
    /// Boxed: the map moves entries as it changes, a pointer each
    /// instead of a whole operation.
    ops: BTreeMap<OpId, Box<Op>>,
    by_request: HashMap<(RequestId, u32), OpId>,
    /// The owners of the key an attempt goes to (kept: its capacity is
    /// reused by every attempt).
    owners: Vec<Address>,
    /// The shared memory this client maps files of, and how: named in its
    /// requests, so that a storage thread on this machine may answer a
    /// large value in a file ([`ClientCore::map_shared_memory`]).
    shared_memory: Option<(u64, MapFile)>,
    /// The file each key's value was last read from in shared memory, with
    /// its version ([`ClientCore::shared_source`]); at most
    /// [`MAX_SHARED_SOURCES`] keys.
    shared_sources: HashMap<Key, (Timestamp, String)>,
    /// While a batch is open ([`ClientCore::batch`]): the requests being
    /// assembled, one per (replica, acknowledgement level).
    batch: Option<Vec<(Address, KvsRequest)>>,
    /// Operations refused before being sent, reported at the next tick.
    refused: Vec<Completion>,
    next: u64,
    /// Latency per operation kind, retries, failures (see
    /// [`ClientCore::figures`]).
    figures: KvsFigures,
}

impl ClientCore {
    /// A client receiving at `me`, routing through `routers`, writing as
    /// `writer` (unique per client: it breaks timestamp ties).
    pub fn new(config: ClientConfig, me: Address, routers: Vec<Address>, writer: WriterId) -> Self {
        ClientCore {
            config,
            me,
            routers,
            hlc: Hlc::new(writer),
            placement: None,
            placement_at: Time::default(),
            turns: 0,
            session: SessionLog::default(),
            recent_writes: HashMap::new(),
            asking: None,
            asked: 0,
            ops: BTreeMap::new(),
            by_request: HashMap::new(),
            owners: Vec::new(),
            shared_memory: None,
            shared_sources: HashMap::new(),
            batch: None,
            refused: Vec::new(),
            next: 0,
            figures: KvsFigures::default(),
        }
    }

    /// From now on, names shared memory `identity` in its requests (see
    /// [`crate::protocol::KvsRequest::shared_memory`]) and reads a value
    /// answered in a file there with `map` (the file's bytes, `len` of
    /// them). If a file cannot be read, the client stops naming it and
    /// asks again for the value in the frame; a file gone once (a version
    /// replaced between the answer and its reading) is asked for again
    /// first.
    pub fn map_shared_memory(&mut self, identity: u64, map: MapFile) {
        self.shared_memory = Some((identity, map));
    }

    /// The file of shared memory `key`'s value was last read from, with
    /// the version it held (the file may be gone since): for a node's
    /// cache to give its executors the same file under its own name
    /// instead of a copy ([`crate::shared::Shared::share`]).
    pub fn shared_source(&self, key: &str) -> Option<(Timestamp, &str)> {
        (self.shared_sources.get(key)).map(|(stamp, path)| (*stamp, path.as_str()))
    }

    /// The routers this client asks.
    pub fn routers(&self) -> &[Address] {
        &self.routers
    }

    /// Where this client sends its requests to storage thread `thread`
    /// straight over TCP: the thread's endpoint as the cluster state this
    /// client holds names it ([`crate::cluster::Placement::direct`]),
    /// unless its settings say not to ([`ClientConfig::direct`]).
    pub fn direct(&self, thread: &Address) -> Option<&Address> {
        if !self.config.direct {
            return None;
        }
        self.placement.as_ref()?.direct(thread)
    }

    /// Its settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The writer id this client stamps and counts as.
    pub fn writer(&self) -> WriterId {
        self.hlc.writer()
    }

    /// The address answers must come to.
    pub fn address(&self) -> &Address {
        &self.me
    }

    /// A fresh timestamp from this client's hybrid logical clock.
    pub fn timestamp(&mut self, now: Time) -> Timestamp {
        self.hlc.now(now.as_millis())
    }

    /// How many operations are in flight.
    pub fn in_flight(&self) -> usize {
        self.ops.len() + self.refused.len()
    }

    /// Starts a read of `key`: at least at the version this client wrote
    /// of it, if it did.
    pub fn get(&mut self, now: Time, key: Key, out: &mut Outbox) -> OpId {
        let kind = match self.session.get(&key) {
            None => OpKind::Get,
            Some(w) => OpKind::read(Some(w.clone()), false),
        };
        self.start(now, key, kind, out)
    }

    /// Starts a read of `key`'s whole state ([`OpOutput::State`]) that
    /// covers `at_least` and this client's own write of the key: replicas
    /// are asked in turn (their answers merged) until one does, or the
    /// operation's deadline ends it with [`ClientError::Stale`].
    pub fn read_state(
        &mut self,
        now: Time,
        key: Key,
        at_least: Option<KeyState>,
        out: &mut Outbox,
    ) -> OpId {
        let at_least = match (at_least, self.session.get(&key)) {
            (a, None) => a,
            (None, Some(w)) => Some(w.clone()),
            (Some(a), Some(w)) => Some(a.join(w.clone())),
        };
        self.start(now, key, OpKind::read(at_least, true), out)
    }

    /// The versions of this client's acknowledged writes, for its calls to
    /// carry.
    pub fn session(&mut self) -> Session {
        self.session.snapshot()
    }

    /// Records a write made on this client's behalf by someone else (a
    /// function it called), so its later reads see it too.
    pub fn record_write(&mut self, key: &str, state: &KeyState) {
        self.session.record(key, state);
    }

    /// Starts a merge of `value` into `key`, acknowledged at the configured
    /// level.
    pub fn put(&mut self, now: Time, key: Key, value: LatticeValue, out: &mut Outbox) -> OpId {
        let ack = self.config.put_ack;
        self.put_with(now, key, value, ack, out)
    }

    /// Starts a merge of `value` into `key`, acknowledged at `ack`.
    pub fn put_with(
        &mut self,
        now: Time,
        key: Key,
        value: LatticeValue,
        ack: Ack,
        out: &mut Outbox,
    ) -> OpId {
        if let Err(reason) = self.config.limits.check_size(value.approx_bytes()) {
            // Refused here, at once: sending it would cost the whole
            // timeout before the replica's refusal, or the socket's.
            let id = OpId(self.fresh());
            self.refused
                .push((id, Err(ClientError::Refused { key, reason })));
            return id;
        }
        self.start(now, key, OpKind::Put(value, ack), out)
    }

    /// Starts a delete of `key` as of now.
    pub fn delete(&mut self, now: Time, key: Key, out: &mut Outbox) -> OpId {
        let at = self.timestamp(now);
        let ack = self.config.delete_ack;
        self.start(now, key, OpKind::Delete(at, ack), out)
    }

    /// Starts a delete of `key` as of `at`, acknowledged at `ack`: for a
    /// component relaying another's delete (a cache), which keeps its
    /// caller's timestamp.
    pub fn delete_at(
        &mut self,
        now: Time,
        key: Key,
        at: Timestamp,
        ack: Ack,
        out: &mut Outbox,
    ) -> OpId {
        self.hlc.observe(at);
        self.start(now, key, OpKind::Delete(at, ack), out)
    }

    /// The placement this client routes by; `None` until it has fetched
    /// the cluster state.
    pub fn placement(&self) -> Option<&Placement> {
        self.placement.as_ref()
    }

    /// The owner threads of `key` under the placement this client knows;
    /// `None` until it has fetched the cluster state (or after a thread
    /// said "not mine" and it has not fetched it again).
    pub fn owners(&self, key: &str) -> Option<Vec<Address>> {
        self.placement.as_ref().map(|p| p.owners(key))
    }

    /// Asks a router for the cluster state now (unless a request is already
    /// out), so that a placement that went stale with a ring change is
    /// refreshed without waiting for a "not mine".
    pub fn refresh_placement(&mut self, now: Time, out: &mut Outbox) {
        self.ask_for_state(now, out);
    }

    fn fresh(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn start(&mut self, now: Time, key: Key, kind: OpKind, out: &mut Outbox) -> OpId {
        if self.placement.is_some() && now >= self.placement_at + self.config.placement_refresh {
            self.ask_for_state(now, out);
        }
        let id = OpId(self.fresh());
        self.turns = self.turns.wrapping_add(1);
        let op = Op {
            key,
            kind,
            deadline: now + self.config.op_timeout,
            attempt_deadline: now,
            at: None,
            tried: Vec::new(),
            request: (RequestId(0), 0),
            turn: self.turns,
            started: now,
            sent: false,
            vanished: false,
        };
        self.ops.insert(id, Box::new(op));
        self.attempt(now, id, out);
        id
    }

    /// Sends the next attempt of `id` to a replica of its key not yet
    /// tried (starting at the operation's turn, so consecutive operations
    /// spread over the replicas); with no placement, or every replica tried,
    /// asks a router for the cluster state and waits for it.
    fn attempt(&mut self, now: Time, id: OpId, out: &mut Outbox) {
        let fresh = RequestId(self.next + 1);
        let Some(op) = self.ops.get_mut(&id) else {
            return;
        };
        self.by_request.remove(&op.request);
        op.attempt_deadline = now + self.config.attempt_timeout;
        // Reads spread over the replicas (a read of a key this client
        // wrote waits for a replica holding the write: its session); a
        // write of a key written lately goes where the last write went.
        let is_write = matches!(op.kind, OpKind::Put(..) | OpKind::Delete(..));
        let wrote_at = (self.recent_writes.get(&op.key))
            .filter(|(_, until)| is_write && *until > now)
            .map(|(at, _)| at);
        // The replica: chosen among the owners (collected into the
        // client's own list, reused), moved out of it, no other copy.
        let owners = &mut self.owners;
        let replica = self.placement.as_ref().and_then(|p| {
            p.owners_into(&op.key, owners);
            let n = owners.len();
            let sticky = wrote_at
                .and_then(|a| owners.iter().position(|o| o == a))
                .filter(|&i| !op.tried.contains(&owners[i]));
            let i = sticky.or_else(|| {
                (0..n)
                    .map(|i| (op.turn as usize).wrapping_add(i) % n)
                    .find(|&i| !op.tried.contains(&owners[i]))
            })?;
            Some(owners.swap_remove(i))
        });
        let Some(to) = replica else {
            op.tried.clear();
            op.at = None;
            self.ask_for_state(now, out);
            return;
        };
        let key = op.key.clone();
        let (kv_op, ack) = match &op.kind {
            OpKind::Get => (KeyOp::Get { key }, Ack::FirstReplica),
            OpKind::Read(_) => (
                KeyOp::ReadState {
                    key,
                    at_least: None,
                },
                Ack::FirstReplica,
            ),
            OpKind::Put(v, ack) => (
                KeyOp::Put {
                    key,
                    value: v.clone(),
                },
                *ack,
            ),
            OpKind::Delete(at, ack) => (KeyOp::Delete { key, at: *at }, *ack),
        };
        op.tried.push(to.clone());
        op.at = Some(to.clone());
        if op.sent {
            self.figures.retries += 1;
        }
        op.sent = true;
        if is_write {
            let key = op.key.clone();
            self.remember_write(now, key, to.clone());
        }
        // In a batch, join the request already going to this replica at
        // this acknowledgement level; otherwise send a request of its own.
        let joined = self.batch.as_mut().and_then(|batch| {
            batch
                .iter_mut()
                .find(|(at, req)| *at == to && req.ack == ack)
        });
        let request = match joined {
            Some((_, req)) => {
                req.ops.push(kv_op);
                (req.id, req.ops.len() as u32 - 1)
            }
            None => {
                self.next += 1;
                let req = KvsRequest {
                    id: fresh,
                    reply_to: self.me.clone(),
                    ops: vec![kv_op],
                    ack,
                    shared_memory: self.shared_memory.map(|(identity, _)| identity),
                };
                match self.batch.as_mut() {
                    Some(batch) => batch.push((to, req)),
                    None => out.send(to, Message::KvsRequest(req)),
                }
                (fresh, 0)
            }
        };
        self.by_request.insert(request, id);
        if let Some(op) = self.ops.get_mut(&id) {
            op.request = request;
        }
    }

    /// Writes of `key` go to `to` for [`WRITE_AFFINITY`].
    fn remember_write(&mut self, now: Time, key: Key, to: Address) {
        if self.recent_writes.len() >= MAX_RECENT_WRITES && !self.recent_writes.contains_key(&key) {
            self.recent_writes.retain(|_, (_, until)| *until > now);
            if self.recent_writes.len() >= MAX_RECENT_WRITES {
                self.recent_writes.clear();
            }
        }
        self.recent_writes.insert(key, (to, now + WRITE_AFFINITY));
    }

    /// Runs `start` (which starts operations: [`ClientCore::get`],
    /// [`ClientCore::put`], ...) as one batch: operations bound for the
    /// same replica at the same acknowledgement level travel in one
    /// request, answered by one response (a multi-key get or put). Retries
    /// go one by one.
    pub fn batch<T>(
        &mut self,
        out: &mut Outbox,
        start: impl FnOnce(&mut Self, &mut Outbox) -> T,
    ) -> T {
        let outer = self.batch.replace(Vec::new());
        let result = start(self, out);
        let batch = std::mem::replace(&mut self.batch, outer).unwrap_or_default();
        for (to, req) in batch {
            out.send(to, Message::KvsRequest(req));
        }
        result
    }

    /// Asks a router (a different one each time) for the cluster state,
    /// unless a request is already out and not yet timed out.
    fn ask_for_state(&mut self, now: Time, out: &mut Outbox) {
        if let Some((_, sent)) = self.asking {
            if sent + self.config.attempt_timeout > now {
                return;
            }
        }
        if self.routers.is_empty() {
            return;
        }
        self.asked += 1;
        let id = RequestId(self.fresh());
        let router = self.routers[(self.asked as usize) % self.routers.len()].clone();
        self.asking = Some((id, now));
        out.send(
            router,
            Message::StatusRequest {
                id,
                reply_to: self.me.clone(),
            },
        );
    }

    /// Forgets the placement (a thread said "not mine"): the next attempt
    /// fetches the cluster state again.
    fn forget_placement(&mut self) {
        self.placement = None;
    }

    /// Handles an answer; returns the operations it finished.
    pub fn handle(&mut self, now: Time, msg: Message, out: &mut Outbox) -> Vec<Completion> {
        let mut done = Vec::new();
        match msg {
            Message::StatusReply {
                id,
                cluster,
                replication,
                ..
            } => self.on_state(now, id, cluster, replication, out, &mut done),
            Message::KvsResponse(r) => self.on_response(now, r, out, &mut done),
            _ => {}
        }
        done
    }

    fn on_state(
        &mut self,
        now: Time,
        id: RequestId,
        cluster: ClusterState,
        replication: ReplicationFactor,
        out: &mut Outbox,
        done: &mut Vec<Completion>,
    ) {
        if self.asking.map(|(asked, _)| asked) != Some(id) {
            return;
        }
        self.asking = None;
        self.placement_at = now;
        let placement = Placement::new(&cluster, replication);
        let empty = placement.nodes().is_empty();
        self.placement = Some(placement);
        let waiting: Vec<OpId> = self
            .ops
            .iter()
            .filter(|(_, op)| op.at.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            if empty {
                // No live node yet: fail now if the deadline is near, else
                // ask again at the attempt timeout.
                let Some(op) = self.ops.get(&id) else {
                    continue;
                };
                if op.deadline <= op.attempt_deadline {
                    let key = op.key.clone();
                    self.finish(now, id, Err(ClientError::NoNodes { key }), done);
                }
            } else {
                self.attempt(now, id, out);
            }
        }
        if empty {
            self.placement = None;
        }
    }

    fn on_response(
        &mut self,
        now: Time,
        r: KvsResponse,
        out: &mut Outbox,
        done: &mut Vec<Completion>,
    ) {
        for (place, result) in r.results.into_iter().enumerate() {
            let Some(&id) = self.by_request.get(&(r.id, place as u32)) else {
                continue;
            };
            self.on_result(now, id, result, out, done);
        }
    }

    fn on_result(
        &mut self,
        now: Time,
        id: OpId,
        result: crate::protocol::KeyResult,
        out: &mut Outbox,
        done: &mut Vec<Completion>,
    ) {
        let Some(op) = self.ops.get(&id) else {
            return;
        };
        let key = op.key.clone();
        let output = match result.outcome {
            Outcome::State(state) => return self.on_state_read(now, id, state, out, done),
            Outcome::Value(v) => Ok(OpOutput::Value(Some(v))),
            Outcome::NotFound => Ok(OpOutput::Value(None)),
            Outcome::Stored { epoch } => Ok(OpOutput::Written { epoch }),
            Outcome::NotMine { .. } => {
                self.forget_placement();
                if let Some(op) = self.ops.get_mut(&id) {
                    op.tried.clear();
                }
                self.attempt(now, id, out);
                return;
            }
            Outcome::Error(error) => Err(ClientError::from_kvs(key, error, || result_from(op))),
            Outcome::Shared(shared) => {
                let path = shared.path.clone();
                let (filled, gone) = match self.shared_memory {
                    Some((_, map)) => match map(&shared.path, shared.len) {
                        Ok(bytes) => (shared.fill(bytes), false),
                        Err(e) => (Err(e.to_string()), e.kind() == std::io::ErrorKind::NotFound),
                    },
                    None => (Err("this client maps no shared memory".to_string()), false),
                };
                match filled {
                    Ok(outcome) => {
                        self.figures.shared += 1;
                        if let Some((stamp, _)) = SharedValue::candidate(&outcome, 0) {
                            if self.shared_sources.len() >= MAX_SHARED_SOURCES {
                                self.shared_sources.clear();
                            }
                            self.shared_sources.insert(key.clone(), (stamp, path));
                        }
                        let result = crate::protocol::KeyResult { key, outcome };
                        return self.on_result(now, id, result, out, done);
                    }
                    Err(why) => {
                        // Asked again, of the same replica. A file gone
                        // once is a version replaced meanwhile: asked
                        // again as before. Otherwise (or gone twice) the
                        // file is not in this client's memory after all:
                        // values come in frames from now on.
                        let Some(op) = self.ops.get_mut(&id) else {
                            return;
                        };
                        let replaced = gone && !op.vanished;
                        op.vanished |= gone;
                        op.tried.pop();
                        if replaced {
                            tracing::debug!(%key, %path, "a file of shared memory was gone: asking again");
                        } else {
                            tracing::warn!(%key, %path, %why,
                                "a value in shared memory could not be read: values come in frames from now on");
                            self.shared_memory = None;
                        }
                        self.attempt(now, id, out);
                        return;
                    }
                }
            }
        };
        self.finish(now, id, output, done);
    }

    /// A replica's state for a [`OpKind::Read`]: finished if what the
    /// replicas answered so far covers the version asked; otherwise the
    /// next replica is asked, or, every one tried, all again shortly.
    fn on_state_read(
        &mut self,
        now: Time,
        id: OpId,
        state: KeyState,
        out: &mut Outbox,
        done: &mut Vec<Completion>,
    ) {
        let Some(op) = self.ops.get_mut(&id) else {
            return;
        };
        let OpKind::Read(read) = &mut op.kind else {
            return;
        };
        let StateRead {
            at_least,
            merged,
            whole,
        } = &mut **read;
        merged.merge(state);
        if at_least.as_ref().is_none_or(|w| merged.covers(w)) {
            let output = if *whole {
                OpOutput::State(std::mem::take(merged))
            } else {
                OpOutput::Value(merged.visible().map(|v| v.into_owned()))
            };
            return self.finish(now, id, Ok(output), done);
        }
        let untried = self
            .placement
            .as_ref()
            .is_some_and(|p| p.owners(&op.key).iter().any(|a| !op.tried.contains(a)));
        if untried {
            self.attempt(now, id, out);
        } else {
            // Every replica answered an older version: the write is still
            // on its way to them. Ask them all again shortly.
            op.tried.clear();
            self.by_request.remove(&op.request);
            op.attempt_deadline = now + STALE_RETRY;
        }
    }

    fn finish(
        &mut self,
        now: Time,
        id: OpId,
        result: Result<OpOutput, ClientError>,
        done: &mut Vec<Completion>,
    ) {
        if let Some(op) = self.ops.remove(&id) {
            self.by_request.remove(&op.request);
            self.count(now, &op, &result);
            if let Ok(OpOutput::Written { epoch }) = &result {
                match &op.kind {
                    OpKind::Put(v, _) => {
                        let made = KeyState::written(*epoch, v.witness());
                        self.session.record(&op.key, &made);
                    }
                    OpKind::Delete(at, _) => {
                        self.session.record(&op.key, &KeyState::tombstone(*at))
                    }
                    _ => {}
                }
            }
            done.push((id, result));
        }
    }

    /// Counts a finished operation's latency (from its start, retries
    /// included) and its failure, if it failed.
    fn count(&mut self, now: Time, op: &Op, result: &Result<OpOutput, ClientError>) {
        let took = now.saturating_since(op.started);
        let f = &mut self.figures;
        match op.kind {
            OpKind::Get | OpKind::Read(_) => f.get.record(took),
            OpKind::Put(..) => f.put.record(took),
            OpKind::Delete(..) => f.delete.record(took),
        }
        match result {
            Ok(_) => {}
            Err(ClientError::Timeout { .. }) => f.timeouts += 1,
            Err(_) => f.errors += 1,
        }
    }

    /// What this client counted since it was made: latency per operation
    /// kind (reads of a whole state count as gets), retries, failures.
    pub fn figures(&self) -> &KvsFigures {
        &self.figures
    }

    /// Retries attempts that timed out and fails operations past their
    /// deadline; returns the operations it finished.
    pub fn tick(&mut self, now: Time, out: &mut Outbox) -> Vec<Completion> {
        let mut done = std::mem::take(&mut self.refused);
        let due: Vec<OpId> = self
            .ops
            .iter()
            .filter(|(_, op)| op.attempt_deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(op) = self.ops.get(&id) else {
                continue;
            };
            if op.deadline <= now {
                if matches!(&op.kind, OpKind::Read(r) if r.at_least.is_some()) {
                    let err = ClientError::Stale {
                        key: op.key.clone(),
                        tried: result_from(op),
                    };
                    self.finish(now, id, Err(err), &mut done);
                    continue;
                }
                // No replica asked: the cluster state never came.
                let no_router = || match self.routers.as_slice() {
                    [] => "no router: none configured".to_string(),
                    routers => {
                        let routers: Vec<&str> = routers.iter().map(Address::as_str).collect();
                        format!(
                            "{}: no router answered, is the cluster up?",
                            routers.join(", ")
                        )
                    }
                };
                let err = ClientError::Timeout {
                    key: op.key.clone(),
                    after: self.config.op_timeout,
                    tried: op.at.as_ref().map_or_else(no_router, |a| a.to_string()),
                };
                self.finish(now, id, Err(err), &mut done);
            } else {
                self.attempt(now, id, out);
            }
        }
        done
    }

    /// When [`ClientCore::tick`] next has work.
    pub fn next_tick(&self) -> Option<Time> {
        if !self.refused.is_empty() {
            return Some(Time::default());
        }
        self.ops.values().map(|op| op.attempt_deadline).min()
    }
}

/// Where an operation's attempts went, for an error message.
fn result_from(op: &Op) -> String {
    op.at
        .as_ref()
        .map_or_else(|| "no replica".to_string(), |a| a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lattice::Max;
    use crate::protocol::{KeyResult, NodeId, NodeInfo};

    const ME: &str = "inproc://client";

    /// One node with `threads` threads, replication 1 node x `local`.
    fn state_reply(id: RequestId, threads: usize, local: u8) -> Message {
        let mut cluster = ClusterState::default();
        cluster.record_join(NodeInfo {
            id: NodeId(1),
            threads: (0..threads)
                .map(|t| Address(format!("inproc://thread-{t}")))
                .collect(),
            boot: 1,
            direct: Vec::new(),
        });
        Message::StatusReply {
            id,
            from: Address::from("inproc://router"),
            cluster,
            replication: ReplicationFactor { global: 1, local },
            counters: Vec::new(),
        }
    }

    /// A client that knows a cluster of one node with `threads` threads
    /// and keys on `local` of them.
    fn client_of(now: Time, out: &mut Outbox, threads: usize, local: u8) -> ClientCore {
        let mut core = ClientCore::new(
            ClientConfig::default(),
            Address::from(ME),
            vec![Address::from("inproc://router")],
            WriterId(1),
        );
        core.get(now, "warm-up".to_string(), out);
        let (_, Message::StatusRequest { id, .. }) = out.drain().next().unwrap() else {
            panic!("the client asks for the cluster state first");
        };
        core.handle(now, state_reply(id, threads, local), out);
        out.drain().for_each(drop);
        core
    }

    /// A client that knows a cluster of one node with one thread, every
    /// key on it.
    fn client_of_one_thread(now: Time, out: &mut Outbox) -> ClientCore {
        client_of(now, out, 1, 1)
    }

    /// Where each of `n` gets of `key` went.
    fn gets_per_replica(
        core: &mut ClientCore,
        now: Time,
        key: &str,
        n: usize,
    ) -> BTreeMap<String, usize> {
        let mut out = Outbox::default();
        let mut at = BTreeMap::new();
        for _ in 0..n {
            core.get(now, key.to_string(), &mut out);
        }
        for (to, msg) in out.drain() {
            if matches!(msg, Message::KvsRequest(_)) {
                *at.entry(to.0).or_default() += 1;
            }
        }
        at
    }

    /// Answers the `KvsRequest` for key `k` in `sent` with `outcome`;
    /// returns where it went and what the client finished.
    fn answer_one(
        core: &mut ClientCore,
        now: Time,
        sent: Vec<(Address, Message)>,
        outcome: Outcome,
        out: &mut Outbox,
    ) -> (Address, Vec<Completion>) {
        let (to, req) = (sent.into_iter())
            .find_map(|(to, m)| match m {
                Message::KvsRequest(r) if r.ops[0].key() == "k" => Some((to, r)),
                _ => None,
            })
            .expect("a request");
        let response = KvsResponse {
            id: req.id,
            results: vec![KeyResult {
                key: req.ops[0].key().clone(),
                outcome,
            }],
            hits: 0,
        };
        let done = core.handle(now, Message::KvsResponse(response), out);
        (to, done)
    }

    fn lww(bytes: &[u8]) -> LatticeValue {
        let at = crate::lattice::Timestamp {
            wall_ms: 1,
            logical: 0,
            writer: WriterId(9),
        };
        LatticeValue::Lww(crate::lattice::Lww::new(at, bytes.to_vec()))
    }

    fn shared_answer(path: &str, value: &LatticeValue) -> Outcome {
        crate::protocol::SharedValue::share(Outcome::Value(value.clone()), path.to_string())
    }

    fn map_known(path: &str, len: u64) -> std::io::Result<bytes::Bytes> {
        match path {
            "/shm/value" if len == 5 => Ok(bytes::Bytes::from_static(b"large")),
            "/elsewhere/value" => Err(std::io::ErrorKind::PermissionDenied.into()),
            _ => Err(std::io::ErrorKind::NotFound.into()),
        }
    }

    fn sent_shared_memory(sent: &[(Address, Message)]) -> Vec<Option<u64>> {
        (sent.iter())
            .filter_map(|(_, m)| match m {
                Message::KvsRequest(r) => Some(r.shared_memory),
                _ => None,
            })
            .collect()
    }

    /// Answers the request in `sent` with the large value in the frame;
    /// returns what the client finished.
    fn answer_in_frame(
        core: &mut ClientCore,
        now: Time,
        sent: Vec<(Address, Message)>,
        out: &mut Outbox,
    ) -> Vec<Result<OpOutput, ClientError>> {
        let (_, done) = answer_one(core, now, sent, Outcome::Value(lww(b"large")), out);
        done.into_iter().map(|(_, r)| r).collect()
    }

    /// A client of one thread that maps its machine's shared memory
    /// (files `map_known` knows), with a read of `k` sent: the client and
    /// what it sent.
    fn reading_through_shared_memory(
        now: Time,
        out: &mut Outbox,
    ) -> (ClientCore, Vec<(Address, Message)>) {
        let mut core = client_of_one_thread(now, out);
        core.map_shared_memory(42, map_known);
        core.get(now, "k".into(), out);
        let sent = out.drain().collect();
        (core, sent)
    }

    fn large_read() -> [Result<OpOutput, ClientError>; 1] {
        [Ok(OpOutput::Value(Some(lww(b"large"))))]
    }

    #[test]
    fn a_value_answered_in_shared_memory_is_read_from_its_file() {
        let now = Time(1_000_000);
        let mut out = Outbox::default();
        let mut core = client_of_one_thread(now, &mut out);
        core.get(now, "k".into(), &mut out);
        let sent: Vec<_> = out.drain().collect();
        assert_eq!(sent_shared_memory(&sent), [None], "no shared memory named");
        let answer = shared_answer("/shm/value", &lww(b"large"));
        let (_, done) = answer_one(&mut core, now, sent, answer, &mut out);
        assert!(
            done.is_empty(),
            "a client that maps nothing asks again: {done:?}"
        );
        let again: Vec<_> = out.drain().collect();
        assert_eq!(
            answer_in_frame(&mut core, now, again, &mut out),
            large_read()
        );

        core.map_shared_memory(42, map_known);
        core.get(now, "k".into(), &mut out);
        let sent: Vec<_> = out.drain().collect();
        assert_eq!(sent_shared_memory(&sent), [Some(42)]);
        let answer = shared_answer("/shm/value", &lww(b"large"));
        let (_, done) = answer_one(&mut core, now, sent, answer, &mut out);
        let done: Vec<_> = done.into_iter().map(|(_, r)| r).collect();
        assert_eq!(done, large_read(), "read from the file");
        assert_eq!(core.figures().shared, 1);
    }

    #[test]
    fn a_file_gone_once_is_asked_for_again_and_gone_twice_in_the_frame() {
        let now = Time(1_000_000);
        let mut out = Outbox::default();
        let (mut core, sent) = reading_through_shared_memory(now, &mut out);
        // `map_known` knows no such file: it is gone (`NotFound`).
        let gone = || shared_answer("/shm/replaced", &lww(b"large"));
        let (_, done) = answer_one(&mut core, now, sent, gone(), &mut out);
        assert!(done.is_empty());
        let again: Vec<_> = out.drain().collect();
        assert_eq!(
            sent_shared_memory(&again),
            [Some(42)],
            "a version replaced meanwhile: asked again as before"
        );
        let (_, done) = answer_one(&mut core, now, again, gone(), &mut out);
        assert!(done.is_empty());
        let framed: Vec<_> = out.drain().collect();
        assert_eq!(
            sent_shared_memory(&framed),
            [None],
            "gone twice: in the frame"
        );
        assert_eq!(
            answer_in_frame(&mut core, now, framed, &mut out),
            large_read()
        );
    }

    #[test]
    fn a_file_that_cannot_be_read_gets_the_value_asked_again_in_the_frame() {
        let now = Time(1_000_000);
        let mut out = Outbox::default();
        let (mut core, sent) = reading_through_shared_memory(now, &mut out);
        // A file on another machine's memory after all.
        let answer = shared_answer("/elsewhere/value", &lww(b"large"));
        let (first, done) = answer_one(&mut core, now, sent, answer, &mut out);
        assert!(done.is_empty(), "the read goes on: {done:?}");
        let again: Vec<_> = out.drain().collect();
        assert_eq!(
            sent_shared_memory(&again),
            [None],
            "asked again without naming the shared memory"
        );
        assert_eq!(again[0].0, first, "of the same replica");
        assert_eq!(
            answer_in_frame(&mut core, now, again, &mut out),
            large_read()
        );
        assert_eq!(core.figures().shared, 0);
        core.get(now, "k".into(), &mut out);
        let later: Vec<_> = out.drain().collect();
        assert_eq!(sent_shared_memory(&later), [None], "and from then on");
    }

    #[test]
    fn a_read_after_an_acknowledged_put_is_answered_only_by_a_replica_holding_it() {
        let now = Time(1_000_000);
        let mut out = Outbox::default();
        let mut core = client_of(now, &mut out, 2, 2);
        core.put(now, "k".into(), max(5), &mut out);
        let sent: Vec<_> = out.drain().collect();
        let stored = Outcome::Stored { epoch: None };
        let (_, done) = answer_one(&mut core, now, sent, stored, &mut out);
        assert!(matches!(done[..], [(_, Ok(OpOutput::Written { .. }))]));
        assert!(
            core.session().get("k").is_some(),
            "the write is in the session"
        );

        // The read asks for whole states, merged until they hold the put.
        let later = now + Duration::from_millis(1);
        let id = core.get(later, "k".into(), &mut out);
        let sent: Vec<_> = out.drain().collect();
        assert!(sent.iter().any(|(_, m)| matches!(m,
            Message::KvsRequest(r) if matches!(r.ops[0], KeyOp::ReadState { .. }))));
        // The first replica has not seen the put: the other one is asked.
        let stale = Outcome::State(KeyState::default());
        let (first, done) = answer_one(&mut core, later, sent, stale.clone(), &mut out);
        assert!(done.is_empty(), "an older version is never the answer");
        let sent: Vec<_> = out.drain().collect();
        let (second, done) = answer_one(&mut core, later, sent, stale, &mut out);
        assert_ne!(first, second);
        assert!(done.is_empty());
        // Both were behind: all are asked again after STALE_RETRY.
        assert!(out.drain().next().is_none());
        let retry = later + STALE_RETRY;
        assert!(core.tick(retry, &mut out).is_empty());
        let sent: Vec<_> = out.drain().collect();
        let holding = Outcome::State(KeyState::from_value(max(5)));
        let (_, done) = answer_one(&mut core, retry, sent, holding, &mut out);
        assert_eq!(done, vec![(id, Ok(OpOutput::Value(Some(max(5)))))]);

        // A replica that never catches up: the read fails `Stale`.
        let id = core.get(retry, "k".into(), &mut out);
        let deadline = retry + ClientConfig::default().op_timeout;
        let mut now = retry;
        let mut failed = Vec::new();
        while failed.is_empty() && now <= deadline + STALE_RETRY {
            for (to, m) in out.drain().collect::<Vec<_>>() {
                if !matches!(&m, Message::KvsRequest(r) if r.ops[0].key() == "k") {
                    continue;
                }
                let stale = Outcome::State(KeyState::default());
                failed.extend(answer_one(&mut core, now, vec![(to, m)], stale, &mut out).1);
            }
            now = now + STALE_RETRY;
            failed.extend(core.tick(now, &mut out));
            failed.retain(|(op, _)| *op == id);
        }
        assert!(
            matches!(&failed[..], [(_, Err(ClientError::Stale { .. }))]),
            "{failed:?}"
        );
    }

    #[test]
    fn consecutive_reads_of_a_key_spread_evenly_over_its_replicas() {
        let now = Time(1_000);
        let mut out = Outbox::default();
        let mut core = client_of(now, &mut out, 2, 2);
        let at = gets_per_replica(&mut core, now, "hot", 10);
        assert_eq!(at.values().copied().collect::<Vec<_>>(), [5, 5], "{at:?}");
    }

    #[test]
    fn writes_of_a_key_written_lately_go_to_one_replica_and_reads_spread() {
        let now = Time(1_000_000);
        let mut out = Outbox::default();
        let mut core = client_of(now, &mut out, 2, 2);
        core.put(now, "k".into(), max(1), &mut out);
        let (wrote_at, _) = out.drain().next().expect("the put");
        let puts: BTreeMap<String, usize> = (0..6)
            .map(|_| {
                core.put(now, "k".into(), max(2), &mut out);
                out.drain().next().expect("a put").0 .0
            })
            .fold(BTreeMap::new(), |mut m, a| {
                *m.entry(a).or_default() += 1;
                m
            });
        assert_eq!(puts.get(wrote_at.as_str()), Some(&6), "{puts:?}");
        // Reads of `k` spread: the session, not the replica, makes them
        // see the writes.
        let at = gets_per_replica(&mut core, now, "k", 6);
        assert_eq!(at.values().copied().collect::<Vec<_>>(), [3, 3], "{at:?}");
    }

    #[test]
    fn an_old_placement_is_refreshed_in_the_background_and_new_replicas_get_reads() {
        let now = Time(1_000_000);
        let mut out = Outbox::default();
        let mut core = client_of(now, &mut out, 2, 1);
        assert_eq!(gets_per_replica(&mut core, now, "hot", 4).len(), 1);
        // Past placement_refresh: the next operation goes out at once with
        // the old placement, and the state is asked for beside it.
        let later = now + ClientConfig::default().placement_refresh;
        core.get(later, "hot".to_string(), &mut out);
        let sent: Vec<_> = out.drain().collect();
        assert!(
            sent.iter()
                .any(|(_, m)| matches!(m, Message::KvsRequest(_))),
            "{sent:?}"
        );
        let id = sent
            .iter()
            .find_map(|(_, m)| match m {
                Message::StatusRequest { id, .. } => Some(*id),
                _ => None,
            })
            .expect("a background refresh");
        // The key's replication was raised meanwhile: reads now spread.
        core.handle(later, state_reply(id, 2, 2), &mut out);
        let at = gets_per_replica(&mut core, later, "hot", 10);
        assert_eq!(at.values().copied().collect::<Vec<_>>(), [5, 5], "{at:?}");
        // Fresh again: no further state request.
        core.get(later, "hot".to_string(), &mut out);
        assert!(!out
            .drain()
            .any(|(_, m)| matches!(m, Message::StatusRequest { .. })));
    }

    fn max(n: i64) -> LatticeValue {
        LatticeValue::Max(Max::new(n))
    }

    #[test]
    fn a_batch_sends_one_request_per_replica_and_matches_results_in_order() {
        let now = Time(1_000);
        let mut out = Outbox::default();
        let mut core = client_of_one_thread(now, &mut out);
        let keys = ["a", "b", "c"];
        let ids: Vec<OpId> = core.batch(&mut out, |core, out| {
            keys.iter()
                .map(|k| core.get(now, k.to_string(), out))
                .collect()
        });
        let sent: Vec<_> = out.drain().collect();
        assert_eq!(sent.len(), 1, "one request for three keys on one thread");
        let Message::KvsRequest(req) = &sent[0].1 else {
            panic!("{sent:?}");
        };
        let asked: Vec<&str> = req.ops.iter().map(|op| op.key().as_str()).collect();
        assert_eq!(asked, keys);

        let results = vec![
            KeyResult {
                key: "a".into(),
                outcome: Outcome::Value(max(1)),
            },
            KeyResult {
                key: "b".into(),
                outcome: Outcome::NotMine { ring_version: 9 },
            },
            KeyResult {
                key: "c".into(),
                outcome: Outcome::NotFound,
            },
        ];
        let response = Message::KvsResponse(KvsResponse {
            id: req.id,
            results,
            hits: 0,
        });
        let done = core.handle(now, response, &mut out);
        assert_eq!(
            done,
            vec![
                (ids[0], Ok(OpOutput::Value(Some(max(1))))),
                (ids[2], Ok(OpOutput::Value(None))),
            ]
        );
        assert_eq!(
            core.in_flight(),
            2,
            "`b` (not mine) is retried, with the warm-up get"
        );
        // The retry of `b` goes alone, after the state is fetched again.
        let again: Vec<_> = out.drain().collect();
        assert!(
            matches!(again.as_slice(), [(_, Message::StatusRequest { .. })]),
            "{again:?}"
        );
    }

    #[test]
    fn outside_a_batch_each_operation_is_its_own_request() {
        let now = Time(1_000);
        let mut out = Outbox::default();
        let mut core = client_of_one_thread(now, &mut out);
        core.put(now, "a".into(), max(1), &mut out);
        core.put(now, "b".into(), max(2), &mut out);
        let sent: Vec<_> = out.drain().collect();
        assert_eq!(sent.len(), 2);
        for (_, msg) in sent {
            let Message::KvsRequest(req) = msg else {
                panic!("{msg:?}");
            };
            assert_eq!(req.ops.len(), 1);
        }
    }
}
