use super::*;
use crate::job::{Job, JobDone};
use anna::lattice::{KeyState, LatticeValue, Lww, Timestamp};
use anna::protocol::compute::{
    decode_value, encode_value, function_key, CallArgs, CallErrorKind, CallId, CallOutcome,
    FunctionCode, Plan, PlannedFunction, ReplyTo, Runtime,
};
use anna::protocol::{Gossip, KeyOp};
use anna::sim::KvsDouble;

mod coroutines;
mod prewarm;
mod sessions;

const ME: &str = "tcp://exec:1";
const CACHE: &str = "tcp://cache:1";
const SCHED: &str = "tcp://sched:1";
const CALLER: &str = "tcp://caller:1";
const T0: Time = Time(1_000_000_000);

fn core() -> ExecutorCore {
    core_with(ExecutorConfig::default())
}

fn core_with(config: ExecutorConfig) -> ExecutorCore {
    let id = Identity {
        address: ME.into(),
        node: "n1".into(),
        cache: CACHE.into(),
        schedulers: vec![SCHED.into()],
        boot: 1,
    };
    ExecutorCore::new(config, id, T0)
}

fn planned(
    name: &str,
    upstream: Vec<u16>,
    downstream: Vec<u16>,
    executor: &str,
) -> PlannedFunction {
    PlannedFunction {
        name: name.into(),
        executor: executor.into(),
        args: CallArgs {
            payload: name.as_bytes().to_vec(),
            refs: vec![],
        },
        upstream,
        downstream,
    }
}

fn plan(functions: Vec<PlannedFunction>, response_key: Option<&str>) -> Box<Plan> {
    Box::new(Plan {
        id: CallId { caller: 7, seq: 1 },
        dag: None,
        functions,
        reply: ReplyTo {
            address: CALLER.into(),
            response_key: response_key.map(str::to_string),
        },
        deadline_ms: T0.as_millis() + 10_000,
        attempt: 0,
        scheduler: SCHED.into(),
        session: Default::default(),
        written: Default::default(),
        consistency: Default::default(),
        pinned: Default::default(),
        output: Vec::new(),
        instance: None,
        trace: None,
    })
}

fn single(name: &str) -> Box<Plan> {
    plan(vec![planned(name, vec![], vec![], ME)], None)
}

fn code(tag: u8) -> FunctionCode {
    FunctionCode {
        runtime: Runtime::Python,
        code: vec![tag],
        is_class: false,
        export: String::new(),
        result: anna::protocol::compute::ValueKind::Bytes,
    }
}

fn step(core: &mut ExecutorCore, now: Time, msg: Message) -> Vec<(Address, Message)> {
    let mut out = Outbox::default();
    core.step(now, Input::Message(msg), &mut out);
    out.drain().collect()
}

/// Lets the node's cache answer the code fetches in `sent`, holding
/// `held` under every key fetched (nothing if `None`); returns what the
/// core sends on the answers.
fn answer_fetch(
    core: &mut ExecutorCore,
    sent: &[(Address, Message)],
    held: Option<KeyState>,
) -> Vec<(Address, Message)> {
    let fetches: Vec<_> = (sent.iter())
        .filter(|(_, m)| matches!(m, Message::KvsRequest(_)))
        .cloned()
        .collect();
    assert!(!fetches.is_empty(), "a fetch: {sent:?}");
    let mut cache = KvsDouble::new(CACHE);
    for (_, fetch) in &fetches {
        let (Message::KvsRequest(req), Some(state)) = (fetch, &held) else {
            continue;
        };
        for op in &req.ops {
            cache.put_state(op.key(), state.clone());
        }
    }
    let after = cache.serve(core, T0, fetches.clone());
    assert_eq!(
        cache.requests().len(),
        fetches.len(),
        "every fetch goes to the node's cache: {fetches:?}"
    );
    after
}

/// The cache's state of `code`, registered.
fn found(code: &FunctionCode) -> Option<KeyState> {
    let lww = Lww::new(Timestamp::default(), encode_value(code));
    Some(KeyState::from_value(LatticeValue::Lww(lww)))
}

