//! The compute tier under the seeded simulator: storage nodes, a router,
//! two compute nodes (a cache and an executor each, the executor's
//! runtime scripted: a function returns its own code), a scheduler and a
//! client, all real state machines, through loss, duplication, reordering
//! and a crashed executor.
//!
//! The client registers a function again and again (or deletes it) and
//! calls it at once. The promise checked: a call sees what its caller
//! wrote — every answer that arrives is the code just registered, or
//! `UnknownFunction` right after a delete; never older code, never a
//! spurious `UnknownFunction`. Lost answers (the network dropped them) are
//! allowed, a wrong one is not; most calls must complete.
//!
//! `SQUALL_SIM_SEED=<n>` runs one seed only, to replay a failure.

use anna::client::{ClientCore, ClientError, OpId, OpOutput};
use anna::cluster::ReplicationFactor;
use anna::kvs::{StorageWorker, WorkerConfig};
use anna::lattice::{LatticeValue, Lww, WriterId};
use anna::protocol::compute::{
    encode_value, function_key, CallArgs, CallErrorKind, CallId, CallOutcome, CallRequest,
    Consistency, FunctionCode, ReplyTo, Runtime, ValueKind,
};
use anna::protocol::{Address, Message, NodeId, NodeInfo};
use anna::role::{Input, Outbox, Role};
use anna::router::{Router, RouterConfig};
use anna::sim::{Sim, SimConfig};
use anna::time::Time;
use squall_cache::{Cache, CacheConfig};
use squall_executor::job::Effects;
use squall_executor::{ExecutorConfig, ExecutorCore, Identity, JobDone};
use squall_scheduler::{Scheduler, SchedulerConfig};
use std::time::Duration;

/// Seeds per scenario in CI.
const SEEDS: u64 = 200;
const REPLICATION: ReplicationFactor = ReplicationFactor {
    global: 2,
    local: 1,
};

fn seeds() -> Vec<u64> {
    match std::env::var("SQUALL_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SQUALL_SIM_SEED is a number")],
        Err(_) => (0..SEEDS).collect(),
    }
}

fn addr(s: &str) -> Address {
    Address::from(s)
}

/// An executor whose runtime is a script: every function returns its own
/// code's bytes, at once.
struct ScriptedExecutor {
    core: ExecutorCore,
}

impl Role for ScriptedExecutor {
    fn step(&mut self, now: Time, input: Input, out: &mut Outbox) {
        self.core.step(now, input, out);
        while let Some(job) = self.core.next_job(now, out) {
            let done = JobDone {
                seq: job.seq,
                outcome: Ok(job.code.code.clone()),
                effects: Effects::default(),
            };
            self.core.job_done(now, done, out);
        }
    }

    fn next_tick(&self) -> Option<Time> {
        self.core.next_tick()
    }
}

/// What the client expects its call to answer.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Code(u8),
    Unknown,
}

enum Phase {
    Idle(Time),
    Writing(OpId, Expect),
    Calling(u64, Expect, Time),
}

/// Registers `f` (its code one byte: the round) or deletes it, then calls
/// it at once, round after round.
struct Caller {
    core: ClientCore,
    me: Address,
    scheduler: Address,
    round: u64,
    rounds: u64,
    phase: Phase,
    completed: u64,
    lost: u64,
    wrong: Vec<String>,
}

impl Caller {
    fn code(round: u64) -> Vec<u8> {
        let code = FunctionCode {
            runtime: Runtime::Python,
            code: vec![round as u8],
            is_class: false,
            export: String::new(),
            result: ValueKind::Bytes,
        };
        encode_value(&code)
    }

    fn next_round(&mut self, now: Time) {
        self.round += 1;
        self.phase = Phase::Idle(now + Duration::from_millis(1));
    }

    fn settle(
        &mut self,
        now: Time,
        done: Vec<(OpId, Result<OpOutput, ClientError>)>,
        out: &mut Outbox,
    ) {
        for (op, result) in done {
            let Phase::Writing(writing, expect) = self.phase else {
                continue;
            };
            if op != writing {
                continue;
            }
            if result.is_err() {
                self.lost += 1;
                self.next_round(now);
                continue;
            }
            let call = CallRequest {
                id: CallId {
                    caller: 1,
                    seq: self.round,
                },
                function: "f".to_string(),
                args: CallArgs::default(),
                reply: ReplyTo {
                    address: self.me.clone(),
                    response_key: None,
                },
                timeout_ms: 3_000,
                session: self.core.session(),
                consistency: Consistency::Lww,
            };
            out.send(self.scheduler.clone(), Message::Call(call));
            self.phase = Phase::Calling(self.round, expect, now + Duration::from_secs(4));
        }
    }

