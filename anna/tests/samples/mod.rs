//! Hand-built messages covering every variant of the wire protocol.
//!
//! Built from the public constructors only, so a sample is a value real code
//! could send. Every `Message` variant, every variant of the enums inside
//! (`KeyOp`, `Outcome`, `KvsError`, `Ack`, `Membership`, `CallOutcome`,
//! `CallErrorKind`) and a value of every
//! `LatticeKind` appear at least once; `covers_every_lattice_kind` in
//! `protocol_decode.rs` checks the last claim so a new kind cannot be missed.

use anna::cluster::{ClusterState, ReplicationFactor};
use anna::histogram::Histogram;
use anna::lattice::{
    Counter, Dependent, KeyState, LatticeKind, LatticeValue, Lww, MapLattice, Max, Min,
    MultiKeyCausal, ORMapLattice, ORSetLattice, OrderedSetLattice, Priority, SetLattice,
    SingleKeyCausal, Timestamp, TypeMismatch, VectorClock, WriterId,
};
use anna::protocol::compute::{
    CacheReport, CallArgs, CallError, CallErrorKind, CallId, CallOutcome, CallRequest, CallResult,
    CallTrace, ChangeEvent, ChangeKind, Changes, ComputeStatus, Consistency, DagCallRequest,
    DagChanged, ExecutorReport, Plan, PlannedFunction, ReplyTo, Subscribe, TraceStep, TriggerSpec,
    UserMessage, Watch, WatchState,
};
use anna::protocol::figures::{CallFigures, KvsFigures, TracedCall};
use anna::protocol::monitor::{MonitorEvent, MonitorStatus, StorageReport};
use anna::protocol::{
    Ack, Address, Gossip, KeyOp, KeyResult, KvsError, KvsRequest, KvsResponse, Membership, Message,
    NodeId, NodeInfo, Outcome, RequestId, RouteRequest, RouteResponse, Session, SharedValue,
};
use std::collections::BTreeMap;

/// A counter deleted and incremented again: a state with a baseline.
fn deleted_counter() -> KeyState {
    let count = |n| {
        let mut c = Counter::default();
        c.increment(WriterId(3), n);
        LatticeValue::Counter(c)
    };
    let mut s = KeyState::from_value(count(5));
    s.delete(ts(1_700_000_000_000, 0, 1));
    s.put(count(6)).expect("a counter");
    s
}

fn clock(entries: &[(u64, u64)]) -> VectorClock {
    VectorClock::new(entries.iter().map(|&(w, n)| (WriterId(w), n)))
}

fn lww(wall_ms: u64, value: &[u8]) -> LatticeValue {
    let ts = Timestamp {
        wall_ms,
        logical: 3,
        writer: WriterId(0xfeed),
    };
    LatticeValue::Lww(Lww::new(ts, value.to_vec()))
}

fn field(name: &str, value: LatticeValue) -> (String, LatticeValue) {
    (name.to_string(), value)
}