fn next_job(core: &mut ExecutorCore) -> Option<Job> {
    let mut out = Outbox::default();
    let job = core.next_job(T0, &mut out);
    assert!(out.is_empty());
    job
}

fn finish(
    core: &mut ExecutorCore,
    job: &Job,
    outcome: Result<Vec<u8>, anna::protocol::compute::CallError>,
) -> Vec<(Address, Message)> {
    finish_writing(core, job, outcome, anna::protocol::Session::default())
}

/// Finishes `job` as a function that wrote `written`.
fn finish_writing(
    core: &mut ExecutorCore,
    job: &Job,
    outcome: Result<Vec<u8>, anna::protocol::compute::CallError>,
    written: anna::protocol::Session,
) -> Vec<(Address, Message)> {
    let mut out = Outbox::default();
    let done = JobDone {
        seq: job.seq,
        outcome,
        effects: crate::job::Effects {
            written,
            ..Default::default()
        },
    };
    core.job_done(T0, done, &mut out);
    out.drain().collect()
}

fn warm_up(core: &mut ExecutorCore, name: &str) -> Job {
    let job = invoke_and_fetch(core, single(name));
    finish(core, &job, Ok(vec![]));
    job
}

/// Invokes function 0 of `plan`, answers its code fetch, and returns the
/// job the worker gets.
fn invoke_and_fetch(core: &mut ExecutorCore, plan: Box<Plan>) -> Job {
    let sent = step(core, T0, Message::Invoke { plan, function: 0 });
    answer_fetch(core, &sent, found(&code(1)));
    next_job(core).expect("a job")
}

#[test]
fn an_invoke_fetches_the_code_from_the_cache_then_runs_and_answers_the_caller() {
    let mut core = core();
    let sent = step(
        &mut core,
        T0,
        Message::Invoke {
            plan: single("f"),
            function: 0,
        },
    );
    let Some((_, Message::KvsRequest(req))) = sent.first() else {
        panic!("{sent:?}")
    };
    assert_eq!(
        req.ops,
        vec![KeyOp::ReadState {
            key: function_key("f"),
            at_least: None,
        }]
    );
    let after = answer_fetch(&mut core, &sent, found(&code(1)));
    assert!(
        matches!(&after[..], [(to, Message::Subscribe(s))] if to.as_str() == CACHE && s.keys == vec![function_key("f")] && s.subscriber.as_str() == ME)
    );
    let job = next_job(&mut core).unwrap();
    assert_eq!(
        (job.function.as_str(), job.payload.as_slice()),
        ("f", &b"f"[..])
    );
    assert_eq!(job.env.peers, vec![("f".to_string(), Address::from(ME))]);
    assert!(next_job(&mut core).is_none(), "nothing else queued");
    let sent = finish(&mut core, &job, Ok(b"42".to_vec()));
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].0.as_str(), CALLER);
    assert!(
        matches!(&sent[0].1, Message::CallResult(r) if r.outcome == CallOutcome::Value(b"42".to_vec()))
    );
    assert_eq!(sent[1].0.as_str(), SCHED);
    assert!(
        matches!(&sent[1].1, Message::CallDone { failed: false, function: 0, executor, .. } if executor.as_str() == ME)
    );
}

#[test]
fn a_warm_function_is_reused_without_a_fetch() {
    let mut core = core();
    let first = warm_up(&mut core, "f");
    let mut second = single("f");
    second.id.seq = 2;
    let sent = step(
        &mut core,
        T0,
        Message::Invoke {
            plan: second,
            function: 0,
        },
    );
    assert!(sent.is_empty(), "no fetch: {sent:?}");
    let job = next_job(&mut core).unwrap();
    assert_eq!(job.generation, first.generation);
    assert_eq!(core.warm_functions(), vec!["f".to_string()]);
}

#[test]
fn an_unknown_function_fails_the_call_with_unknown_function() {
    let mut core = core();
    let sent = step(
        &mut core,
        T0,
        Message::Invoke {
            plan: single("nope"),
            function: 0,
        },
    );
    let sent = answer_fetch(&mut core, &sent, None);
    let Message::CallResult(result) = &sent[0].1 else {
        panic!("{sent:?}")
    };
    let CallOutcome::Error(e) = &result.outcome else {
        panic!()
    };
    assert_eq!(e.kind, CallErrorKind::UnknownFunction);
    assert!(matches!(&sent[1].1, Message::CallDone { failed: true, .. }));
    assert!(next_job(&mut core).is_none());
}