    fn answered(&mut self, now: Time, seq: u64, outcome: CallOutcome) {
        let Phase::Calling(calling, expect, _) = self.phase else {
            return;
        };
        if seq != calling {
            return;
        }
        match (expect, outcome) {
            (Expect::Code(v), CallOutcome::Value(code)) if code == vec![v] => self.completed += 1,
            (Expect::Unknown, CallOutcome::Error(e))
                if e.kind == CallErrorKind::UnknownFunction =>
            {
                self.completed += 1
            }
            (_, CallOutcome::Error(e))
                if matches!(e.kind, CallErrorKind::Timeout | CallErrorKind::ExecutorDied) =>
            {
                self.lost += 1
            }
            (expect, got) => self.wrong.push(format!(
                "round {}: expected {expect:?}, the call answered {got:?}",
                self.round
            )),
        }
        self.next_round(now);
    }
}

impl Role for Caller {
    fn step(&mut self, now: Time, input: Input, out: &mut Outbox) {
        match input {
            Input::Message(Message::CallResult(r)) => self.answered(now, r.id.seq, r.outcome),
            Input::Message(msg) => {
                let done = self.core.handle(now, msg, out);
                self.settle(now, done, out);
            }
            Input::Tick => {
                let done = self.core.tick(now, out);
                self.settle(now, done, out);
                match self.phase {
                    Phase::Idle(at) if now >= at && self.round < self.rounds => {
                        let key = function_key("f");
                        let (op, expect) = if self.round % 4 == 3 {
                            (self.core.delete(now, key, out), Expect::Unknown)
                        } else {
                            let at = self.core.timestamp(now);
                            let value = LatticeValue::Lww(Lww::new(at, Self::code(self.round)));
                            (
                                self.core.put(now, key, value, out),
                                Expect::Code(self.round as u8),
                            )
                        };
                        self.phase = Phase::Writing(op, expect);
                    }
                    Phase::Calling(_, _, deadline) if now >= deadline => {
                        self.lost += 1;
                        self.next_round(now);
                    }
                    _ => {}
                }
            }
        }
    }

    fn next_tick(&self) -> Option<Time> {
        let own = match self.phase {
            Phase::Idle(at) if self.round < self.rounds => Some(at),
            Phase::Calling(_, _, deadline) => Some(deadline),
            _ => None,
        };
        [own, self.core.next_tick()].into_iter().flatten().min()
    }
}

enum Host {
    Worker(Box<StorageWorker>),
    Router(Box<Router>),
    Cache(Box<Cache>),
    Scheduler(Box<Scheduler>),
    Executor(Box<ScriptedExecutor>),
    Caller(Box<Caller>),
}

impl Role for Host {
    fn step(&mut self, now: Time, input: Input, out: &mut Outbox) {
        match self {
            Host::Worker(r) => r.step(now, input, out),
            Host::Router(r) => r.step(now, input, out),
            Host::Cache(r) => r.step(now, input, out),
            Host::Scheduler(r) => r.step(now, input, out),
            Host::Executor(r) => r.step(now, input, out),
            Host::Caller(r) => r.step(now, input, out),
        }
    }

    fn next_tick(&self) -> Option<Time> {
        match self {
            Host::Worker(r) => r.next_tick(),
            Host::Router(r) => r.next_tick(),
            Host::Cache(r) => r.next_tick(),
            Host::Scheduler(r) => r.next_tick(),
            Host::Executor(r) => r.next_tick(),
            Host::Caller(r) => r.next_tick(),
        }
    }
}

fn executor(sim: &Sim<Host>, node: &str) -> ScriptedExecutor {
    let id = Identity {
        address: addr(&format!("exec-{node}")),
        node: node.to_string(),
        cache: addr(&format!("cache-{node}")),
        schedulers: vec![addr("sched")],
        boot: sim.now().as_micros(),
    };
    ScriptedExecutor {
        core: ExecutorCore::new(ExecutorConfig::default(), id, sim.now()),
    }
}