/// One value of every lattice kind, in `LatticeKind::ALL` order, with the
/// map nested three maps deep.
pub fn sample_values() -> Vec<LatticeValue> {
    let mut counter = Counter::default();
    counter.increment(WriterId(1), 10);
    counter.increment(WriterId(u64::MAX), u64::MAX);
    counter.decrement(WriterId(2), 4);

    let innermost = LatticeValue::Map(MapLattice::new([
        field("leaf", LatticeValue::Max(Max::new(i64::MAX))),
        field("empty", LatticeValue::Map(MapLattice::default())),
    ]));
    let middle = LatticeValue::Map(MapLattice::new([
        field("inner", innermost),
        field("when", lww(7, b"mid")),
    ]));
    let nested = LatticeValue::Map(MapLattice::new([
        field("middle", middle),
        field("count", LatticeValue::Counter(counter.clone())),
    ]));

    let dependent = Dependent {
        dependencies: BTreeMap::from([
            ("x".to_string(), clock(&[(9, 2)])),
            ("y".to_string(), clock(&[])),
        ]),
        value: b"computed".to_vec(),
    };

    // An element added by two writers, one removed, one added again.
    let mut or_set = ORSetLattice::with_adds(ts(5, 0, 1), [b"kept".to_vec(), b"gone".to_vec()]);
    or_set.add(b"kept".to_vec(), ts(6, 1, 2));
    or_set.remove(&b"gone".to_vec());
    let mut or_map = ORMapLattice::default();
    or_map.update(
        "hits".to_string(),
        ts(7, 0, 3),
        LatticeValue::Counter(counter.clone()),
    );
    or_map.update("old".to_string(), ts(7, 0, 3), lww(7, b"x"));
    or_map.remove(&"old".to_string());

    vec![
        lww(1_700_000_000_000, b"hello"),
        LatticeValue::Set(SetLattice::new([b"a".to_vec(), Vec::new(), vec![0xff; 3]])),
        LatticeValue::OrderedSet(OrderedSetLattice::new([b"z".to_vec(), b"a".to_vec()])),
        LatticeValue::Max(Max::new(-5)),
        LatticeValue::Min(Min::new(i64::MIN)),
        LatticeValue::Counter(counter),
        nested,
        LatticeValue::VectorClock(clock(&[(1, 1), (2, u64::MAX)])),
        LatticeValue::SingleKeyCausal(SingleKeyCausal::new(clock(&[(1, 2)]), b"v1".to_vec())),
        LatticeValue::MultiKeyCausal(MultiKeyCausal::new(clock(&[(3, 1)]), dependent)),
        LatticeValue::Priority(Priority::new(-0.5, b"urgent".to_vec())),
        LatticeValue::ORSet(or_set),
        LatticeValue::ORMap(or_map),
    ]
}

/// Bottom of every kind that has one of its own: empty collections and
/// `None` options encode differently from populated ones.
fn bottom_values() -> Vec<LatticeValue> {
    vec![
        LatticeValue::default(),
        LatticeValue::Set(SetLattice::default()),
        LatticeValue::OrderedSet(OrderedSetLattice::default()),
        LatticeValue::Max(Max::default()),
        LatticeValue::Min(Min::default()),
        LatticeValue::Counter(Counter::default()),
        LatticeValue::Map(MapLattice::default()),
        LatticeValue::VectorClock(VectorClock::default()),
        LatticeValue::SingleKeyCausal(SingleKeyCausal::default()),
        LatticeValue::MultiKeyCausal(MultiKeyCausal::default()),
        LatticeValue::Priority(Priority::default()),
        LatticeValue::Priority(Priority::new(f64::NAN, Vec::new())),
        LatticeValue::ORSet(ORSetLattice::default()),
        LatticeValue::ORMap(ORMapLattice::default()),
    ]
}

fn ts(wall_ms: u64, logical: u32, writer: u64) -> Timestamp {
    Timestamp {
        wall_ms,
        logical,
        writer: WriterId(writer),
    }
}

/// Two nodes up, one departed, one replication override.
fn cluster_state() -> ClusterState {
    let mut state = ClusterState::default();
    state.record_join(node(1, 2));
    state.record_join(node(2, 1));
    state.record_join(node(3, 4));
    state.record_departure(NodeId(3), 1);
    state.set_replication(
        "hot".to_string(),
        ts(1, 0, 1),
        ReplicationFactor {
            global: 2,
            local: 1,
        },
    );
    state
}

fn node(id: u64, threads: usize) -> NodeInfo {
    NodeInfo {
        boot: id * 1_000_003,
        direct: Vec::new(),
        id: NodeId(id),
        threads: (0..threads)
            .map(|t| Address(format!("tcp://10.0.0.{id}:{}", 6000 + t)))
            .collect(),
    }
}

