//! The KVS protocol under the seeded simulator: storage workers, a router
//! and clients in one process, through loss, duplication, reordering,
//! isolation, cuts between two groups, crashes, joins, pauses (SIGSTOP),
//! graceful departures and clocks skewed per role. Writers put values of
//! every lattice type, delete, and ask for every acknowledgement level.
//! After every run the network is healed and made lossless, and the checks
//! are the protocol's promises:
//!
//! - every owner of every key holds the same state (replicas converge);
//! - that state holds every acknowledged write in the state's own order
//!   (`KeyState::covers`: for a set, its element; for a counter, the
//!   writer's total, in the baseline if a later delete ended its epoch;
//!   for last-writer-wins, a value at least as new), every acknowledged
//!   delete, and nothing that was never written (a single-valued type holds
//!   one of the values written);
//! - a put begun after a delete was acknowledged lands in its epoch or a
//!   later one;
//! - every read sees its reader's earlier acknowledged writes (sessions);
//! - every client operation ended (acknowledged or failed), none hangs,
//!   and most were acknowledged (a run whose writes all failed proves
//!   nothing);
//! - the scenario's faults happened (messages lost, blocked, held at a
//!   paused role, a crash detected, clocks read ahead).
//!
//! `SQUALL_SIM_SEED=<n>` runs one seed only, to replay a failure; the
//! failure message names the seed and dumps the trace's tail.

use anna::client::{ClientConfig, ClientCore, ClientError, OpId, OpOutput};
use anna::cluster::{MemberStatus, ReplicationFactor};
use anna::kvs::departure::{Departure, DepartureConfig, DepartureOutcome};
use anna::kvs::{StorageWorker, WorkerConfig};
use anna::lattice::{
    Causal, Counter, Dependent, KeyState, Lattice, LatticeKind, LatticeValue, Lww, MapLattice, Max,
    Min, ORMapLattice, ORSetLattice, OrderedSetLattice, Presence, Priority, SetLattice, Timestamp,
    VectorClock, WriterId,
};
use anna::protocol::{Ack, Address, Membership, Message, NodeId, NodeInfo};
use anna::role::{Input, Outbox, Role};
use anna::router::{Router, RouterConfig};
use anna::sim::{Sim, SimConfig, Skew};
use anna::time::Time;
use std::collections::BTreeMap;
use std::time::Duration;

/// Seeds per scenario in CI.
const SEEDS: u64 = 500;

/// Seeds for the heavier scenarios (every lattice type, deletes, skew,
/// pauses, cuts): each is a few times the work of a set-only run.
const FEWER_SEEDS: usize = 100;

/// A write a client had acknowledged, as the state it guarantees the key
/// holds from then on (a put: its value in the delete epoch it was made
/// in; a delete: its tombstone), with when it started and ended on the
/// simulator's clock.
#[derive(Clone, Debug)]
struct Acked {
    key: String,
    witness: KeyState,
    /// A delete's time, for a delete.
    deleted: Option<anna::lattice::Timestamp>,
    started: Time,
    finished: Time,
}

/// An operation in flight.
#[derive(Clone, Debug)]
struct InFlight {
    key: String,
    /// The value of a put; `None` for a delete.
    value: Option<LatticeValue>,
    deleted: Option<anna::lattice::Timestamp>,
    started: Time,
}

/// What a writer does: which keys (each of one lattice kind) and how
/// often it deletes.
#[derive(Clone, Debug)]
struct Workload {
    keys: Vec<(String, LatticeKind)>,
    /// Every this many operations is a delete (none if `None`).
    delete_every: Option<u32>,
    /// The writer's clock is this far off the simulator's (so that what it
    /// records is on the simulator's clock).
    skew: Skew,
}

impl Workload {
    /// `keys` keys of sets, no deletes.
    fn sets(keys: u32) -> Self {
        Self::of(&[LatticeKind::Set], keys, None)
    }

    /// `keys` keys, key `i` of `kinds[i % kinds.len()]`.
    fn of(kinds: &[LatticeKind], keys: u32, delete_every: Option<u32>) -> Self {
        Workload {
            keys: (0..keys as usize)
                .map(|i| (format!("key-{i}"), kinds[i % kinds.len()]))
                .collect(),
            delete_every,
            skew: Skew::None,
        }
    }

    /// Every kind, two keys each, a delete every seventh operation.
    fn every_kind() -> Self {
        let kinds = LatticeKind::ALL;
        Self::of(&kinds, 2 * kinds.len() as u32, Some(7))
    }
}

/// A client that writes to a few keys, each of one lattice kind, with a
/// bounded number of operations in flight, sometimes deleting a key, and
/// remembers which writes were acknowledged. Every other write it also
/// reads back a key it wrote to, and records a read that misses one of its
/// own writes acknowledged before the read began: its session makes every
/// replica's answer wait for them, whatever the replication and ring
/// changes (a read that cannot get them fails).
///
/// Each write is unique to its writer and number, so that what a key holds
/// can be traced to the writes made: set elements, last-writer-wins and
/// priority payloads, causal payloads name them; counters and vector
/// clocks are the writer's running totals of its writes of the key.
struct Writer {
    core: ClientCore,
    start: Time,
    next_write: Time,
    writes_left: u32,
    work: Workload,
    sent: u32,
    /// This writer's writes of each key so far.
    per_key: BTreeMap<String, u64>,
    in_flight: BTreeMap<OpId, InFlight>,
    acked: Vec<Acked>,
    attempted: BTreeMap<String, Vec<LatticeValue>>,
    attempts: u32,
    failed: u32,
    refused: u32,
    reads: BTreeMap<OpId, (String, Vec<KeyState>)>,
    stale_reads: Vec<String>,
    /// This writer's latest add to each observed-remove key (the element
    /// or field, and its tag), which its next write of the key removes.
    added: BTreeMap<String, (String, Timestamp)>,
}