#[test]
fn bytes_that_are_not_a_function_record_fail_with_bad_function() {
    let mut core = core();
    let sent = step(
        &mut core,
        T0,
        Message::Invoke {
            plan: single("f"),
            function: 0,
        },
    );
    let garbage = Some(KeyState::from_value(LatticeValue::Lww(Lww::new(
        Timestamp::default(),
        vec![0xff; 3],
    ))));
    let sent = answer_fetch(&mut core, &sent, garbage);
    let Message::CallResult(result) = &sent[0].1 else {
        panic!("{sent:?}")
    };
    assert!(
        matches!(&result.outcome, CallOutcome::Error(e) if e.kind == CallErrorKind::BadFunction)
    );
}

#[test]
fn a_gossip_of_the_function_key_drops_the_warm_function_and_the_next_call_refetches() {
    let mut core = core();
    let first = warm_up(&mut core, "f");
    let gossip = Gossip {
        from: CACHE.into(),
        entries: vec![(function_key("f"), KeyState::default())],
        ack: None,
    };
    step(&mut core, T0, Message::Gossip(gossip));
    assert!(core.warm_functions().is_empty());
    let mut again = single("f");
    again.id.seq = 2;
    let sent = step(
        &mut core,
        T0,
        Message::Invoke {
            plan: again,
            function: 0,
        },
    );
    answer_fetch(&mut core, &sent, found(&code(2)));
    let job = next_job(&mut core).unwrap();
    assert_eq!(job.code.code, vec![2]);
    assert_ne!(job.generation, first.generation);
    assert_eq!(
        job.evict,
        vec!["f".to_string()],
        "the worker unloads the old code"
    );
}

#[test]
fn warm_functions_are_bounded_by_bytes_least_recently_used_out() {
    let config = ExecutorConfig {
        max_warm_bytes: 2,
        ..ExecutorConfig::default()
    };
    let mut core = core_with(config);
    for (seq, name) in [(1, "f"), (2, "g"), (3, "h")] {
        let mut plan = single(name);
        plan.id.seq = seq;
        let sent = step(&mut core, T0, Message::Invoke { plan, function: 0 });
        answer_fetch(&mut core, &sent, found(&code(seq as u8)));
        let job = next_job(&mut core).expect("a job");
        finish(&mut core, &job, Ok(vec![]));
    }
    // One byte of code each, two bytes allowed: `f`, used least recently,
    // made room for `h`.
    let mut warm = core.warm_functions();
    warm.sort();
    assert_eq!(warm, vec!["g".to_string(), "h".to_string()]);
}

#[test]
fn a_gossip_of_unchanged_code_keeps_the_function_warm() {
    let mut core = core();
    let first = warm_up(&mut core, "f");
    let unchanged = found(&first.code).expect("a state");
    let gossip = Gossip {
        from: CACHE.into(),
        entries: vec![(function_key("f"), unchanged)],
        ack: None,
    };
    step(&mut core, T0, Message::Gossip(gossip));
    assert_eq!(core.warm_functions(), vec!["f".to_string()]);
    assert_eq!(core.counters().invalidations, 0);
}

#[test]
fn duplicate_invokes_are_ignored() {
    let mut core = core();
    warm_up(&mut core, "f");
    let sent = step(
        &mut core,
        T0,
        Message::Invoke {
            plan: single("f"),
            function: 0,
        },
    );
    assert!(sent.is_empty());
    assert!(next_job(&mut core).is_none());
    assert_eq!(core.counters().duplicates, 1);
}

fn fan_in_plan() -> Box<Plan> {
    // a, b -> c, upstream order [b, a].
    plan(
        vec![
            planned("a", vec![], vec![2], ME),
            planned("b", vec![], vec![2], ME),
            planned("c", vec![1, 0], vec![], ME),
        ],
        None,
    )
}