/// At least one message of every variant, covering every inner enum variant
/// and every lattice kind.
pub fn sample_messages() -> Vec<Message> {
    let values = sample_values();
    let reply_to = Address::from("ipc:///tmp/client-0");

    let puts: Vec<KeyOp> = values
        .iter()
        .chain(bottom_values().iter())
        .enumerate()
        .map(|(i, value)| KeyOp::Put {
            key: format!("key-{i}"),
            value: value.clone(),
        })
        .collect();

    let result = |key: &str, outcome| KeyResult {
        key: key.to_string(),
        outcome,
    };
    vec![
        Message::Ping {
            id: RequestId(0),
            reply_to: reply_to.clone(),
        },
        Message::Ping {
            id: RequestId(u64::MAX),
            reply_to: Address::from(""),
        },
        Message::Pong {
            id: RequestId(42),
            boot: 0,
        },
        Message::KvsRequest(KvsRequest {
            id: RequestId(1),
            reply_to: reply_to.clone(),
            ops: vec![
                KeyOp::Get {
                    key: "k".to_string(),
                },
                KeyOp::Delete {
                    key: "gone".to_string(),
                    at: ts(1_700_000_000_000, 4, 9),
                },
                KeyOp::ReadState {
                    key: "k".to_string(),
                    at_least: Some(KeyState::tombstone(ts(1_700_000_000_000, 4, 9))),
                },
                KeyOp::ReadState {
                    key: "k".to_string(),
                    at_least: None,
                },
            ],
            ack: Ack::FirstReplica,
            shared_memory: Some(0x0123_4567_89ab_cdef),
        }),
        Message::KvsRequest(KvsRequest {
            id: RequestId(2),
            reply_to: reply_to.clone(),
            ops: puts,
            ack: Ack::Replicas(3),
            shared_memory: None,
        }),
        Message::KvsRequest(KvsRequest {
            id: RequestId(3),
            reply_to: reply_to.clone(),
            ops: Vec::new(),
            ack: Ack::Replicas(u8::MAX),
            shared_memory: None,
        }),
        Message::KvsRequest(KvsRequest {
            id: RequestId(4),
            reply_to: reply_to.clone(),
            ops: Vec::new(),
            ack: Ack::All,
            shared_memory: None,
        }),
        Message::KvsRequest(KvsRequest {
            id: RequestId(5),
            reply_to: reply_to.clone(),
            ops: Vec::new(),
            ack: Ack::Durable,
            shared_memory: None,
        }),
        Message::KvsResponse(KvsResponse {
            id: RequestId(2),
            results: vec![
                result("a", Outcome::Value(values[0].clone())),
                result("b", Outcome::NotFound),
                result("c", Outcome::Stored { epoch: None }),
                result(
                    "c2",
                    Outcome::Stored {
                        epoch: Some(ts(1_700_000_000_000, 4, 9)),
                    },
                ),
                result("d", Outcome::NotMine { ring_version: 17 }),
                result(
                    "e",
                    Outcome::Error(KvsError::TypeMismatch(TypeMismatch {
                        path: "a.b".to_string(),
                        stored: LatticeKind::Counter,
                        incoming: LatticeKind::Lww,
                    })),
                ),
                result(
                    "f",
                    Outcome::Error(KvsError::AckTimeout {
                        acked: 1,
                        wanted: 3,
                    }),
                ),
                result(
                    "g",
                    Outcome::Error(KvsError::WrongKind {
                        stored: LatticeKind::Priority,
                        wanted: LatticeKind::Map,
                    }),
                ),
                result("h", Outcome::Error(KvsError::Stale)),
                result("i", Outcome::State(deleted_counter())),
                result("j", Outcome::State(KeyState::default())),
                result(
                    "l",
                    SharedValue::share(
                        Outcome::Value(LatticeValue::Lww(Lww::new(ts(7, 1, 3), vec![9; 300]))),
                        "/dev/shm/squall-compute-0/5f0e".to_string(),
                    ),
                ),
                result(
                    "k",
                    Outcome::Error(KvsError::TooLarge {
                        size: 70 << 20,
                        limit: 32 << 20,
                    }),
                ),
                result(
                    "l",
                    Outcome::Error(KvsError::ClockAhead {
                        ahead_ms: u64::MAX,
                        max_ms: 10_000,
                    }),
                ),
                result(
                    "m",
                    Outcome::Error(KvsError::NotDurable {
                        reason: "disk full".to_string(),
                    }),
                ),
                result(
                    "n",
                    Outcome::Error(KvsError::DiskRead {
                        reason: "input/output error".to_string(),
                    }),
                ),
                result(
                    "o",
                    Outcome::Error(KvsError::PermissionDenied {
                        reason: "the client lacks the `write` right".to_string(),
                    }),
                ),
            ],
            hits: 3,
        }),
        Message::Gossip(Gossip {
            from: Address::from("tcp://10.0.0.1:6000"),
            entries: values
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("g{i}"), KeyState::from_value(v)))
                .chain([
                    ("deleted".to_string(), KeyState::tombstone(ts(5, 0, 1))),
                    ("bottom".to_string(), KeyState::default()),
                ])
                .collect(),
            ack: Some(RequestId(77)),
        }),
        Message::GossipAck {
            id: RequestId(77),
            from: Address::from("tcp://10.0.0.2:6000"),
        },
        Message::Fetch {
            id: RequestId(78),
            reply_to: Address::from("tcp://10.0.0.2:6000"),
            keys: vec!["a".to_string(), String::new()],
        },
        Message::FetchReply {
            id: RequestId(78),
            from: Address::from("tcp://10.0.0.1:6000"),
            entries: vec![
                ("a".to_string(), KeyState::from_value(lww(1, b"x"))),
                (String::new(), KeyState::default()),
            ],
        },
        Message::RouteRequest(RouteRequest {
            id: RequestId(5),
            reply_to: reply_to.clone(),
            keys: vec!["a".to_string(), "ünïcode-κλειδί".to_string(), String::new()],
        }),
        Message::RouteResponse(RouteResponse {
            id: RequestId(5),
            ring_version: 9,
            placements: vec![
                ("a".to_string(), node(1, 2).threads),
                ("b".to_string(), Vec::new()),
            ],
        }),
        Message::Membership(Membership::Join { node: node(3, 4) }),
        Message::StatusRequest {
            id: RequestId(90),
            reply_to: reply_to.clone(),
        },
        Message::StatusReply {
            id: RequestId(90),
            from: Address::from("tcp://router:7000"),
            cluster: cluster_state(),
            replication: ReplicationFactor {
                global: 2,
                local: 1,
            },
            counters: vec![("malformed".to_string(), 3), ("gets".to_string(), u64::MAX)],
        },
        Message::Membership(Membership::Depart {
            node: NodeId(3),
            incarnation: 2,
        }),
        Message::Membership(Membership::Leave {
            node: NodeId(3),
            reply_to: reply_to.clone(),
        }),
        Message::Membership(Membership::Left {
            node: NodeId(3),
            thread: 1,
            incarnation: 2,
        }),
        Message::Membership(Membership::Heartbeat {
            node: node(3, 2),
            incarnation: u64::MAX,
        }),
        Message::Membership(Membership::State(cluster_state())),
        Message::Membership(Membership::State(ClusterState::default())),
        Message::Membership(Membership::SetReplication {
            key: "hot".to_string(),
            at: ts(9, 1, 2),
            factor: ReplicationFactor {
                global: 3,
                local: 2,
            },
        }),
    ]
    .into_iter()
    .chain(compute_messages())
    .chain(monitor_messages())
    .collect()
}

