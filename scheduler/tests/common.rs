//! Helpers shared by the scheduler's tests: a scheduler driven directly with
//! explicit times, synthetic reports and calls, and the KVS double
//! (`anna::sim::KvsDouble`) answering the embedded client.

#![allow(dead_code)]

use anna::lattice::{LatticeValue, Lww, Timestamp, WriterId};
use anna::protocol::compute::{
    dag_key, encode_value, CacheReport, CallArgs, CallId, CallRequest, CallResult, Dag,
    DagCallRequest, ExecutorReport, Plan, ReplyTo,
};
use anna::protocol::{Address, Message};
use anna::role::{Input, Outbox, Role};
use anna::sim::KvsDouble;
use anna::time::Time;
use squall_scheduler::{Scheduler, SchedulerConfig};

pub const ROUTER: &str = "router";
pub const KVS: &str = "kvs-0";
pub const CLIENT: &str = "client";

pub fn scheduler(config: SchedulerConfig) -> Scheduler {
    Scheduler::new(
        config,
        Address::from("scheduler"),
        vec![Address::from(ROUTER)],
        WriterId(7),
    )
}

pub fn at(ms: u64) -> Time {
    Time::from_micros(ms * 1000)
}

pub fn step(s: &mut Scheduler, now_ms: u64, msg: Message) -> Vec<(Address, Message)> {
    let mut out = Outbox::default();
    s.step(at(now_ms), Input::Message(msg), &mut out);
    out.drain().collect()
}

pub fn tick(s: &mut Scheduler, now_ms: u64) -> Vec<(Address, Message)> {
    let mut out = Outbox::default();
    s.step(at(now_ms), Input::Tick, &mut out);
    out.drain().collect()
}

pub fn report(executor: &str, node: &str, busy_permille: u16, warm: &[&str]) -> Message {
    report_of_boot(executor, node, busy_permille, warm, 1)
}

/// A report from the executor process started `boot`.
pub fn report_of_boot(
    executor: &str,
    node: &str,
    busy_permille: u16,
    warm: &[&str],
    boot: u64,
) -> Message {
    Message::ExecutorReport(ExecutorReport {
        executor: Address::from(executor),
        node: node.to_string(),
        cache: Address::from(format!("cache-{node}").as_str()),
        busy_permille,
        queue: 0,
        warm: warm.iter().map(|w| w.to_string()).collect(),
        calls: Vec::new(),
        boot,
        errors: Vec::new(),
        ..ExecutorReport::default()
    })
}

pub fn cache(node: &str, keys: &[(&str, u64)]) -> Message {
    Message::CacheReport(CacheReport {
        node: node.to_string(),
        cache: Address::from(format!("cache-{node}").as_str()),
        keys: keys.iter().map(|(k, s)| (k.to_string(), *s)).collect(),
        hits: 0,
        misses: 0,
        kvs: Default::default(),
    })
}

pub fn id(seq: u64) -> CallId {
    CallId { caller: 1, seq }
}

pub fn reply() -> ReplyTo {
    ReplyTo {
        address: Address::from(CLIENT),
        response_key: None,
    }
}

pub fn args(refs: &[&str]) -> CallArgs {
    CallArgs {
        payload: b"args".to_vec(),
        refs: refs.iter().map(|r| r.to_string()).collect(),
    }
}

pub fn call(seq: u64, function: &str, refs: &[&str], timeout_ms: u32) -> Message {
    Message::Call(CallRequest {
        id: id(seq),
        function: function.to_string(),
        args: args(refs),
        reply: reply(),
        timeout_ms,
        session: Default::default(),
        consistency: Default::default(),
        instance: None,
        trace: false,
    })
}

pub fn call_dag(seq: u64, dag: &str, fn_args: &[(&str, CallArgs)]) -> Message {
    Message::CallDag(DagCallRequest {
        id: id(seq),
        dag: dag.to_string(),
        args: fn_args
            .iter()
            .map(|(n, a)| (n.to_string(), a.clone()))
            .collect(),
        reply: reply(),
        timeout_ms: 10_000,
        session: Default::default(),
        consistency: Default::default(),
        trace: false,
    })
}

pub fn done(seq: u64, attempt: u32, function: u16, executor: &str, failed: bool) -> Message {
    Message::CallDone {
        id: id(seq),
        attempt,
        function,
        executor: Address::from(executor),
        failed,
    }
}

pub fn dag(name: &str, functions: &[&str], connections: &[(&str, &str)]) -> Dag {
    Dag {
        name: name.to_string(),
        functions: functions.iter().map(|f| f.to_string()).collect(),
        connections: connections
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    }
}

/// Every `Invoke` sent: (executor, plan, function).
pub fn invokes(sent: &[(Address, Message)]) -> Vec<(Address, Plan, u16)> {
    sent.iter()
        .filter_map(|(to, m)| match m {
            Message::Invoke { plan, function } => Some((to.clone(), (**plan).clone(), *function)),
            _ => None,
        })
        .collect()
}

/// Every `CallResult` sent to the client.
pub fn results(sent: &[(Address, Message)]) -> Vec<CallResult> {
    sent.iter()
        .filter_map(|(to, m)| match m {
            Message::CallResult(r) if to.as_str() == CLIENT => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// The one error of the results sent, with its kind and message.
pub fn error(sent: &[(Address, Message)]) -> anna::protocol::compute::CallError {
    let results = results(sent);
    assert_eq!(results.len(), 1, "expected one result, sent: {sent:?}");
    match &results[0].outcome {
        anna::protocol::compute::CallOutcome::Error(e) => e.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// The KVS the scheduler's client reads: one storage thread, [`KVS`],
/// behind [`ROUTER`], holding nothing yet.
pub fn kvs() -> KvsDouble {
    KvsDouble::new(KVS).routed_by(ROUTER)
}

/// A KVS holding `d` as the definition of the DAG of its name, registered
/// at wall-clock millisecond `ms`.
pub fn kvs_with_dag_at(d: &Dag, ms: u64) -> KvsDouble {
    let mut kvs = kvs();
    kvs.put(&dag_key(&d.name), lww_at(ms, encode_value(d)));
    kvs
}

/// A KVS holding `d`, registered at millisecond 1.
pub fn kvs_with_dag(d: &Dag) -> KvsDouble {
    kvs_with_dag_at(d, 1)
}

/// Lets `kvs` answer what the scheduler's KVS client sent in `sent` (a
/// status request to the router, reads of the storage thread) until it
/// sends no more, and returns everything else the scheduler sent
/// meanwhile.
pub fn serve_kvs(
    s: &mut Scheduler,
    now_ms: u64,
    sent: Vec<(Address, Message)>,
    kvs: &mut KvsDouble,
) -> Vec<(Address, Message)> {
    kvs.serve(s, at(now_ms), sent)
}

/// Steps `msg` (a call) at `now_ms`, an empty KVS answering the read of
/// the function's traffic split that a call of a plain name starts (no
/// split: the call runs the current version); returns everything else the
/// scheduler sent.
pub fn call_served(s: &mut Scheduler, now_ms: u64, msg: Message) -> Vec<(Address, Message)> {
    let sent = step(s, now_ms, msg);
    serve_kvs(s, now_ms, sent, &mut kvs())
}

/// A last-writer-wins value written at `ms` by writer 1.
pub fn lww_at(ms: u64, bytes: Vec<u8>) -> LatticeValue {
    LatticeValue::Lww(Lww::new(
        Timestamp {
            wall_ms: ms,
            logical: 0,
            writer: WriterId(1),
        },
        bytes,
    ))
}