impl Writer {
    fn new(me: &str, router: &Address, writes: u32, work: Workload, ack: Ack, start: Time) -> Self {
        let config = ClientConfig {
            put_ack: ack,
            ..ClientConfig::default()
        };
        Writer {
            core: ClientCore::new(
                config,
                Address::from(me),
                vec![router.clone()],
                WriterId(anna::ring::stable_hash(me.as_bytes())),
            ),
            start,
            next_write: start,
            writes_left: writes,
            work,
            sent: 0,
            per_key: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            acked: Vec::new(),
            attempted: BTreeMap::new(),
            attempts: 0,
            failed: 0,
            refused: 0,
            reads: BTreeMap::new(),
            stale_reads: Vec::new(),
            added: BTreeMap::new(),
        }
    }

    /// `now`, read on this writer's clock, on the simulator's.
    fn sim_time(&self, now: Time) -> Time {
        match self.work.skew {
            Skew::None => now,
            Skew::Ahead(d) => Time(now.as_micros().saturating_sub(d.as_micros() as u64)),
            Skew::Behind(d) => now + d,
        }
    }

    fn settle(&mut self, now: Time, done: Vec<(OpId, Result<OpOutput, ClientError>)>) {
        let finished = self.sim_time(now);
        for (id, result) in done {
            if let Some((key, expected)) = self.reads.remove(&id) {
                let held = match result {
                    Ok(OpOutput::State(s)) => s,
                    Ok(OpOutput::Value(v)) => v.map(KeyState::from_value).unwrap_or_default(),
                    Ok(OpOutput::Written { .. }) | Err(_) => continue,
                };
                let missing = expected.iter().filter(|w| !held.covers(w)).count();
                if missing > 0 {
                    self.stale_reads.push(format!(
                        "read of `{key}` missed {missing} acknowledged writes (op {id:?})"
                    ));
                }
                continue;
            }
            let Some(op) = self.in_flight.remove(&id) else {
                continue;
            };
            match result {
                Ok(OpOutput::Written { epoch }) => {
                    let witness = match &op.value {
                        Some(v) => KeyState::written(epoch, v.clone()),
                        None => KeyState::tombstone(op.deleted.expect("a delete has a time")),
                    };
                    self.acked.push(Acked {
                        key: op.key,
                        witness,
                        deleted: op.deleted,
                        started: op.started,
                        finished,
                    });
                }
                Ok(other) => panic!("a write answered {other:?}"),
                Err(ClientError::Refused { .. }) => self.refused += 1,
                Err(_) => self.failed += 1,
            }
        }
    }

    fn finished(&self) -> bool {
        self.writes_left == 0 && self.in_flight.is_empty() && self.reads.is_empty()
    }

    /// This writer's next write of `key`, of `kind`: unique to the writer
    /// and its count `n` of writes of the key.
    fn value(&mut self, now: Time, key: &str, kind: LatticeKind, n: u64) -> LatticeValue {
        let me = self.core.writer();
        let tag = format!("{}#{}", self.core.address(), self.sent).into_bytes();
        let hash = anna::ring::stable_hash(&tag);
        let mut counter = Counter::default();
        counter.increment(me, n);
        counter.decrement(me, n / 3);
        let clock = VectorClock::new([(me, n)]);
        match kind {
            LatticeKind::Lww => LatticeValue::Lww(Lww::new(self.core.timestamp(now), tag)),
            LatticeKind::Set => LatticeValue::Set(SetLattice::new([tag])),
            LatticeKind::OrderedSet => LatticeValue::OrderedSet(OrderedSetLattice::new([tag])),
            LatticeKind::Max => LatticeValue::Max(Max::new((hash % 1000) as i64)),
            LatticeKind::Min => LatticeValue::Min(Min::new((hash % 1000) as i64)),
            LatticeKind::Counter => LatticeValue::Counter(counter),
            LatticeKind::Map => LatticeValue::Map(MapLattice::new([
                ("n".to_string(), LatticeValue::Counter(counter)),
                (
                    "s".to_string(),
                    LatticeValue::Set(SetLattice::new([tag.clone()])),
                ),
                (
                    "l".to_string(),
                    LatticeValue::Lww(Lww::new(self.core.timestamp(now), tag)),
                ),
            ])),
            LatticeKind::VectorClock => LatticeValue::VectorClock(clock),
            LatticeKind::SingleKeyCausal => LatticeValue::SingleKeyCausal(Causal::new(clock, tag)),
            LatticeKind::MultiKeyCausal => LatticeValue::MultiKeyCausal(Causal::new(
                clock.clone(),
                Dependent {
                    dependencies: [("elsewhere".to_string(), clock)].into(),
                    value: tag,
                },
            )),
            LatticeKind::Priority => {
                LatticeValue::Priority(Priority::new((hash % 100) as f64, tag))
            }
            // Adds its own element and a shared one, and removes the
            // shared one as it last added it.
            LatticeKind::ORSet => {
                let at = self.core.timestamp(now);
                let mut s = ORSetLattice::with_adds(at, [tag, b"shared".to_vec()]);
                let shared = "shared".to_string();
                if let Some((e, before)) = self.added.insert(key.to_string(), (shared, at)) {
                    s.merge_presence(e.into_bytes(), Presence::removed([before]));
                }
                LatticeValue::ORSet(s)
            }
            // Updates a counter field and a field of its own, and removes
            // the field of its own it updated last time.
            LatticeKind::ORMap => {
                let at = self.core.timestamp(now);
                let mut m = ORMapLattice::default();
                m.update("n".to_string(), at, LatticeValue::Counter(counter));
                let own = format!("{hash:x}");
                m.update(own.clone(), at, LatticeValue::Lww(Lww::new(at, tag)));
                if let Some((field, before)) = self.added.insert(key.to_string(), (own, at)) {
                    let gone = anna::lattice::or_map::Field::removal(Presence::removed([before]));
                    m.merge_field(field, gone);
                }
                LatticeValue::ORMap(m)
            }
        }
    }