fn trigger(from: u16, result: &[u8]) -> Message {
    Message::Trigger {
        plan: fan_in_plan(),
        function: 2,
        from,
        result: result.to_vec(),
    }
}

#[test]
fn a_fan_in_runs_once_every_upstream_triggered_with_results_in_upstream_order() {
    let mut core = core();
    warm_up(&mut core, "c");
    assert!(step(&mut core, T0, trigger(0, b"A")).is_empty());
    assert!(next_job(&mut core).is_none(), "waits for b");
    assert!(step(&mut core, T0, trigger(0, b"A")).is_empty());
    assert_eq!(core.counters().duplicates, 1);
    step(&mut core, T0, trigger(1, b"B"));
    let job = next_job(&mut core).unwrap();
    assert_eq!(job.upstream, vec![b"B".to_vec(), b"A".to_vec()]);
    finish(&mut core, &job, Ok(vec![]));
    step(&mut core, T0, trigger(1, b"B"));
    assert!(
        next_job(&mut core).is_none(),
        "a late duplicate trigger does not run it again"
    );
}

#[test]
fn a_partial_fan_in_is_dropped_at_the_deadline() {
    let mut core = core();
    warm_up(&mut core, "c");
    step(&mut core, T0, trigger(0, b"A"));
    let mut out = Outbox::default();
    core.step(Time(T0.0 + 11_000_000), Input::Tick, &mut out);
    assert_eq!(core.counters().fanins_expired, 1);
}

#[test]
fn a_result_with_downstream_functions_triggers_their_executors() {
    let mut core = core();
    let p = plan(
        vec![
            planned("a", vec![], vec![1], ME),
            planned("b", vec![0], vec![], "tcp://other:1"),
        ],
        None,
    );
    let job = invoke_and_fetch(&mut core, p);
    let sent = finish(&mut core, &job, Ok(b"r".to_vec()));
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].0.as_str(), "tcp://other:1");
    assert!(
        matches!(&sent[0].1, Message::Trigger { function: 1, from: 0, result, .. } if result == b"r")
    );
    assert!(matches!(
        &sent[1].1,
        Message::CallDone { failed: false, .. }
    ));
}

#[test]
fn a_downstream_function_on_the_same_executor_is_triggered_without_a_message() {
    let mut core = core();
    let p = plan(
        vec![
            planned("a", vec![], vec![1], ME),
            planned("b", vec![0], vec![], ME),
        ],
        None,
    );
    let a = invoke_and_fetch(&mut core, p);
    let sent = finish(&mut core, &a, Ok(b"r".to_vec()));
    assert!(
        !sent
            .iter()
            .any(|(_, m)| matches!(m, Message::Trigger { .. })),
        "{sent:?}"
    );
    // `b` needs its code first; then it runs with `a`'s result.
    let sent: Vec<_> = sent
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::KvsRequest(_)))
        .collect();
    answer_fetch(&mut core, &sent, found(&code(2)));
    let b = next_job(&mut core).unwrap();
    assert_eq!(b.function, "b");
    assert_eq!(b.upstream, vec![b"r".to_vec()]);
}

#[test]
fn a_failure_goes_to_the_caller_at_once_and_nothing_runs_downstream() {
    let mut core = core();
    let p = plan(
        vec![
            planned("a", vec![], vec![1], ME),
            planned("b", vec![0], vec![], ME),
        ],
        None,
    );
    let job = invoke_and_fetch(&mut core, p);
    let error = call_error_for_test();
    let sent = finish(&mut core, &job, Err(error.clone()));
    assert_eq!(sent.len(), 2);
    assert!(
        matches!(&sent[0], (to, Message::CallResult(r)) if to.as_str() == CALLER && r.outcome == CallOutcome::Error(error.clone()))
    );
    assert!(matches!(&sent[1].1, Message::CallDone { failed: true, .. }));
}

fn call_error_for_test() -> anna::protocol::compute::CallError {
    crate::job::call_error(
        CallErrorKind::Remote,
        "ZeroDivisionError",
        "division by zero",
        "a",
    )
}

