//! The wire protocol: every message of the system, in one module.
//!
//! Squall's components talk by one-way messages that name where their answer
//! goes ([`Address`] reply-to fields), so any component can answer any other
//! without a connection held open. Every frame is the protocol version
//! followed by one [`Message`] encoded with bincode (serde, standard config).
//! [`decode`] is a pure function from bytes to `Result`: it checks the
//! version first, bounds the size, refuses trailing bytes and never panics on
//! any input; malformed frames are the caller's to count and drop.
//!
//! The variant order of every enum here is part of the wire format: append
//! new variants at the end, never reorder, and bump [`PROTOCOL_VERSION`] when
//! an existing shape changes. `tests/protocol_golden.rs` pins the bytes.
//!
//! # Layout
//!
//! - [`codec`]: framing, [`encode`], [`decode`], [`DecodeError`].
//! - [`seal`]: sealed frames: keys, authentication, encryption, replay
//!   protection, and what a client may send.
//! - [`kvs`]: requests to storage threads, their responses, gossip.
//! - [`cluster`]: routing questions and membership.
//! - [`compute`]: calls, DAG plans, results, executor and cache reports,
//!   key subscriptions, messages between functions.
//! - [`monitor`]: storage statistics and the monitor's status.
//! - [`figures`]: latency histograms and error counts reported to the
//!   monitor.
//! - [`session`]: the versions a client wrote, carried by its calls.

pub mod cluster;
pub mod codec;
pub mod compute;
pub mod figures;
pub mod kvs;
pub mod monitor;
pub mod seal;
pub mod session;

pub use crate::ids::{Address, Key, NodeId, NodeInfo, RequestId};
pub use cluster::{Membership, RouteRequest, RouteResponse};
pub use codec::{
    decode, decode_body, encode, encode_into, DecodeError, EncodeError, MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
};
pub use kvs::{
    Ack, Gossip, KeyOp, KeyResult, KvsError, KvsRequest, KvsResponse, Outcome, SharedValue,
};
pub use session::{Session, SessionLog};

use serde::{Deserialize, Serialize};