    fn write(&mut self, now: Time, out: &mut Outbox) {
        self.writes_left -= 1;
        self.sent += 1;
        self.attempts += 1;
        let (key, kind) = self.work.keys[self.sent as usize % self.work.keys.len()].clone();
        let started = self.sim_time(now);
        let delete = self
            .work
            .delete_every
            .is_some_and(|k| self.sent.is_multiple_of(k));
        if delete {
            let at = self.core.timestamp(now);
            let ack = self.core.config().delete_ack;
            let id = self.core.delete_at(now, key.clone(), at, ack, out);
            let op = InFlight {
                key,
                value: None,
                deleted: Some(at),
                started,
            };
            self.in_flight.insert(id, op);
        } else {
            let n = self.per_key.entry(key.clone()).or_default();
            *n += 1;
            let n = *n;
            let value = self.value(now, &key, kind, n);
            self.attempted
                .entry(key.clone())
                .or_default()
                .push(value.clone());
            let id = self.core.put(now, key.clone(), value.clone(), out);
            let op = InFlight {
                key,
                value: Some(value),
                deleted: None,
                started,
            };
            self.in_flight.insert(id, op);
        }
        self.next_write = now + Duration::from_millis(3);
        let read_key = &self.work.keys[(self.sent as usize / 2) % self.work.keys.len()].0;
        if self.sent.is_multiple_of(2) {
            let expected: Vec<KeyState> = (self.acked.iter())
                .filter(|a| &a.key == read_key)
                .map(|a| a.witness.clone())
                .collect();
            if !expected.is_empty() {
                let key = read_key.clone();
                // With deletes about, the whole state (a tombstone is
                // seen in it); otherwise the value, as most reads are.
                let id = if self.work.delete_every.is_some() {
                    self.core.read_state(now, key.clone(), None, out)
                } else {
                    self.core.get(now, key.clone(), out)
                };
                self.reads.insert(id, (key, expected));
            }
        }
    }
}

impl Role for Writer {
    fn step(&mut self, now: Time, input: Input, out: &mut Outbox) {
        match input {
            Input::Message(msg) => {
                let done = self.core.handle(now, msg, out);
                self.settle(now, done);
            }
            Input::Tick => {
                let done = self.core.tick(now, out);
                self.settle(now, done);
                if now >= self.next_write && self.writes_left > 0 && self.in_flight.len() < 4 {
                    self.write(now, out);
                }
            }
        }
    }

    fn next_tick(&self) -> Option<Time> {
        let can_write = self.writes_left > 0 && self.in_flight.len() < 4;
        let write = can_write.then_some(self.next_write.max(self.start));
        [write, self.core.next_tick()].into_iter().flatten().min()
    }
}

enum Host {
    Worker(Box<StorageWorker>),
    Router(Box<Router>),
    Writer(Box<Writer>),
    /// A node process's graceful departure (SIGTERM).
    Departure(Box<Departure>),
}

impl Role for Host {
    fn step(&mut self, now: Time, input: Input, out: &mut Outbox) {
        match self {
            Host::Worker(w) => w.step(now, input, out),
            Host::Router(r) => r.step(now, input, out),
            Host::Writer(c) => c.step(now, input, out),
            Host::Departure(d) => d.step(now, input, out),
        }
    }

    fn next_tick(&self) -> Option<Time> {
        match self {
            Host::Worker(w) => w.next_tick(),
            Host::Router(r) => r.next_tick(),
            Host::Writer(c) => c.next_tick(),
            Host::Departure(d) => d.next_tick(),
        }
    }
}

const THREADS: usize = 2;

fn node_info(id: u64, boot: u64) -> NodeInfo {
    NodeInfo {
        id: NodeId(id),
        boot,
        direct: Vec::new(),
        threads: (0..THREADS)
            .map(|t| Address(format!("node{id}/t{t}")))
            .collect(),
    }
}

fn worker_config(global: u8) -> WorkerConfig {
    WorkerConfig {
        replication: ReplicationFactor { global, local: 1 },
        ..WorkerConfig::default()
    }
}

fn add_node(sim: &mut Sim<Host>, id: u64, global: u8, router: &Address) {
    let boot = sim.now().as_micros();
    let info = node_info(id, boot);
    for t in 0..THREADS {
        let w = StorageWorker::new(
            worker_config(global),
            info.clone(),
            t as u32,
            vec![router.clone()],
        );
        sim.add(info.threads[t].clone(), Host::Worker(Box::new(w)));
    }
}

fn crash_node(sim: &mut Sim<Host>, id: u64) {
    for a in node_info(id, 0).threads {
        sim.crash(&a);
    }
}

struct Cluster {
    sim: Sim<Host>,
    router: Address,
    writers: Vec<Address>,
    /// The least share of attempted writes (puts and deletes), in percent,
    /// that must be acknowledged for the run to count.
    min_acked_percent: usize,
}

/// The writers' addresses.
const WRITERS: [&str; 3] = ["wa", "wb", "wc"];

fn cluster(seed: u64, nodes: u64, global: u8, ack: Ack, writes: u32) -> Cluster {
    cluster_of(seed, nodes, global, ack, writes, |_| Workload::sets(7))
}