#[test]
fn a_response_key_gets_the_encoded_outcome_through_the_cache() {
    let mut core = core();
    let p = plan(vec![planned("f", vec![], vec![], ME)], Some("resp/1"));
    let job = invoke_and_fetch(&mut core, p);
    let sent = finish(&mut core, &job, Ok(b"v".to_vec()));
    let put = sent.iter().find_map(|(to, m)| match m {
        Message::KvsRequest(r) if to.as_str() == CACHE => Some(r.clone()),
        _ => None,
    });
    let put = put.expect("a put");
    let KeyOp::Put {
        key,
        value: LatticeValue::Lww(lww),
    } = &put.ops[0]
    else {
        panic!("{put:?}")
    };
    assert_eq!(key, "resp/1");
    assert_eq!(
        decode_value::<CallOutcome>(lww.value()),
        Some(CallOutcome::Value(b"v".to_vec()))
    );
    assert!(sent
        .iter()
        .any(|(_, m)| matches!(m, Message::CallResult(_))));
}

#[test]
fn reports_go_to_every_scheduler_each_period_with_busy_time_queue_and_calls() {
    let mut core = core();
    warm_up(&mut core, "f");
    let mut p = single("f");
    p.id.seq = 9;
    step(
        &mut core,
        T0,
        Message::Invoke {
            plan: p,
            function: 0,
        },
    );
    let _job = next_job(&mut core).unwrap();
    let due = core.next_tick().unwrap();
    assert_eq!(due, T0 + ExecutorConfig::default().report_period);
    let mut out = Outbox::default();
    core.step(due, Input::Tick, &mut out);
    let sent: Vec<_> = out.drain().collect();
    let Some((to, Message::ExecutorReport(report))) = sent.last() else {
        panic!("{sent:?}")
    };
    assert_eq!(to.as_str(), SCHED);
    assert_eq!(report.executor.as_str(), ME);
    assert_eq!(report.cache.as_str(), CACHE);
    assert_eq!(report.warm, vec!["f".to_string()]);
    assert_eq!(report.calls, vec![("f".to_string(), 1)]);
    assert_eq!(report.busy_permille, 1000, "running the whole period");
    assert!(core.next_tick().unwrap() > due);
}

#[test]
fn leaving_tells_every_scheduler_who_is_going() {
    let id = Identity {
        address: ME.into(),
        node: "n1".into(),
        cache: CACHE.into(),
        schedulers: vec![SCHED.into(), "tcp://sched:2".into()],
        boot: 1,
    };
    let core = ExecutorCore::new(ExecutorConfig::default(), id, T0);
    let mut out = Outbox::default();
    core.leave(&mut out);
    let sent: Vec<_> = out.drain().collect();
    let leaving = |to: &str| {
        (
            Address::from(to),
            Message::ExecutorLeaving {
                executor: ME.into(),
            },
        )
    };
    assert_eq!(sent, vec![leaving(SCHED), leaving("tcp://sched:2")]);
}

#[test]
fn a_function_past_its_deadline_and_grace_is_failed_and_marks_the_executor_stuck() {
    let mut core = core();
    warm_up(&mut core, "f");
    let mut p = single("f");
    p.id.seq = 3;
    step(
        &mut core,
        T0,
        Message::Invoke {
            plan: p,
            function: 0,
        },
    );
    let job = next_job(&mut core).unwrap();
    let mut out = Outbox::default();
    core.step(Time(T0.0 + 10_500_000), Input::Tick, &mut out);
    assert!(!core.is_stuck(), "within the grace");
    core.step(Time(T0.0 + 12_100_000), Input::Tick, &mut out);
    assert!(core.is_stuck());
    let sent: Vec<_> = out.drain().collect();
    assert!(sent.iter().any(|(_, m)| matches!(m, Message::CallResult(r) if matches!(&r.outcome, CallOutcome::Error(e) if e.kind == CallErrorKind::Timeout))));
    assert!(
        finish(&mut core, &job, Ok(vec![])).is_empty(),
        "a late answer is ignored"
    );
}