/// The cluster, and a caller of `rounds` rounds starting after 2 s.
fn cluster(seed: u64, rounds: u64) -> Sim<Host> {
    let mut sim: Sim<Host> = SimConfig::new(seed)
        .drop_rate(0.05)
        .duplicate_rate(0.05)
        .latency(Duration::from_micros(50), Duration::from_millis(3))
        .build()
        .expect("valid simulator settings");
    let router = addr("router");
    let routers = vec![router.clone()];
    let config = RouterConfig {
        replication: REPLICATION,
        ..RouterConfig::default()
    };
    sim.add(
        router.clone(),
        Host::Router(Box::new(Router::new(config, router.clone(), vec![]))),
    );
    for id in 1..=3u64 {
        let info = NodeInfo {
            id: NodeId(id),
            boot: 1,
            threads: vec![addr(&format!("node{id}"))],
        };
        let config = WorkerConfig {
            replication: REPLICATION,
            ..WorkerConfig::default()
        };
        let w = StorageWorker::new(config, info.clone(), 0, routers.clone());
        sim.add(info.threads[0].clone(), Host::Worker(Box::new(w)));
    }
    let scheduler = Scheduler::new(
        SchedulerConfig::default(),
        addr("sched"),
        routers.clone(),
        WriterId(90),
    );
    sim.add(addr("sched"), Host::Scheduler(Box::new(scheduler)));
    for (i, node) in ["a", "b"].into_iter().enumerate() {
        let me = addr(&format!("cache-{node}"));
        let cache = Cache::new(
            CacheConfig::default(),
            node.to_string(),
            me.clone(),
            routers.clone(),
            vec![addr("sched")],
            WriterId(80 + i as u64),
        );
        sim.add(me, Host::Cache(Box::new(cache)));
        let e = executor(&sim, node);
        sim.add(addr(&format!("exec-{node}")), Host::Executor(Box::new(e)));
    }
    let caller = Caller {
        core: ClientCore::new(Default::default(), addr("client"), routers, WriterId(1)),
        me: addr("client"),
        scheduler: addr("sched"),
        round: 0,
        rounds,
        phase: Phase::Idle(sim.now() + Duration::from_secs(2)),
        completed: 0,
        lost: 0,
        wrong: Vec::new(),
    };
    sim.add(addr("client"), Host::Caller(Box::new(caller)));
    sim
}

fn caller(sim: &Sim<Host>) -> &Caller {
    match sim.role(&addr("client")) {
        Some(Host::Caller(c)) => c,
        _ => panic!("no caller"),
    }
}

fn check(sim: &mut Sim<Host>, seed: u64, rounds: u64) {
    let done = sim.run_until(|s| caller(s).round >= rounds, Duration::from_secs(120));
    let c = caller(sim);
    assert!(
        done,
        "seed {seed}: only {} of {rounds} rounds ended\n{}",
        c.round,
        sim.trace_dump()
    );
    assert!(
        c.wrong.is_empty(),
        "seed {seed}: {:?}\n{}",
        c.wrong,
        sim.trace_dump()
    );
    assert!(
        c.completed * 2 >= rounds,
        "seed {seed}: {} of {rounds} calls completed, {} lost",
        c.completed,
        c.lost
    );
}

#[test]
fn a_call_right_after_a_register_or_delete_sees_it_under_loss_duplication_and_reordering() {
    let rounds = 20;
    for seed in seeds() {
        let mut sim = cluster(seed, rounds);
        check(&mut sim, seed, rounds);
    }
}

#[test]
fn a_call_sees_its_callers_register_while_an_executor_crashes_and_restarts() {
    let rounds = 20;
    for seed in seeds() {
        let mut sim = cluster(seed, rounds);
        // Mid-run, executor a crashes; it comes back (empty: nothing warm)
        // a second later, as its supervisor would start it.
        sim.run_for(Duration::from_millis(2_200));
        sim.crash(&addr("exec-a"));
        sim.run_for(Duration::from_secs(1));
        let e = executor(&sim, "a");
        sim.add(addr("exec-a"), Host::Executor(Box::new(e)));
        check(&mut sim, seed, rounds);
    }
}