/// A router, `nodes` storage nodes of [`THREADS`] threads, and the three
/// [`WRITERS`], each doing `work(writer)` from +2 s on, on a network that
/// loses and duplicates 5% of messages.
fn cluster_of(
    seed: u64,
    nodes: u64,
    global: u8,
    ack: Ack,
    writes: u32,
    work: impl Fn(&str) -> Workload,
) -> Cluster {
    let mut sim: Sim<Host> = SimConfig::new(seed)
        .drop_rate(0.05)
        .duplicate_rate(0.05)
        .latency(Duration::from_micros(50), Duration::from_millis(3))
        .build()
        .expect("valid simulator settings");
    let router = Address::from("router");
    let config = RouterConfig {
        replication: ReplicationFactor { global, local: 1 },
        ..RouterConfig::default()
    };
    sim.add(
        router.clone(),
        Host::Router(Box::new(Router::new(config, router.clone(), vec![]))),
    );
    for id in 1..=nodes {
        add_node(&mut sim, id, global, &router);
    }
    let writers: Vec<Address> = WRITERS.iter().map(|&a| Address::from(a)).collect();
    for w in &writers {
        let work = work(w.as_str());
        sim.skew(w, work.skew);
        let start = sim.clock_of(w) + Duration::from_secs(2);
        let writer = Writer::new(w.as_str(), &router, writes, work, ack, start);
        sim.add(w.clone(), Host::Writer(Box::new(writer)));
    }
    Cluster {
        sim,
        router,
        writers,
        min_acked_percent: 90,
    }
}

/// Whether `kind` holds exactly one of the values written (the greatest
/// by its order), rather than a merge of several.
fn single_valued(kind: LatticeKind) -> bool {
    matches!(
        kind,
        LatticeKind::Lww | LatticeKind::Max | LatticeKind::Min | LatticeKind::Priority
    )
}

impl Cluster {
    fn writer(&self, a: &Address) -> &Writer {
        match self.sim.role(a) {
            Some(Host::Writer(w)) => w,
            _ => panic!("no writer at {a}"),
        }
    }

    fn router(&self) -> &Router {
        match self.sim.role(&self.router) {
            Some(Host::Router(r)) => r,
            _ => panic!("router gone"),
        }
    }

    fn writers_done(&self) -> bool {
        self.writers.iter().all(|w| self.writer(w).finished())
    }

    /// Every acknowledged write of every writer.
    fn acked(&self) -> impl Iterator<Item = &Acked> {
        self.writers
            .iter()
            .flat_map(|w| self.writer(w).acked.iter())
    }

    /// The kinds of the keys that had a put acknowledged.
    fn acked_kinds(&self) -> std::collections::BTreeSet<LatticeKind> {
        self.acked()
            .filter(|a| a.deleted.is_none())
            .filter_map(|a| a.witness.value().map(LatticeValue::kind))
            .collect()
    }

    /// How many deletes were acknowledged.
    fn acked_deletes(&self) -> usize {
        self.acked().filter(|a| a.deleted.is_some()).count()
    }

    /// Heals the network, waits for quiet, and checks the promises.
    fn settle_and_check(&mut self, seed: u64) {
        let stats = self.sim.stats();
        assert!(
            stats.dropped > 0 && stats.duplicated > 0,
            "seed {seed}: the network lost or doubled nothing: {stats:?}"
        );
        self.sim.heal();
        self.sim.set_drop_rate(0.0).unwrap();
        self.sim.set_duplicate_rate(0.0).unwrap();
        let finished = self
            .sim
            .run_until(self_writers_done, Duration::from_secs(30));
        assert!(
            finished,
            "seed {seed}: client operations still pending\n{}",
            self.sim.trace_dump()
        );
        self.sim.run_for(Duration::from_secs(10));

        // A run whose writes all failed would pass every check below.
        let acked_count = self.acked().count();
        let attempted_count: usize = (self.writers.iter())
            .map(|w| self.writer(w).attempts as usize)
            .sum();
        assert!(
            acked_count * 100 >= attempted_count * self.min_acked_percent && acked_count > 0,
            "seed {seed}: only {acked_count} of {attempted_count} writes were acknowledged \
             (at least {}% must be)",
            self.min_acked_percent
        );
        for (addr, host) in self.sim.roles() {
            if let Host::Worker(w) = host {
                assert!(
                    !w.joined() || w.settled(),
                    "seed {seed}: {addr} still holds keys it does not own, or has handoffs pending"
                );
            }
        }
        // Every read sees the reader's earlier acknowledged writes, on any
        // replica, ring changes or not: the client's session.
        for w in &self.writers {
            let stale = &self.writer(w).stale_reads;
            assert!(stale.is_empty(), "seed {seed}: {w}: {stale:?}");
        }
        let placement = self.router().placement().clone();
        let keys = self.writer(&self.writers[0]).work.keys.clone();
        for (key, kind) in &keys {
            let owners = placement.owners(key);
            assert!(!owners.is_empty(), "seed {seed}: `{key}` has no owner");
            let mut seen: Option<KeyState> = None;
            for owner in &owners {
                let Some(Host::Worker(w)) = self.sim.role(owner) else {
                    panic!("seed {seed}: owner {owner} of `{key}` is not a live worker");
                };
                let held = w.get_state(key).cloned().unwrap_or_default();
                if let Some(prev) = &seen {
                    assert_eq!(
                        prev, &held,
                        "seed {seed}: replicas of `{key}` disagree ({owner})"
                    );
                }
                seen = Some(held);
            }
            let held = seen.unwrap_or_default();
            self.check_key(seed, key, *kind, &held);
        }
    }