#[test]
fn user_messages_are_delivered_and_status_requests_answered() {
    let mut core = core();
    let msg = anna::protocol::compute::UserMessage {
        from: "tcp://peer:1".into(),
        payload: b"hi".to_vec(),
    };
    step(&mut core, T0, Message::UserMessage(msg.clone()));
    assert_eq!(core.take_deliveries().collect::<Vec<_>>(), vec![msg]);
    let sent = step(
        &mut core,
        T0,
        Message::StatusRequest {
            id: RequestId(4),
            reply_to: "tcp://ops:1".into(),
        },
    );
    let Some((_, Message::StatusReply { counters, from, .. })) = sent.first() else {
        panic!()
    };
    assert_eq!(from.as_str(), ME);
    assert!(counters.contains(&("user_messages".to_string(), 1)));
}

/// Runs `f` once more with the references `refs`, answering nothing but
/// the job; returns what was sent and the job.
fn call_with_refs(
    core: &mut ExecutorCore,
    seq: u64,
    refs: &[&str],
) -> (Vec<(Address, Message)>, Job) {
    let mut p = single("f");
    p.id.seq = seq;
    p.functions[0].args.refs = refs.iter().map(|r| r.to_string()).collect();
    let mut sent = step(
        core,
        T0,
        Message::Invoke {
            plan: p,
            function: 0,
        },
    );
    let mut out = Outbox::default();
    let job = core.next_job(T0, &mut out).expect("a job");
    sent.extend(out.drain());
    finish(core, &job, Ok(vec![]));
    (sent, job)
}

fn push(key: &str, value: LatticeValue) -> Message {
    Message::Gossip(Gossip {
        from: CACHE.into(),
        entries: vec![(key.to_string(), KeyState::from_value(value))],
        ack: None,
    })
}

fn lww_at(wall_ms: u64, bytes: &[u8]) -> LatticeValue {
    LatticeValue::Lww(Lww::new(
        Timestamp {
            wall_ms,
            ..Timestamp::default()
        },
        bytes.to_vec(),
    ))
}

#[test]
fn referenced_keys_are_watched_and_a_changed_value_goes_stale_for_the_next_job() {
    let mut core = core();
    warm_up(&mut core, "f");
    let (sent, job) = call_with_refs(&mut core, 2, &["k"]);
    assert!(
        sent.iter().any(|(to, m)| to.as_str() == CACHE
            && matches!(m, Message::Subscribe(s) if s.keys == vec!["k".to_string()])),
        "{sent:?}"
    );
    assert!(job.stale_values.is_empty());

    // The first push after subscribing drops what the runtime may have
    // read before it; the same state again drops nothing; a new one does.
    step(&mut core, T0, push("k", lww_at(1, b"a")));
    let (_, job) = call_with_refs(&mut core, 3, &["k"]);
    assert_eq!(job.stale_values, vec!["k".to_string()]);
    step(&mut core, T0, push("k", lww_at(1, b"a")));
    let (sent, job) = call_with_refs(&mut core, 4, &["k"]);
    assert!(job.stale_values.is_empty());
    assert!(
        !sent.iter().any(|(_, m)| matches!(m, Message::Subscribe(_))),
        "already watched: {sent:?}"
    );
    step(&mut core, T0, push("k", lww_at(2, b"b")));
    let (_, job) = call_with_refs(&mut core, 5, &["k"]);
    assert_eq!(job.stale_values, vec!["k".to_string()]);
    assert_eq!(core.counters().value_invalidations, 2);
    // Pushes of keys nobody referenced are ignored.
    step(&mut core, T0, push("other", lww_at(3, b"c")));
    let (_, job) = call_with_refs(&mut core, 6, &[]);
    assert!(job.stale_values.is_empty());
}

#[test]
fn watched_keys_are_bounded_and_one_dropped_goes_stale() {
    let config = ExecutorConfig {
        max_value_keys: 2,
        ..ExecutorConfig::default()
    };
    let mut core = core_with(config);
    warm_up(&mut core, "f");
    call_with_refs(&mut core, 2, &["a", "b"]);
    let (_, job) = call_with_refs(&mut core, 3, &["c"]);
    assert_eq!(job.stale_values.len(), 1, "{:?}", job.stale_values);
    assert!(["a", "b"].contains(&job.stale_values[0].as_str()));
}