/// Every compute-tier error kind, in declaration order.
pub const CALL_ERROR_KINDS: [CallErrorKind; 11] = [
    CallErrorKind::Remote,
    CallErrorKind::UnknownFunction,
    CallErrorKind::UnknownDag,
    CallErrorKind::BadArguments,
    CallErrorKind::BadFunction,
    CallErrorKind::Timeout,
    CallErrorKind::ExecutorDied,
    CallErrorKind::Overloaded,
    CallErrorKind::TooLarge,
    CallErrorKind::Unavailable,
    CallErrorKind::PermissionDenied,
];

fn plan() -> Plan {
    let exec = |i: u8| Address(format!("tcp://10.0.1.{i}:7400"));
    Plan {
        id: CallId {
            caller: 0xabc,
            seq: 7,
        },
        dag: Some("square-then-increment".to_string()),
        functions: vec![
            PlannedFunction {
                name: "square".to_string(),
                executor: exec(1),
                args: CallArgs {
                    payload: vec![0x80, 5, 1, 2],
                    refs: vec!["big-array".to_string()],
                },
                upstream: Vec::new(),
                downstream: vec![1],
            },
            PlannedFunction {
                name: "increment".to_string(),
                executor: exec(2),
                args: CallArgs::default(),
                upstream: vec![0],
                downstream: Vec::new(),
            },
        ],
        reply: ReplyTo {
            address: Address::from("tcp://127.0.0.1:50000"),
            response_key: Some("response/abc-7".to_string()),
        },
        deadline_ms: 1_700_000_000_000,
        attempt: 1,
        scheduler: Address::from("tcp://127.0.0.1:7300"),
        session: Session::new(vec![
            (
                "big-array".to_string(),
                KeyState::tombstone(ts(1_700_000_000_000, 1, 2)),
            ),
            (
                "__squall/fn/square".to_string(),
                KeyState::from_value(LatticeValue::Lww(Lww::new(
                    ts(1_700_000_000_001, 0, 2),
                    Vec::new(),
                ))),
            ),
        ]),
        written: Session::new(vec![("counter".to_string(), deleted_counter())]),
        consistency: Consistency::RepeatableRead,
        pinned: Session::new(vec![("big-array".to_string(), deleted_counter())]),
        output: Vec::new(),
        instance: None,
        trace: None,
    }
}