    /// Checks what `key` holds at the end against what was written: every
    /// acknowledged write is held (in the state's order: a put of an
    /// earlier delete epoch is held by the state's counters' baseline),
    /// nothing unwritten is, and a put started after a delete was
    /// acknowledged landed after it.
    fn check_key(&self, seed: u64, key: &str, kind: LatticeKind, held: &KeyState) {
        let acked: Vec<&Acked> = self.acked().filter(|a| a.key == key).collect();
        for a in &acked {
            assert!(
                held.covers(&a.witness),
                "seed {seed}: `{key}` lost an acknowledged write\n  {:?}\nholding\n  {held:?}\n{}",
                a.witness,
                self.sim.trace_dump()
            );
        }
        // A delete acknowledged by all replicas is seen by every put begun
        // after it: the put lands in its epoch or a later one.
        for d in acked.iter().filter(|a| a.deleted.is_some()) {
            for p in acked.iter().filter(|p| p.deleted.is_none()) {
                if p.started > d.finished {
                    assert!(
                        p.witness.deleted_at() >= d.deleted,
                        "seed {seed}: `{key}`: a put begun after a delete at {:?} was \
                         acknowledged landed before it, in {:?}",
                        d.deleted,
                        p.witness.deleted_at()
                    );
                }
            }
        }
        let Some(value) = held.value() else {
            return;
        };
        assert_eq!(value.kind(), kind, "seed {seed}: `{key}`");
        let attempted: Vec<&LatticeValue> = (self.writers.iter())
            .filter_map(|w| self.writer(w).attempted.get(key))
            .flatten()
            .collect();
        let all = (attempted.iter().copied().cloned())
            .reduce(|a, b| a.join(b))
            .expect("a value held was written");
        assert!(
            all.covers(value),
            "seed {seed}: `{key}` holds unwritten data: {value:?}"
        );
        if single_valued(kind) {
            assert!(
                attempted.contains(&value),
                "seed {seed}: `{key}` holds a value never written: {value:?}"
            );
        }
    }
}

fn self_writers_done(sim: &Sim<Host>) -> bool {
    sim.roles().all(|(_, h)| match h {
        Host::Writer(w) => w.finished(),
        _ => true,
    })
}

fn seeds() -> Vec<u64> {
    match std::env::var("SQUALL_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SQUALL_SIM_SEED is a number")],
        Err(_) => (0..SEEDS).collect(),
    }
}

#[test]
fn replicas_converge_to_every_acknowledged_write_under_loss_duplication_and_reordering() {
    for seed in seeds() {
        let mut c = cluster(seed, 3, 2, Ack::FirstReplica, 40);
        c.sim.run_for(Duration::from_secs(3));
        c.settle_and_check(seed);
        assert!(c.writers_done());
    }
}

#[test]
fn a_partitioned_node_catches_up_after_the_partition_heals() {
    for seed in seeds() {
        let mut c = cluster(seed, 3, 3, Ack::FirstReplica, 40);
        c.sim.run_for(Duration::from_millis(2_100));
        for t in node_info(2, 0).threads {
            c.sim.isolate(&t);
        }
        let blocked = c.sim.stats().blocked;
        c.sim.run_for(Duration::from_secs(2));
        assert!(
            c.sim.stats().blocked > blocked,
            "seed {seed}: the isolation blocked nothing"
        );
        c.settle_and_check(seed);
    }
}

#[test]
fn a_crashed_node_loses_no_write_acknowledged_by_two_replicas() {
    for seed in seeds() {
        let mut c = cluster(seed, 3, 3, Ack::Replicas(2), 40);
        c.sim.run_for(Duration::from_millis(2_150));
        let crashed = 1 + seed % 3;
        crash_node(&mut c.sim, crashed);
        c.sim.run_for(Duration::from_secs(6));
        assert!(c.sim.stats().undeliverable > 0, "seed {seed}");
        assert_eq!(
            c.router()
                .cluster()
                .member(NodeId(crashed))
                .map(|m| &m.status),
            Some(&MemberStatus::Departed),
            "seed {seed}: the crash was never detected"
        );
        c.settle_and_check(seed);
    }
}

#[test]
fn a_node_joining_under_load_gets_its_keys_and_loses_none() {
    for seed in seeds() {
        // One replica per key, so a read at the new owner that missed the
        // previous owner's copy would show.
        let mut c = cluster(seed, 2, 1, Ack::FirstReplica, 60);
        c.sim.run_for(Duration::from_millis(2_100));
        let router = c.router.clone();
        add_node(&mut c.sim, 3, 1, &router);
        c.sim.run_for(Duration::from_secs(3));
        c.settle_and_check(seed);
        let Some(Host::Router(r)) = c.sim.role(&router) else {
            panic!()
        };
        assert_eq!(
            r.placement().nodes().len(),
            3,
            "seed {seed}: node 3 never joined"
        );
    }
}

#[test]
fn a_restarted_node_rejoins_under_the_same_id() {
    for seed in seeds().into_iter().take(50) {
        let mut c = cluster(seed, 3, 2, Ack::Replicas(2), 30);
        c.sim.run_for(Duration::from_millis(2_200));
        crash_node(&mut c.sim, 2);
        c.sim.run_for(Duration::from_millis(500));
        let router = c.router.clone();
        add_node(&mut c.sim, 2, 2, &router);
        c.sim.run_for(Duration::from_secs(3));
        c.settle_and_check(seed);
        let Some(Host::Router(r)) = c.sim.role(&router) else {
            panic!()
        };
        assert!(
            r.placement().nodes().contains_key(&NodeId(2)),
            "seed {seed}"
        );
        assert!(
            r.cluster().member(NodeId(2)).unwrap().incarnation >= 2,
            "seed {seed}"
        );
    }
}