/// Every message any component sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Liveness probe; answered with [`Message::Pong`] at `reply_to`.
    Ping { id: RequestId, reply_to: Address },
    /// Answer to a [`Message::Ping`].
    Pong {
        id: RequestId,
        /// A number fresh at each start of the answering process where the
        /// role knows one (schedulers, storage nodes), else 0: a caller
        /// tells a restarted peer, which forgot what it was sent, from the
        /// one it sent to.
        boot: u64,
    },
    /// A client (or cache) asks a storage thread to read or write keys.
    KvsRequest(KvsRequest),
    /// A storage thread answers a [`KvsRequest`].
    KvsResponse(KvsResponse),
    /// A storage thread sends merged values to other replicas and
    /// subscribers.
    Gossip(Gossip),
    /// "Which threads hold these keys?", to a router.
    RouteRequest(RouteRequest),
    /// A router's answer.
    RouteResponse(RouteResponse),
    /// Joins, departures and ring updates.
    Membership(Membership),
    /// A replica has merged a [`Gossip`] that asked for an acknowledgement.
    GossipAck { id: RequestId, from: Address },
    /// "What do you hold for these keys?", whether or not the receiver owns
    /// them: a new owner asks the previous owners while keys move.
    Fetch {
        id: RequestId,
        reply_to: Address,
        keys: Vec<Key>,
    },
    /// The answer to a [`Message::Fetch`]: the states held (bottom for a
    /// key not held).
    FetchReply {
        id: RequestId,
        from: Address,
        entries: Vec<(Key, crate::lattice::KeyState)>,
    },
    /// "What cluster do you see?", to a router or a storage thread.
    StatusRequest { id: RequestId, reply_to: Address },
    /// The answer to a [`Message::StatusRequest`]: the cluster seen, and
    /// the component's counters by name (`gets`, `malformed`, ...).
    StatusReply {
        id: RequestId,
        from: Address,
        cluster: crate::cluster::ClusterState,
        /// The replication factor of keys without an override, so that a
        /// client can place keys itself.
        replication: crate::cluster::ReplicationFactor,
        counters: Vec<(String, u64)>,
    },
    /// "Run function `function` of this plan", from a scheduler to the
    /// executor of a source function.
    Invoke {
        plan: Box<compute::Plan>,
        function: u16,
    },
    /// An upstream function's result, from its executor to the executor of
    /// downstream function `function`.
    Trigger {
        plan: Box<compute::Plan>,
        function: u16,
        from: u16,
        #[serde(with = "serde_bytes")]
        result: Vec<u8>,
    },
    /// "Call this function", from a client to a scheduler.
    Call(compute::CallRequest),
    /// "Call this DAG", from a client to a scheduler.
    CallDag(compute::DagCallRequest),
    /// A call's result (or error), to its caller.
    CallResult(compute::CallResult),
    /// An executor finished its function of a plan, to the plan's
    /// scheduler. `failed`: the function failed and the caller has been
    /// sent the error, so no downstream function will run.
    CallDone {
        id: compute::CallId,
        attempt: u32,
        function: u16,
        executor: Address,
        failed: bool,
    },
    /// An executor's periodic load report and heartbeat, to schedulers.
    ExecutorReport(compute::ExecutorReport),
    /// A cache's periodic report of the keys it holds, to schedulers.
    CacheReport(compute::CacheReport),
    /// A DAG was registered again or deleted, to schedulers.
    DagChanged(compute::DagChanged),
    /// Subscribe to changes of keys, to their owner threads or to a cache.
    Subscribe(compute::Subscribe),
    /// A message between running functions, to an executor.
    UserMessage(compute::UserMessage),
    /// "What do you know of the compute tier?", to a scheduler.
    ComputeStatusRequest { id: RequestId, reply_to: Address },
    /// The answer to a [`Message::ComputeStatusRequest`].
    ComputeStatusReply {
        id: RequestId,
        status: compute::ComputeStatus,
    },
    /// "What are your statistics?", from the monitor (or `squall status`)
    /// to a storage thread.
    StatsRequest { id: RequestId, reply_to: Address },
    /// A storage thread's answer to a [`Message::StatsRequest`].
    StorageReport {
        id: RequestId,
        report: monitor::StorageReport,
    },
    /// "Load function `function` and keep it warm", from the monitor to an
    /// executor, for a hot function.
    Prewarm { function: String },
    /// "What do you see and what have you decided?", to the monitor.
    MonitorStatusRequest { id: RequestId, reply_to: Address },
    /// The answer to a [`Message::MonitorStatusRequest`].
    MonitorStatusReply {
        id: RequestId,
        status: Box<monitor::MonitorStatus>,
    },
    /// An executor was told to stop (SIGTERM, SIGINT) and is going, to the
    /// schedulers it reports to: they treat it as dead at once instead of
    /// after `executor_timeout` of silence, and re-plan its calls.
    ExecutorLeaving { executor: Address },
    /// "Run `replicas` nodes of `kind`", from the monitor to its actuator
    /// (the process's provider: local processes, Kubernetes), which
    /// carries it out beside the monitor so a slow provider never stalls
    /// the statistics.
    Scale {
        kind: monitor::NodeKind,
        replicas: u32,
    },
    /// The monitor's Prometheus text of its last evaluation, and the JSON
    /// of its dashboard (`/api/cluster`), to the server of `/metrics`.
    Metrics { text: String, dashboard: String },
    /// "Drop call `id` if it has not started", from its caller to the
    /// scheduler it sent the call to. Only the call's own reply address
    /// may cancel it.
    CancelCall {
        id: compute::CallId,
        reply_to: Address,
    },
    /// The answer to [`Message::CancelCall`]: `cancelled` when the call was
    /// still queued (it never runs, and no result follows); otherwise it
    /// runs on and its result comes as usual.
    CancelAnswer {
        id: compute::CallId,
        cancelled: bool,
    },
    /// A traced call's trace, from the executor that answered its caller
    /// to its scheduler, which keeps the latest for the dashboard.
    CallTraced(Box<figures::TracedCall>),
    /// Watch changes of keys under a prefix for a trigger, from a
    /// scheduler to every storage thread.
    Watch(Box<compute::Watch>),
    /// A storage thread's answer to [`Message::Watch`].
    WatchState(compute::WatchState),
    /// Changes of watched keys, from a storage thread to a watcher.
    Changes(compute::Changes),
    /// "The trigger's function ran for these changes" (`seqs`, the storage
    /// thread's numbers), from the watcher to the storage thread, which
    /// then forgets them.
    ChangesDone { watcher: Address, seqs: Vec<u64> },
    /// Several messages for one receiver in one frame, in the order they
    /// were queued: what a server's driver sends when a step queued more
    /// than one for the same address ([`Message::batchable`]). A receiver
    /// takes them up one by one, each checked as if it came alone; a batch
    /// inside a batch is malformed. Clients never send one.
    Batch(#[serde(deserialize_with = "deserialize_batch")] Vec<Message>),
}

