//! The KVS protocol under the seeded simulator: storage workers, a router
//! and clients in one process, through loss, duplication, reordering,
//! partitions, crashes and joins. After every run the network is healed and
//! made lossless, and the checks are the protocol's promises:
//!
//! - every owner of every key holds the same value (replicas converge);
//! - that value contains every acknowledged write (none is lost) and
//!   nothing that was never written;
//! - every client operation ended (acknowledged or failed), none hangs.
//!
//! `SQUALL_SIM_SEED=<n>` runs one seed only, to replay a failure; the
//! failure message names the seed and dumps the trace's tail.

use anna::client::{ClientConfig, ClientCore, OpId, OpOutput};
use anna::cluster::ReplicationFactor;
use anna::kvs::{StorageWorker, WorkerConfig};
use anna::lattice::{LatticeValue, SetLattice, WriterId};
use anna::protocol::{Ack, Address, Membership, Message, NodeId, NodeInfo};
use anna::role::{Input, Outbox, Role};
use anna::router::{Router, RouterConfig};
use anna::sim::{Sim, SimConfig};
use anna::time::Time;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Seeds per scenario in CI.
const SEEDS: u64 = 500;

/// A client that writes unique set elements to a few keys, with a bounded
/// number in flight, and remembers which writes were acknowledged. Every
/// other write it also reads back a key it wrote to, and records a read
/// that misses one of its own writes acknowledged before the read began:
/// its session makes every replica's answer wait for them, whatever the
/// replication and ring changes (a read that cannot get them fails).
struct Writer {
    core: ClientCore,
    start: Time,
    next_write: Time,
    writes_left: u32,
    keys: u32,
    sent: u32,
    in_flight: BTreeMap<OpId, (String, Vec<u8>)>,
    acked: BTreeMap<String, BTreeSet<Vec<u8>>>,
    attempted: BTreeMap<String, BTreeSet<Vec<u8>>>,
    failed: u32,
    reads: BTreeMap<OpId, (String, BTreeSet<Vec<u8>>)>,
    stale_reads: Vec<String>,
}

impl Writer {
    fn new(me: &str, router: &Address, writes: u32, keys: u32, ack: Ack, start: Time) -> Self {
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
            keys,
            sent: 0,
            in_flight: BTreeMap::new(),
            acked: BTreeMap::new(),
            attempted: BTreeMap::new(),
            failed: 0,
            reads: BTreeMap::new(),
            stale_reads: Vec::new(),
        }
    }

    fn settle(&mut self, done: Vec<(OpId, Result<OpOutput, anna::client::ClientError>)>) {
        for (id, result) in done {
            if let Some((key, expected)) = self.reads.remove(&id) {
                let held: BTreeSet<Vec<u8>> = match result {
                    Ok(OpOutput::Value(Some(LatticeValue::Set(s)))) => {
                        s.reveal().iter().cloned().collect()
                    }
                    Ok(_) => BTreeSet::new(),
                    Err(_) => continue,
                };
                let missing = expected.difference(&held).count();
                if missing > 0 {
                    self.stale_reads.push(format!(
                        "read of `{key}` missed {missing} acknowledged writes (op {id:?})"
                    ));
                }
                continue;
            }
            let Some((key, element)) = self.in_flight.remove(&id) else {
                continue;
            };
            match result {
                Ok(_) => {
                    self.acked.entry(key).or_default().insert(element);
                }
                Err(_) => self.failed += 1,
            }
        }
    }

    fn finished(&self) -> bool {
        self.writes_left == 0 && self.in_flight.is_empty() && self.reads.is_empty()
    }
}