#[test]
fn a_node_stalled_past_the_failure_timeout_rejoins_and_loses_nothing() {
    for seed in seeds().into_iter().take(100) {
        let mut c = cluster(seed, 3, 2, Ack::Replicas(2), 60);
        c.sim.run_for(Duration::from_millis(2_100));
        let stalled = 1 + seed % 3;
        for t in node_info(stalled, 0).threads {
            c.sim.pause(&t);
        }
        // Past the router's failure timeout (3 s): the node is declared
        // departed while its process still holds its keys.
        c.sim.run_for(Duration::from_secs(4));
        let router = c.router.clone();
        let declared = |c: &Cluster| match c.sim.role(&router) {
            Some(Host::Router(r)) => r.cluster().member(NodeId(stalled)).cloned(),
            _ => None,
        };
        let before = declared(&c).expect("the stalled node was a member");
        assert_eq!(
            before.status,
            anna::cluster::MemberStatus::Departed,
            "seed {seed}: the stalled node was never declared failed"
        );
        assert!(
            c.sim.stats().held > 0,
            "seed {seed}: nothing reached the stalled node"
        );
        for t in node_info(stalled, 0).threads {
            c.sim.resume(&t);
        }
        let rejoined = c.sim.run_until(
            |sim| match sim.role(&router) {
                Some(Host::Router(r)) => r.cluster().member(NodeId(stalled)).is_some_and(|m| {
                    m.incarnation > before.incarnation
                        && m.status != anna::cluster::MemberStatus::Departed
                }),
                _ => false,
            },
            Duration::from_secs(3),
        );
        assert!(
            rejoined,
            "seed {seed}: node {stalled} never rejoined\n{}",
            c.sim.trace_dump()
        );
        c.settle_and_check(seed);
        let rejoins: u64 = node_info(stalled, 0)
            .threads
            .iter()
            .map(|t| match c.sim.role(t) {
                Some(Host::Worker(w)) => w.stats().rejoins,
                _ => 0,
            })
            .sum();
        assert!(
            rejoins >= 1,
            "seed {seed}: no thread saw itself declared departed"
        );
    }
}

#[test]
fn a_node_leaving_gracefully_under_load_hands_over_every_write() {
    for seed in seeds() {
        // One replica per key: the leaving node's copy is the only one, so
        // a key not handed over would be lost outright.
        let mut c = cluster(seed, 3, 1, Ack::FirstReplica, 60);
        c.sim.run_for(Duration::from_millis(2_100));
        // What `squall kvs` runs on SIGTERM, at the node process's inbox.
        let process = Address::from("node3-process");
        let config = DepartureConfig {
            leave_timeout: worker_config(1).leave_timeout,
            ..DepartureConfig::default()
        };
        let departure = Departure::new(
            node_info(3, 0),
            vec![c.router.clone()],
            process.clone(),
            config,
        );
        c.sim
            .add(process.clone(), Host::Departure(Box::new(departure)));
        let finished = c.sim.run_until(
            |sim| matches!(sim.role(&process), Some(Host::Departure(d)) if d.finished()),
            Duration::from_secs(40),
        );
        assert!(finished, "seed {seed}: the departure never finished");
        let Some(Host::Departure(d)) = c.sim.role(&process) else {
            panic!()
        };
        assert!(
            matches!(d.outcome(), Some(DepartureOutcome::HandedOver { .. })),
            "seed {seed}: node 3 never finished its handoff: {:?}",
            d.outcome()
        );
        crash_node(&mut c.sim, 3);
        c.sim.crash(&process);
        c.settle_and_check(seed);
        assert!(
            !c.router().placement().nodes().contains_key(&NodeId(3)),
            "seed {seed}"
        );
    }
}

#[test]
fn a_departure_whose_threads_never_answer_ends_at_its_leave_timeout() {
    for seed in seeds().into_iter().take(20) {
        let mut c = cluster(seed, 3, 2, Ack::Replicas(2), 30);
        // Puts of the keys the stalled thread holds a copy of fail.
        c.min_acked_percent = 60;
        c.sim.run_for(Duration::from_millis(2_100));
        // Thread 1 of node 3 is stalled: it never hands over.
        let stalled = threads(3)[1].clone();
        c.sim.pause(&stalled);
        let process = Address::from("node3-process");
        let config = DepartureConfig {
            leave_timeout: Duration::from_secs(3),
            ..DepartureConfig::default()
        };
        let departure = Departure::new(
            node_info(3, 0),
            vec![c.router.clone()],
            process.clone(),
            config,
        );
        c.sim
            .add(process.clone(), Host::Departure(Box::new(departure)));
        let started = c.sim.now();
        let finished = c.sim.run_until(
            |sim| matches!(sim.role(&process), Some(Host::Departure(d)) if d.finished()),
            Duration::from_secs(10),
        );
        assert!(finished, "seed {seed}: the departure never finished");
        let took = c.sim.now().saturating_since(started);
        assert!(
            took >= Duration::from_secs(3) && took < Duration::from_secs(5),
            "seed {seed}: took {took:?}"
        );
        let Some(Host::Departure(d)) = c.sim.role(&process) else {
            panic!()
        };
        assert!(
            matches!(
                d.outcome(),
                Some(DepartureOutcome::TimedOut {
                    handed_over: 1,
                    incarnation: Some(_)
                })
            ),
            "seed {seed}: {:?}",
            d.outcome()
        );
        assert!(c.sim.stats().held > 0, "seed {seed}");
        crash_node(&mut c.sim, 3);
        c.sim.crash(&process);
        // Two replicas per key: what the stalled thread held is still on
        // another node.
        c.settle_and_check(seed);
        assert!(
            !c.router().placement().nodes().contains_key(&NodeId(3)),
            "seed {seed}: the routers were not told"
        );
    }
}