fn executor_report() -> ExecutorReport {
    ExecutorReport {
        executor: Address::from("tcp://127.0.0.1:7400"),
        node: "compute-0".to_string(),
        cache: Address::from("ipc:///tmp/squall-cache-0"),
        busy_permille: 999,
        queue: 3,
        warm: vec!["square".to_string()],
        calls: vec![("square".to_string(), u64::MAX)],
        boot: 0x5eed,
        errors: vec![("Remote".to_string(), 2), ("Timeout".to_string(), u64::MAX)],
        async_running: 7,
        async_limit: u32::MAX,
        async_functions: vec!["wait".to_string()],
    }
}

/// A histogram with a duration in its first, a middle and its last bucket.
fn histogram() -> Histogram {
    let mut h = Histogram::default();
    for us in [1, 3_000, u64::MAX] {
        h.record(std::time::Duration::from_micros(us));
    }
    h
}

fn traced_call() -> TracedCall {
    TracedCall {
        id: CallId { caller: 2, seq: 9 },
        name: "square".to_string(),
        failed: false,
        trace: CallTrace {
            arrived_us: 1_700_000_000_000_000,
            queued_us: 300,
            steps: vec![TraceStep {
                function: "square".to_string(),
                executor: Address::from("tcp://10.0.1.1:7400"),
                placed: "warm; 0 calls outstanding; best of 4 executors".to_string(),
                waited_us: 12,
                ran_us: u64::MAX,
                reads: 2,
                cache_hits: 1,
                kept_reads: 3,
                bytes_read: 10_018,
                done: true,
            }],
        },
    }
}

fn call_figures() -> CallFigures {
    CallFigures {
        functions: vec![("square".to_string(), histogram())],
        dags: vec![("pipeline".to_string(), Histogram::default())],
        errors: vec![("Overloaded".to_string(), 4)],
        timeouts: 1,
        redispatches: 2,
        resends: u64::MAX,
        traces: vec![traced_call()],
        triggers: vec![anna::protocol::figures::TriggerFigures {
            name: "on-upload".to_string(),
            function: "thumbnail".to_string(),
            prefix: "uploads/".to_string(),
            on: "put".to_string(),
            runs: 10,
            failures: 1,
            retries: 2,
            backlog: 3,
            dropped: 0,
        }],
    }
}

fn cache_report() -> CacheReport {
    CacheReport {
        node: "compute-0".to_string(),
        cache: Address::from("tcp://127.0.0.1:7350"),
        keys: vec![("big-array".to_string(), 10 << 20)],
        hits: 10,
        misses: 2,
        kvs: Box::new(KvsFigures {
            get: histogram(),
            put: Histogram::default(),
            delete: histogram(),
            retries: 3,
            timeouts: 1,
            errors: u64::MAX,
            shared: 7,
        }),
    }
}