impl Role for Writer {
    fn step(&mut self, now: Time, input: Input, out: &mut Outbox) {
        match input {
            Input::Message(msg) => {
                let done = self.core.handle(now, msg, out);
                self.settle(done);
            }
            Input::Tick => {
                let done = self.core.tick(now, out);
                self.settle(done);
                if now >= self.next_write && self.writes_left > 0 && self.in_flight.len() < 4 {
                    self.writes_left -= 1;
                    self.sent += 1;
                    let key = format!("key-{}", self.sent % self.keys);
                    let element = format!("{}#{}", self.core.address(), self.sent).into_bytes();
                    let value = LatticeValue::Set(SetLattice::new([element.clone()]));
                    self.attempted
                        .entry(key.clone())
                        .or_default()
                        .insert(element.clone());
                    let id = self.core.put(now, key.clone(), value, out);
                    self.in_flight.insert(id, (key, element));
                    self.next_write = now + Duration::from_millis(3);
                    let read_key = format!("key-{}", (self.sent / 2) % self.keys);
                    if self.sent.is_multiple_of(2) {
                        if let Some(expected) = self.acked.get(&read_key).cloned() {
                            let id = self.core.get(now, read_key.clone(), out);
                            self.reads.insert(id, (read_key, expected));
                        }
                    }
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
}

impl Role for Host {
    fn step(&mut self, now: Time, input: Input, out: &mut Outbox) {
        match self {
            Host::Worker(w) => w.step(now, input, out),
            Host::Router(r) => r.step(now, input, out),
            Host::Writer(c) => c.step(now, input, out),
        }
    }

    fn next_tick(&self) -> Option<Time> {
        match self {
            Host::Worker(w) => w.next_tick(),
            Host::Router(r) => r.next_tick(),
            Host::Writer(c) => c.next_tick(),
        }
    }
}

const THREADS: usize = 2;

fn node_info(id: u64, boot: u64) -> NodeInfo {
    NodeInfo {
        id: NodeId(id),
        boot,
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
}

fn cluster(seed: u64, nodes: u64, global: u8, ack: Ack, writes: u32) -> Cluster {
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
    let start = sim.now() + Duration::from_secs(2);
    let writers: Vec<Address> = ["wa", "wb", "wc"]
        .iter()
        .map(|&a| Address::from(a))
        .collect();
    for w in &writers {
        let writer = Writer::new(w.as_str(), &router, writes, 7, ack, start);
        sim.add(w.clone(), Host::Writer(Box::new(writer)));
    }
    Cluster {
        sim,
        router,
        writers,
    }
}

impl Cluster {
    fn writer(&self, a: &Address) -> &Writer {
        match self.sim.role(a) {
            Some(Host::Writer(w)) => w,
            _ => panic!("no writer at {a}"),
        }
    }

    fn writers_done(&self) -> bool {
        self.writers.iter().all(|w| self.writer(w).finished())
    }

    /// Heals the network, waits for quiet, and checks the promises.
    fn settle_and_check(&mut self, seed: u64) {
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

        let mut acked: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
        let mut attempted: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
        for w in &self.writers {
            for (k, els) in &self.writer(w).acked {
                acked
                    .entry(k.clone())
                    .or_default()
                    .extend(els.iter().cloned());
            }
            for (k, els) in &self.writer(w).attempted {
                attempted
                    .entry(k.clone())
                    .or_default()
                    .extend(els.iter().cloned());
            }
        }
        // A run whose writes all failed would pass every check below.
        let (acked_count, attempted_count) = (
            acked.values().map(BTreeSet::len).sum::<usize>(),
            attempted.values().map(BTreeSet::len).sum::<usize>(),
        );
        assert!(
            acked_count * 2 >= attempted_count && acked_count > 0,
            "seed {seed}: only {acked_count} of {attempted_count} writes were acknowledged"
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
        let placement = match self.sim.role(&self.router) {
            Some(Host::Router(r)) => r.placement().clone(),
            _ => panic!("router gone"),
        };
        for (key, written) in &attempted {
            let owners = placement.owners(key);
            assert!(!owners.is_empty(), "seed {seed}: `{key}` has no owner");
            let mut seen: Option<BTreeSet<Vec<u8>>> = None;
            for owner in &owners {
                let Some(Host::Worker(w)) = self.sim.role(owner) else {
                    panic!("seed {seed}: owner {owner} of `{key}` is not a live worker");
                };
                let held: BTreeSet<Vec<u8>> = match w.get_state(key).and_then(|s| s.value()) {
                    Some(LatticeValue::Set(s)) => s.reveal().iter().cloned().collect(),
                    None => BTreeSet::new(),
                    Some(other) => panic!("seed {seed}: `{key}` holds {:?}", other.kind()),
                };
                let missing: Vec<_> = acked
                    .get(key)
                    .into_iter()
                    .flatten()
                    .filter(|e| !held.contains(*e))
                    .map(|e| String::from_utf8_lossy(e).into_owned())
                    .collect();
                assert!(
                    missing.is_empty(),
                    "seed {seed}: {owner} lost acknowledged writes to `{key}`: {missing:?}\n{}",
                    self.sim.trace_dump()
                );
                assert!(
                    held.is_subset(written),
                    "seed {seed}: `{key}` holds unwritten data"
                );
                if let Some(prev) = &seen {
                    assert_eq!(prev, &held, "seed {seed}: replicas of `{key}` disagree");
                }
                seen = Some(held);
            }
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
        c.sim.run_for(Duration::from_secs(2));
        c.settle_and_check(seed);
    }
}

#[test]
fn a_crashed_node_loses_no_write_acknowledged_by_two_replicas() {
    for seed in seeds() {
        let mut c = cluster(seed, 3, 3, Ack::Replicas(2), 40);
        c.sim.run_for(Duration::from_millis(2_150));
        crash_node(&mut c.sim, 1 + seed % 3);
        c.sim.run_for(Duration::from_secs(6));
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
        let process = Address::from("node3-process");
        for t in node_info(3, 0).threads {
            let leave = Membership::Leave {
                node: NodeId(3),
                reply_to: process.clone(),
            };
            c.sim.send(process.clone(), t, Message::Membership(leave));
        }
        // What `squall kvs` does on SIGTERM: wait for every thread's Left
        // (asking again if a Leave was lost), then depart.
        let mut left = BTreeMap::new();
        let deadline = c.sim.now() + Duration::from_secs(20);
        while left.len() < THREADS && c.sim.now() < deadline {
            c.sim.run_for(Duration::from_millis(200));
            for msg in c.sim.take_outside(&process) {
                if let Message::Membership(Membership::Left {
                    thread,
                    incarnation,
                    ..
                }) = msg
                {
                    left.insert(thread, incarnation);
                }
            }
            for (t, addr) in node_info(3, 0).threads.into_iter().enumerate() {
                if !left.contains_key(&(t as u32)) {
                    let leave = Membership::Leave {
                        node: NodeId(3),
                        reply_to: process.clone(),
                    };
                    c.sim
                        .send(process.clone(), addr, Message::Membership(leave));
                }
            }
        }
        assert_eq!(
            left.len(),
            THREADS,
            "seed {seed}: node 3 never finished its handoff"
        );
        let incarnation = *left.values().next().unwrap();
        let depart = Membership::Depart {
            node: NodeId(3),
            incarnation,
        };
        c.sim.send(
            process.clone(),
            c.router.clone(),
            Message::Membership(depart),
        );
        c.sim.run_for(Duration::from_millis(500));
        crash_node(&mut c.sim, 3);
        c.settle_and_check(seed);
        let Some(Host::Router(r)) = c.sim.role(&c.router) else {
            panic!()
        };
        assert!(
            !r.placement().nodes().contains_key(&NodeId(3)),
            "seed {seed}"
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