#[test]
fn raising_and_lowering_a_keys_replication_moves_its_copies() {
    use anna::cluster::ReplicationFactor;
    use anna::lattice::{Timestamp, WriterId as W};
    for seed in seeds().into_iter().take(100) {
        let mut c = cluster(seed, 3, 1, Ack::FirstReplica, 40);
        c.sim.run_for(Duration::from_millis(2_100));
        let admin = Address::from("admin");
        // Sent five times, as a client retries until a router shows it: a
        // lossy network may drop any one copy.
        let set = |c: &mut Cluster, at: u64, global: u8| {
            let msg = Membership::SetReplication {
                key: "key-1".to_string(),
                at: Timestamp {
                    wall_ms: at,
                    logical: 0,
                    writer: W(7),
                },
                factor: ReplicationFactor { global, local: 1 },
            };
            for _ in 0..5 {
                let router = c.router.clone();
                c.sim
                    .send(admin.clone(), router, Message::Membership(msg.clone()));
            }
        };
        set(&mut c, 1, 3);
        c.sim.run_for(Duration::from_secs(2));
        c.settle_and_check(seed);
        let placement = match c.sim.role(&c.router) {
            Some(Host::Router(r)) => r.placement().clone(),
            _ => panic!(),
        };
        assert_eq!(placement.owners("key-1").len(), 3, "seed {seed}");
        set(&mut c, 2, 1);
        c.sim.run_for(Duration::from_secs(1));
        c.settle_and_check(seed);
    }
}

#[test]
fn every_lattice_type_and_deletes_keep_every_acknowledged_write_under_loss() {
    for seed in seeds().into_iter().take(FEWER_SEEDS) {
        let mut c = cluster_of(seed, 3, 2, Ack::FirstReplica, 60, |_| {
            Workload::every_kind()
        });
        c.sim.run_for(Duration::from_secs(3));
        c.settle_and_check(seed);
        assert_eq!(
            c.acked_kinds().len(),
            LatticeKind::ALL.len(),
            "seed {seed}: some kind had no write acknowledged"
        );
        assert!(c.acked_deletes() > 0, "seed {seed}: no delete acknowledged");
    }
}

/// The storage threads of `node`.
fn threads(node: u64) -> Vec<Address> {
    node_info(node, 0).threads
}

#[test]
fn writes_acknowledged_by_every_replica_survive_a_cut_between_two_groups() {
    for seed in seeds().into_iter().take(FEWER_SEEDS) {
        // Every node holds every key, and every put waits for all three.
        let mut c = cluster_of(seed, 3, 3, Ack::All, 60, |_| Workload::every_kind());
        c.sim.run_for(Duration::from_millis(2_050));
        // One node and one writer on one side, the rest on the other.
        let lone = 1 + seed % 3;
        let mut one_side = threads(lone);
        one_side.push(Address::from("wa"));
        let mut other_side: Vec<Address> =
            (1..=3).filter(|&n| n != lone).flat_map(threads).collect();
        other_side.extend(["router", "wb", "wc"].map(Address::from));
        c.sim.partition_groups(&one_side, &other_side);
        let blocked = c.sim.stats().blocked;
        // Longer than a put waits for its replicas (2 s), shorter than the
        // router's failure timeout (3 s): no ring change, and the clients'
        // retries get every put through once the cut heals.
        c.sim.run_for(Duration::from_millis(2_300));
        assert!(
            c.sim.stats().blocked > blocked + 20,
            "seed {seed}: the cut blocked little: {:?}",
            c.sim.stats()
        );
        c.settle_and_check(seed);
        assert!(c.acked_deletes() > 0, "seed {seed}: no delete acknowledged");
        assert_eq!(c.router().placement().nodes().len(), 3, "seed {seed}");
    }
}

#[test]
fn clocks_skewed_within_the_limit_lose_nothing() {
    let skew = |w: &str| match w {
        "wa" => Skew::Ahead(Duration::from_secs(4)),
        "wb" => Skew::Behind(Duration::from_secs(4)),
        _ => Skew::None,
    };
    for seed in seeds().into_iter().take(FEWER_SEEDS) {
        let mut c = cluster_of(seed, 3, 2, Ack::Replicas(2), 60, |w| Workload {
            skew: skew(w),
            ..Workload::every_kind()
        });
        // Node 1 behind and node 2 ahead by 4 s, the router by 1 s: wa's
        // timestamps are 8 s ahead of node 1's clock, within the default
        // 10 s of [limits] max_clock_skew.
        for t in threads(1) {
            c.sim.skew(&t, Skew::Behind(Duration::from_secs(4)));
        }
        for t in threads(2) {
            c.sim.skew(&t, Skew::Ahead(Duration::from_secs(4)));
        }
        let router = c.router.clone();
        c.sim.skew(&router, Skew::Ahead(Duration::from_secs(1)));
        c.sim.run_for(Duration::from_secs(3));
        c.settle_and_check(seed);
        for w in &c.writers {
            assert_eq!(c.writer(w).refused, 0, "seed {seed}: {w} was refused");
        }
        // The skew was real: wa stamped its writes 4 s ahead of the
        // simulator's time.
        let ahead = c.writer(&Address::from("wa")).acked.iter().any(|a| {
            let wall = a.witness.value().and_then(LatticeValue::latest_wall_ms);
            wall.is_some_and(|ms| ms >= a.started.as_millis() + 3_900)
        });
        assert!(ahead, "seed {seed}: wa's clock was not ahead");
        assert_eq!(c.acked_kinds().len(), LatticeKind::ALL.len(), "seed {seed}");
    }
}