/// One message of every compute-tier variant, with every error kind.
fn compute_messages() -> Vec<Message> {
    let caller = Address::from("tcp://127.0.0.1:50000");
    let mut msgs = vec![
        Message::Invoke {
            plan: Box::new(plan()),
            function: 0,
        },
        Message::Trigger {
            plan: Box::new(plan()),
            function: 1,
            from: 0,
            result: vec![0x80, 4, 0x4b, 9, 0x2e],
        },
        Message::Call(CallRequest {
            id: CallId { caller: 1, seq: 1 },
            function: "square".to_string(),
            args: CallArgs {
                payload: vec![1, 2, 3],
                refs: Vec::new(),
            },
            reply: ReplyTo {
                address: caller.clone(),
                response_key: None,
            },
            timeout_ms: u32::MAX,
            session: Session::default(),
            consistency: Consistency::Lww,
            instance: None,
            trace: false,
        }),
        Message::CallDag(DagCallRequest {
            id: CallId { caller: 1, seq: 2 },
            dag: "pipeline".to_string(),
            args: vec![("square".to_string(), CallArgs::default())],
            reply: ReplyTo {
                address: caller.clone(),
                response_key: None,
            },
            timeout_ms: 1000,
            session: plan().session,
            consistency: Consistency::RepeatableRead,
            trace: false,
        }),
        Message::CallResult(CallResult {
            id: CallId { caller: 1, seq: 1 },
            outcome: CallOutcome::Value(vec![0x80, 4, 0x4b, 4, 0x2e]),
            written: Session::default(),
            output: Vec::new(),
            trace: None,
        }),
        Message::CallDone {
            id: CallId { caller: 1, seq: 1 },
            attempt: 0,
            function: 0,
            executor: Address::from("tcp://127.0.0.1:7400"),
            failed: true,
        },
        Message::ExecutorReport(executor_report()),
        Message::CacheReport(cache_report()),
        Message::DagChanged(DagChanged {
            name: "pipeline".to_string(),
        }),
        Message::Subscribe(Subscribe {
            subscriber: Address::from("tcp://127.0.0.1:7350"),
            keys: vec!["big-array".to_string(), String::new()],
            lease_ms: 10_000,
        }),
        Message::UserMessage(UserMessage {
            from: Address::from("tcp://127.0.0.1:7401"),
            payload: b"hello".to_vec(),
        }),
        Message::ComputeStatusRequest {
            id: RequestId(91),
            reply_to: caller.clone(),
        },
        Message::ComputeStatusReply {
            id: RequestId(91),
            status: ComputeStatus {
                executors: vec![executor_report()],
                caches: vec![cache_report()],
                in_flight: 1,
                queued: 0,
                calls: call_figures(),
            },
        },
        Message::ExecutorLeaving {
            executor: Address::from("tcp://127.0.0.1:7400"),
        },
        Message::Scale {
            kind: anna::protocol::monitor::NodeKind::Compute,
            replicas: 3,
        },
        Message::Metrics {
            text: "squall_nodes{kind=\"storage\",state=\"desired\"} 2\n".to_string(),
            dashboard: "{\"nodes\":[]}".to_string(),
        },
        Message::CancelCall {
            id: CallId { caller: 2, seq: 9 },
            reply_to: caller.clone(),
        },
        Message::CancelAnswer {
            id: CallId { caller: 2, seq: 9 },
            cancelled: true,
        },
        Message::CallTraced(Box::new(traced_call())),
        Message::Watch(Box::new(Watch {
            watcher: Address::from("tcp://127.0.0.1:7150"),
            trigger: TriggerSpec {
                name: "on-upload".to_string(),
                function: "thumbnail".to_string(),
                prefix: "uploads/".to_string(),
                on: ChangeKind::Put,
            },
            lease_ms: 6_000,
            retry_ms: 65_000,
        })),
        Message::WatchState(WatchState {
            from: Address::from("tcp://127.0.0.1:7000"),
            trigger: "on-upload".to_string(),
            backlog: 12,
            dropped: 0,
        }),
        Message::Changes(Changes {
            from: Address::from("tcp://127.0.0.1:7000"),
            events: vec![
                ChangeEvent {
                    seq: 41,
                    trigger: "on-upload".to_string(),
                    key: "uploads/a.png".to_string(),
                    kind: ChangeKind::Put,
                    at: ts(1_700_000_000_000, 2, 9),
                    value: anna::protocol::compute::encode_value(&lww(1_700_000_000_000, b"png")),
                },
                ChangeEvent {
                    seq: 42,
                    trigger: "on-upload".to_string(),
                    key: "uploads/b.png".to_string(),
                    kind: ChangeKind::Delete,
                    at: ts(1_700_000_000_001, 0, 9),
                    value: Vec::new(),
                },
            ],
        }),
        Message::ChangesDone {
            watcher: Address::from("tcp://127.0.0.1:7150"),
            seqs: vec![41, 42],
        },
        Message::Batch(vec![
            Message::ChangesDone {
                watcher: Address::from("tcp://127.0.0.1:7150"),
                seqs: vec![43],
            },
            Message::Ping {
                id: RequestId(44),
                reply_to: Address::from("tcp://127.0.0.1:7151"),
            },
        ]),
    ];
    msgs.extend(CALL_ERROR_KINDS.iter().map(|&kind| {
        Message::CallResult(CallResult {
            id: CallId { caller: 2, seq: 9 },
            outcome: CallOutcome::Error(CallError {
                kind,
                type_name: "ZeroDivisionError".to_string(),
                message: "division by zero".to_string(),
                traceback: "Traceback (most recent call last):\n  ...".to_string(),
                function: Some("divide".to_string()),
            }),
            written: plan().written,
            output: Vec::new(),
            trace: None,
        })
    }));
    msgs
}

