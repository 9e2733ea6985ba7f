//! Sessions: a call whose caller wrote the function's key runs code at
//! least at that version; every function of a call writes as the
//! invocation, the same for every attempt.

use super::*;
use crate::job::invocation_writer;
use anna::protocol::Session;

/// The stored state of `code` written at `ms`.
fn stored(code: &FunctionCode, ms: u64) -> KeyState {
    let at = Timestamp {
        wall_ms: ms,
        ..Timestamp::default()
    };
    KeyState::from_value(LatticeValue::Lww(Lww::new(at, encode_value(code))))
}

/// A call of `name` by a caller whose session wrote `written` to its key.
fn call_after(name: &str, seq: u64, written: KeyState) -> Box<Plan> {
    let mut plan = single(name);
    plan.id.seq = seq;
    plan.session = Session::new(vec![(function_key(name), written.witness())]);
    plan
}

fn fetch_of(sent: &[(Address, Message)]) -> Option<KeyOp> {
    sent.iter().find_map(|(_, m)| match m {
        Message::KvsRequest(r) => Some(r.ops[0].clone()),
        _ => None,
    })
}

#[test]
fn warm_code_older_than_the_callers_register_is_fetched_again_at_its_version() {
    let mut core = core();
    let old = stored(&code(1), 10);
    let sent = step(
        &mut core,
        T0,
        Message::Invoke {
            plan: single("f"),
            function: 0,
        },
    );
    answer_fetch(&mut core, &sent, Some(old.clone()));
    let job = next_job(&mut core).expect("a job");
    finish(&mut core, &job, Ok(vec![]));

    // The caller registered new code (written at 20): the warm code (10)
    // does not cover it, so the code is fetched with the caller's version.
    let new = stored(&code(2), 20);
    let sent = step(
        &mut core,
        T0,
        Message::Invoke {
            plan: call_after("f", 2, new.clone()),
            function: 0,
        },
    );
    assert!(next_job(&mut core).is_none(), "the old code must not run");
    let Some(KeyOp::ReadState { at_least, .. }) = fetch_of(&sent) else {
        panic!("a fetch of the code: {sent:?}");
    };
    assert_eq!(at_least, Some(new.witness()));
    answer_fetch(&mut core, &sent, Some(new.clone()));
    let job = next_job(&mut core).expect("a job");
    assert_eq!(*job.code, code(2));
    finish(&mut core, &job, Ok(vec![]));

    // A caller whose session holds the older version runs the warm code.
    let sent = step(
        &mut core,
        T0,
        Message::Invoke {
            plan: call_after("f", 3, old),
            function: 0,
        },
    );
    assert_eq!(fetch_of(&sent), None);
    assert_eq!(*next_job(&mut core).expect("a job").code, code(2));
}

#[test]
fn a_call_after_its_caller_deleted_the_function_fails_unknown_function() {
    let mut core = core();
    warm_up(&mut core, "f");
    let deleted = KeyState::tombstone(Timestamp {
        wall_ms: 30,
        ..Timestamp::default()
    });
    let sent = step(
        &mut core,
        T0,
        Message::Invoke {
            plan: call_after("f", 2, deleted.clone()),
            function: 0,
        },
    );
    let sent = answer_fetch(&mut core, &sent, Some(deleted));
    let failed = sent.iter().any(|(_, m)| {
        matches!(m,
        Message::CallResult(r) if matches!(&r.outcome,
            CallOutcome::Error(e) if e.kind == CallErrorKind::UnknownFunction))
    });
    assert!(failed, "{sent:?}");
}

#[test]
fn every_attempt_of_an_invocation_writes_as_the_same_writer() {
    let mut core = core();
    let first = invoke_and_fetch(&mut core, single("f"));
    finish(&mut core, &first, Ok(vec![]));
    let mut retry = single("f");
    retry.attempt = 1;
    let sent = step(
        &mut core,
        T0,
        Message::Invoke {
            plan: retry,
            function: 0,
        },
    );
    assert_eq!(fetch_of(&sent), None, "warm");
    let second = next_job(&mut core).expect("the retry runs");
    assert_eq!(first.env.writer, second.env.writer);
    assert_eq!(first.env.writer, invocation_writer(single("f").id, 0));
    let mut other = single("f");
    other.id.seq += 1;
    assert_ne!(first.env.writer, invocation_writer(other.id, 0));
    assert_ne!(first.env.writer, invocation_writer(single("f").id, 1));
}

fn wrote(key: &str, ms: u64) -> Session {
    let mut s = Session::default();
    s.record(key, stored(&code(9), ms).witness());
    s
}

#[test]
fn a_functions_writes_travel_downstream_and_back_to_the_caller() {
    let mut core = core();
    let other = "tcp://exec:2";
    let dag = plan(
        vec![
            planned("f", vec![], vec![1], ME),
            planned("g", vec![0], vec![], other),
        ],
        None,
    );
    let job = invoke_and_fetch(&mut core, dag);
    let sent = finish_writing(&mut core, &job, Ok(b"r".to_vec()), wrote("k", 5));
    let trigger = sent.iter().find_map(|(to, m)| match m {
        Message::Trigger { plan, .. } if to.as_str() == other => Some(plan.clone()),
        _ => None,
    });
    let trigger = trigger.expect("g is triggered");
    assert_eq!(trigger.written, wrote("k", 5), "g reads at least f's write");
    assert_eq!(trigger.version("k"), Some(stored(&code(9), 5).witness()));

    // A single call: the result carries the function's writes.
    let mut single_call = single("f");
    single_call.id.seq = 2;
    let sent = step(
        &mut core,
        T0,
        Message::Invoke {
            plan: single_call,
            function: 0,
        },
    );
    assert_eq!(fetch_of(&sent), None);
    let job = next_job(&mut core).expect("a job");
    let sent = finish_writing(&mut core, &job, Ok(b"r".to_vec()), wrote("k", 6));
    let result = sent.iter().find_map(|(_, m)| match m {
        Message::CallResult(r) => Some(r.clone()),
        _ => None,
    });
    assert_eq!(result.expect("a result").written, wrote("k", 6));
}

#[test]
fn under_repeatable_read_the_first_read_of_a_key_is_pinned_for_the_functions_downstream() {
    use crate::job::Effects;
    use anna::protocol::compute::Consistency;

    let mut core = core();
    let other = "tcp://exec:2";
    let mut dag = plan(
        vec![
            planned("f", vec![], vec![1], ME),
            planned("g", vec![0], vec![], other),
        ],
        None,
    );
    dag.consistency = Consistency::RepeatableRead;
    let job = invoke_and_fetch(&mut core, dag);
    assert_eq!(job.env.consistency, Consistency::RepeatableRead);
    let mut pinned = Session::default();
    pinned.pin("k", stored(&code(1), 5));
    let effects = Effects {
        written: Session::default(),
        pinned: pinned.clone(),
        ..Effects::default()
    };
    let mut out = Outbox::default();
    let done = JobDone {
        seq: job.seq,
        outcome: Ok(b"r".to_vec()),
        effects,
    };
    core.job_done(T0, done, &mut out);
    let trigger = out.drain().find_map(|(to, m)| match m {
        Message::Trigger { plan, .. } if to.as_str() == other => Some(plan),
        _ => None,
    });
    let trigger = trigger.expect("g is triggered");
    assert_eq!(trigger.pinned, pinned, "g reads what f read");
    assert_eq!(trigger.consistency, Consistency::RepeatableRead);
}