#[test]
fn a_writer_whose_clock_runs_past_the_skew_limit_is_refused_and_poisons_nothing() {
    for seed in seeds().into_iter().take(FEWER_SEEDS) {
        let mut c = cluster_of(seed, 3, 2, Ack::FirstReplica, 60, |w| Workload {
            skew: if w == "wa" {
                Skew::Ahead(Duration::from_secs(15))
            } else {
                Skew::None
            },
            ..Workload::every_kind()
        });
        // wa's timestamped writes, about a tenth of all, are refused.
        c.min_acked_percent = 80;
        c.sim.run_for(Duration::from_secs(3));
        c.settle_and_check(seed);
        let wa = c.writer(&Address::from("wa"));
        assert!(wa.refused > 0, "seed {seed}: wa was never refused");
        // Its timestamped writes (last-writer-wins values, maps holding
        // them, deletes) were all refused; the rest were not.
        for a in &wa.acked {
            let stamped = a.deleted.is_some()
                || a.witness
                    .value()
                    .and_then(LatticeValue::latest_wall_ms)
                    .is_some();
            assert!(
                !stamped,
                "seed {seed}: wa's write 15 s ahead was acknowledged: {:?}",
                a.witness
            );
        }
        assert!(
            !wa.acked.is_empty(),
            "seed {seed}: wa's untimed writes were refused too"
        );
        for w in ["wb", "wc"] {
            assert_eq!(c.writer(&Address::from(w)).refused, 0, "seed {seed}: {w}");
        }
        // No key holds wa's future: every timestamp held is one the other
        // writers made.
        for (addr, host) in c.sim.roles() {
            let Host::Worker(w) = host else { continue };
            for (key, _) in &Workload::every_kind().keys {
                let wall = w
                    .get_state(key)
                    .and_then(|s| s.value())
                    .and_then(LatticeValue::latest_wall_ms);
                assert!(
                    wall.is_none_or(|ms| ms < c.sim.now().as_millis()),
                    "seed {seed}: {addr} holds `{key}` stamped in the future"
                );
            }
        }
    }
}

#[test]
fn short_pauses_of_a_node_the_router_and_a_writer_lose_nothing() {
    for seed in seeds().into_iter().take(FEWER_SEEDS) {
        let mut c = cluster_of(seed, 3, 3, Ack::Replicas(2), 60, |_| Workload::every_kind());
        c.sim.run_for(Duration::from_millis(2_030));
        let paused = 1 + seed % 3;
        let (router, wa) = (c.router.clone(), Address::from("wa"));
        let held = c.sim.stats().held;
        for t in threads(paused) {
            c.sim.pause(&t);
        }
        c.sim.pause(&wa);
        c.sim.run_for(Duration::from_millis(300));
        let held_then = c.sim.stats().held;
        assert!(held_then > held, "seed {seed}: nothing reached the paused");
        c.sim.pause(&router);
        c.sim.run_for(Duration::from_millis(700));
        for t in threads(paused) {
            c.sim.resume(&t);
        }
        c.sim.resume(&wa);
        c.sim.run_for(Duration::from_millis(500));
        assert!(
            c.sim.stats().held > held_then,
            "seed {seed}: nothing reached the paused router"
        );
        c.sim.resume(&router);
        // Each pause was shorter than the failure timeout: nobody was
        // declared failed.
        let member = c.router().cluster().member(NodeId(paused)).cloned();
        assert!(
            member.is_some_and(|m| m.incarnation == 1 && m.status != MemberStatus::Departed),
            "seed {seed}: node {paused} was declared failed"
        );
        c.settle_and_check(seed);
    }
}

#[test]
fn a_router_stalled_past_the_failure_timeout_declares_no_live_node_failed_when_it_wakes() {
    for seed in seeds().into_iter().take(FEWER_SEEDS) {
        let mut c = cluster(seed, 3, 2, Ack::Replicas(2), 40);
        c.sim.run_for(Duration::from_millis(2_100));
        let router = c.router.clone();
        c.sim.pause(&router);
        // Twice the failure timeout: the nodes' heartbeats queue for it.
        c.sim.run_for(Duration::from_secs(6));
        assert!(
            c.sim.stats().held > 0,
            "seed {seed}: nothing reached the paused router"
        );
        c.sim.resume(&router);
        c.sim.run_for(Duration::from_secs(2));
        let r = c.router();
        assert_eq!(
            r.stats().failures_declared,
            0,
            "seed {seed}: the router counted its own stall against the nodes"
        );
        assert!(
            r.stats().pauses >= 1,
            "seed {seed}: the stall went unnoticed"
        );
        for id in 1..=3 {
            let m = r.cluster().member(NodeId(id)).cloned();
            assert!(
                m.is_some_and(|m| m.incarnation == 1 && m.status != MemberStatus::Departed),
                "seed {seed}: node {id} was declared failed"
            );
        }
        c.settle_and_check(seed);
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let digest = |seed| {
        let mut c = cluster(seed, 3, 2, Ack::FirstReplica, 20);
        c.sim.run_for(Duration::from_secs(4));
        c.sim.trace_digest()
    };
    assert_eq!(digest(11), digest(11));
    assert_ne!(digest(11), digest(12));
}

#[test]
fn writes_of_another_type_are_refused_with_a_type_mismatch() {
    let mut c = cluster(1, 1, 1, Ack::FirstReplica, 0);
    c.sim.run_for(Duration::from_secs(2));
    let me = Address::from("tester");
    let mut core = ClientCore::new(
        ClientConfig::default(),
        me.clone(),
        vec![c.router.clone()],
        WriterId(99),
    );
    let mut out = Outbox::default();
    let set = LatticeValue::Set(SetLattice::new([b"x".to_vec()]));
    let counter = LatticeValue::Counter(Default::default());
    let mut results = Vec::new();
    for value in [set, counter] {
        let now = c.sim.now();
        core.put(now, "typed".into(), value, &mut out);
        loop {
            for (to, msg) in out.drain() {
                c.sim.send(me.clone(), to, msg);
            }
            c.sim.run_for(Duration::from_millis(5));
            let now = c.sim.now();
            let mut done = core.tick(now, &mut out);
            for msg in c.sim.take_outside(&me) {
                done.extend(core.handle(now, msg, &mut out));
            }
            if let Some((_, r)) = done.pop() {
                results.push(r);
                break;
            }
        }
    }
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let err = results[1].clone().unwrap_err();
    assert!(err.to_string().contains("type mismatch"), "{err}");
}