fn storage_report() -> StorageReport {
    StorageReport {
        from: Address::from("tcp://10.0.0.1:6000"),
        node: NodeId(3),
        thread: 1,
        epoch_ms: 1000,
        keys: 12_345,
        bytes: u64::MAX,
        busy_permille: 1000,
        accesses: 70_000,
        hot_keys: vec![("hot".to_string(), u32::MAX), (String::new(), 1)],
        memory_bytes: 1 << 40,
        memory_budget: 1 << 41,
        disk_keys: 3,
        disk_bytes: 1 << 50,
        memory_hits: 7,
        disk_hits: u64::MAX,
    }
}

/// One message of every monitor variant.
fn monitor_messages() -> Vec<Message> {
    let status = MonitorStatus {
        storage: vec![storage_report(), StorageReport::default()],
        compute: ComputeStatus {
            executors: vec![executor_report()],
            caches: Vec::new(),
            in_flight: 0,
            queued: 2,
            calls: CallFigures::default(),
        },
        replicas: vec![("storage".to_string(), 3, 2), ("compute".to_string(), 1, 1)],
        raised: vec![("hot".to_string(), 3, 2)],
        events: vec![MonitorEvent {
            at_ms: 1_700_000_000_000,
            policy: "hot-key".to_string(),
            action: "raise-replication".to_string(),
            reason: "`hot` took 40% of a thread's accesses".to_string(),
            figures: r#"{"key":"hot","share":0.4}"#.to_string(),
        }],
    };
    vec![
        Message::StatsRequest {
            id: RequestId(92),
            reply_to: Address::from("tcp://127.0.0.1:7500"),
        },
        Message::StorageReport {
            id: RequestId(92),
            report: storage_report(),
        },
        Message::StorageReport {
            id: RequestId(0),
            report: StorageReport::default(),
        },
        Message::Prewarm {
            function: "square".to_string(),
        },
        Message::MonitorStatusRequest {
            id: RequestId(93),
            reply_to: Address::from("ipc:///tmp/squall-status"),
        },
        Message::MonitorStatusReply {
            id: RequestId(93),
            status: Box::new(status),
        },
    ]
}