thread_local! {
    static IN_BATCH: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Decodes a batch's messages, refusing a batch among them: nested
/// batches would let a crafted frame overflow the decoder's stack.
fn deserialize_batch<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Message>, D::Error> {
    struct Inside;
    impl Drop for Inside {
        fn drop(&mut self) {
            IN_BATCH.with(|b| b.set(false));
        }
    }
    if IN_BATCH.with(|b| b.replace(true)) {
        return Err(serde::de::Error::custom("a batch inside a batch"));
    }
    let _inside = Inside;
    Vec::<Message>::deserialize(deserializer)
}

impl Message {
    /// The answer to a status request: what `from` sees and has counted.
    /// Storage workers and routers answer alike.
    pub fn status_reply(
        id: RequestId,
        from: &Address,
        cluster: &crate::cluster::ClusterState,
        replication: crate::cluster::ReplicationFactor,
        counters: Vec<(String, u64)>,
    ) -> Message {
        Message::StatusReply {
            id,
            from: from.clone(),
            cluster: cluster.clone(),
            replication,
            counters,
        }
    }

    /// A short name of the message type, for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Ping { .. } => "ping",
            Message::Pong { .. } => "pong",
            Message::KvsRequest(_) => "kvs-request",
            Message::KvsResponse(_) => "kvs-response",
            Message::Gossip(_) => "gossip",
            Message::RouteRequest(_) => "route-request",
            Message::RouteResponse(_) => "route-response",
            Message::Membership(_) => "membership",
            Message::GossipAck { .. } => "gossip-ack",
            Message::Fetch { .. } => "fetch",
            Message::FetchReply { .. } => "fetch-reply",
            Message::StatusRequest { .. } => "status-request",
            Message::StatusReply { .. } => "status-reply",
            Message::Invoke { .. } => "invoke",
            Message::Trigger { .. } => "trigger",
            Message::Call(_) => "call",
            Message::CallDag(_) => "call-dag",
            Message::CallResult(_) => "call-result",
            Message::CallDone { .. } => "call-done",
            Message::ExecutorReport(_) => "executor-report",
            Message::CacheReport(_) => "cache-report",
            Message::DagChanged(_) => "dag-changed",
            Message::Subscribe(_) => "subscribe",
            Message::UserMessage(_) => "user-message",
            Message::ComputeStatusRequest { .. } => "compute-status-request",
            Message::ComputeStatusReply { .. } => "compute-status-reply",
            Message::StatsRequest { .. } => "stats-request",
            Message::StorageReport { .. } => "storage-report",
            Message::Prewarm { .. } => "prewarm",
            Message::MonitorStatusRequest { .. } => "monitor-status-request",
            Message::MonitorStatusReply { .. } => "monitor-status-reply",
            Message::ExecutorLeaving { .. } => "executor-leaving",
            Message::Scale { .. } => "scale",
            Message::Metrics { .. } => "metrics",
            Message::CancelCall { .. } => "cancel-call",
            Message::CancelAnswer { .. } => "cancel-answer",
            Message::CallTraced(_) => "call-traced",
            Message::Watch(_) => "watch",
            Message::WatchState(_) => "watch-state",
            Message::Changes(_) => "changes",
            Message::ChangesDone { .. } => "changes-done",
            Message::Batch(_) => "batch",
        }
    }

    /// Whether this message may travel in a [`Message::Batch`]: any but a
    /// batch and the messages sealed with a storage node's own key
    /// ([`Message::speaks_for`]).
    pub fn batchable(&self) -> bool {
        !matches!(self, Message::Batch(_)) && self.speaks_for().is_none()
    }

    /// Where a client's request to a storage thread is answered: what a
    /// request taken on a direct connection has replaced by that
    /// connection. `None` for every other message (none of them may come
    /// that way).
    pub fn direct_reply_to(&mut self) -> Option<&mut Address> {
        match self {
            Message::Ping { reply_to, .. }
            | Message::StatusRequest { reply_to, .. }
            | Message::KvsRequest(KvsRequest { reply_to, .. }) => Some(reply_to),
            _ => None,
        }
    }
}