/// Invokes `n` calls of warm function `name`, ids from `first` on.
fn invoke_many(core: &mut ExecutorCore, name: &str, first: u64, n: u64) {
    for seq in first..first + n {
        let mut p = single(name);
        p.id.seq = seq;
        let sent = step(
            core,
            T0,
            Message::Invoke {
                plan: p,
                function: 0,
            },
        );
        assert!(sent.is_empty(), "warm: no fetch: {sent:?}");
    }
}

/// The jobs the core hands the worker now, at `now`.
fn handed(core: &mut ExecutorCore, now: Time) -> Vec<Job> {
    let mut out = Outbox::default();
    std::iter::from_fn(|| core.next_job(now, &mut out)).collect()
}

/// Finishes the worker's jobs one by one, each `took` after the last,
/// from `now`; returns the time the last finished.
fn finish_in_turn(core: &mut ExecutorCore, jobs: &[Job], mut now: Time, took: Duration) -> Time {
    for job in jobs {
        now = now + took;
        let mut out = Outbox::default();
        let done = JobDone {
            seq: job.seq,
            outcome: Ok(vec![]),
            effects: Default::default(),
        };
        core.job_done(now, done, &mut out);
        assert!(
            out.drain().any(|(to, m)| to.as_str() == CALLER
                && matches!(m, Message::CallResult(r) if r.id.seq == job.env.call.seq)),
            "each job answers its own caller"
        );
    }
    now
}

#[test]
fn the_worker_is_handed_the_next_job_before_its_first_ends_and_more_of_them_when_they_are_short() {
    let mut core = core();
    let job = warm_up(&mut core, "f");
    assert!(job.seq > 0);
    invoke_many(&mut core, "f", 10, 40);
    // Nothing known of f's time yet: the job it runs and the next.
    let jobs = handed(&mut core, T0);
    assert_eq!(jobs.len(), MIN_HANDED);
    assert!(core.is_busy());
    // Jobs of 10 µs: the worker soon holds as many as it may.
    let mut now = T0;
    let mut most = 0;
    let mut jobs = jobs;
    while !jobs.is_empty() {
        now = finish_in_turn(&mut core, &jobs, now, Duration::from_micros(10));
        jobs = handed(&mut core, now);
        most = most.max(jobs.len());
    }
    assert_eq!(most, MAX_HANDED, "short jobs are handed ahead, to the cap");
    assert!(!core.is_busy());

    // Jobs of 5 ms: back to the job it runs and the next.
    invoke_many(&mut core, "f", 100, 40);
    let mut jobs = handed(&mut core, now);
    let mut last = 0;
    for _ in 0..20 {
        now = finish_in_turn(&mut core, &jobs[..1], now, Duration::from_millis(5));
        jobs.remove(0);
        jobs.extend(handed(&mut core, now));
        last = jobs.len();
    }
    assert_eq!(
        last, MIN_HANDED,
        "long jobs are not handed ahead beyond the next"
    );
}

#[test]
fn a_job_handed_to_the_worker_cannot_be_cancelled_and_runs_on() {
    let mut core = core();
    warm_up(&mut core, "f");
    invoke_many(&mut core, "f", 10, 3);
    let jobs = handed(&mut core, T0);
    assert_eq!(jobs.len(), MIN_HANDED);
    let cancel = |core: &mut ExecutorCore, seq: u64| {
        let mut id = single("f").id;
        id.seq = seq;
        let sent = step(
            core,
            T0,
            Message::CancelCall {
                id,
                reply_to: Address::from(CALLER),
            },
        );
        sent.iter().find_map(|(_, m)| match m {
            Message::CancelAnswer { cancelled, .. } => Some(*cancelled),
            _ => None,
        })
    };
    assert_eq!(cancel(&mut core, 11), Some(false), "handed: runs on");
    assert_eq!(cancel(&mut core, 12), Some(true), "still queued: dropped");
    finish_in_turn(&mut core, &jobs, T0, Duration::from_micros(10));
    assert!(
        handed(&mut core, T0).is_empty(),
        "the cancelled call never runs"
    );
}
