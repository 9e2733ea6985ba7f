//! Coroutines: a started call frees the worker, counts against
//! `max_async_calls` until its result comes, and is reported.

use super::*;

/// A core with `limit` coroutine slots where `a` is known to be a
/// coroutine function (one call of it started and finished) and `f` is warm.
fn with_async(limit: usize) -> ExecutorCore {
    let mut core = core_with(ExecutorConfig {
        max_async_calls: limit,
        ..ExecutorConfig::default()
    });
    let job = invoke_and_fetch(&mut core, single("a"));
    core.job_started(T0, job.seq);
    finish(&mut core, &job, Ok(vec![]));
    let mut p = single("f");
    p.id.seq = 100;
    let job = invoke_and_fetch(&mut core, p);
    finish(&mut core, &job, Ok(vec![]));
    core
}

fn report(core: &mut ExecutorCore) -> ExecutorReport {
    let mut out = Outbox::default();
    core.step(core.next_tick().unwrap(), Input::Tick, &mut out);
    let sent: Vec<_> = out.drain().collect();
    match sent.last() {
        Some((_, Message::ExecutorReport(r))) => r.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_started_coroutine_frees_the_worker_and_its_result_reaches_the_caller() {
    let mut core = with_async(10);
    invoke_many(&mut core, "a", 2, 1);
    invoke_many(&mut core, "a", 3, 1);
    let first = next_job(&mut core).unwrap();
    let second = next_job(&mut core).expect("the next job is handed along");
    assert!(next_job(&mut core).is_none(), "no third: none is queued");
    core.job_started(T0, first.seq);
    assert!(core.is_busy(), "the worker holds the second");
    core.job_started(T0, second.seq);
    assert!(!core.is_busy());
    assert_eq!(core.coroutines_in_flight(), 2);
    // They end in any order, each answering its own caller.
    let sent = finish(&mut core, &second, Ok(b"3".to_vec()));
    assert!(sent.iter().any(|(to, m)| to.as_str() == CALLER
        && matches!(m, Message::CallResult(r) if r.id.seq == 3 && r.outcome == CallOutcome::Value(b"3".to_vec()))));
    let sent = finish(&mut core, &first, Ok(b"2".to_vec()));
    assert!(sent
        .iter()
        .any(|(_, m)| matches!(m, Message::CallResult(r) if r.id.seq == 2)));
    assert_eq!(core.coroutines_in_flight(), 0);
    assert!(
        finish(&mut core, &first, Ok(vec![])).is_empty(),
        "once only"
    );
}

#[test]
fn beyond_the_limit_coroutine_calls_wait_while_plain_calls_still_start() {
    let mut core = with_async(2);
    for seq in 2..6 {
        invoke_many(&mut core, "a", seq, 1);
    }
    invoke_many(&mut core, "f", 6, 1);
    let mut started = Vec::new();
    for _ in 0..2 {
        let job = next_job(&mut core).unwrap();
        assert_eq!(job.function, "a");
        core.job_started(T0, job.seq);
        started.push(job);
    }
    // Both slots taken: the plain call overtakes the waiting coroutines.
    let plain = next_job(&mut core).expect("the plain call");
    assert_eq!(plain.function, "f");
    finish(&mut core, &plain, Ok(vec![]));
    assert!(next_job(&mut core).is_none(), "the coroutine calls wait");
    assert_eq!(report(&mut core).queue, 2);
    // One ends: one more starts.
    finish(&mut core, &started[0], Ok(vec![]));
    let next = next_job(&mut core).unwrap();
    assert_eq!((next.function.as_str(), next.env.call.seq), ("a", 4));
    core.job_started(T0, next.seq);
    assert!(next_job(&mut core).is_none());
}

#[test]
fn reports_carry_the_coroutine_slots_and_the_coroutine_functions() {
    let mut core = with_async(5);
    invoke_many(&mut core, "a", 2, 1);
    let job = next_job(&mut core).unwrap();
    core.job_started(T0, job.seq);
    let r = report(&mut core);
    assert_eq!((r.async_running, r.async_limit), (1, 5));
    assert_eq!(r.async_functions, vec!["a".to_string()]);
    assert_eq!(r.warm, vec!["a".to_string(), "f".to_string()]);
    assert!(r.busy_permille < 1000, "an awaiting coroutine is not work");
}

#[test]
fn a_coroutine_past_its_deadline_and_grace_is_failed_and_marks_the_executor_stuck() {
    let mut core = with_async(5);
    invoke_many(&mut core, "a", 2, 1);
    let job = next_job(&mut core).unwrap();
    core.job_started(T0, job.seq);
    let mut out = Outbox::default();
    core.step(Time(T0.0 + 10_500_000), Input::Tick, &mut out);
    assert!(
        !core.is_stuck(),
        "within the grace: the loop may still cancel it"
    );
    core.step(Time(T0.0 + 12_100_000), Input::Tick, &mut out);
    assert!(core.is_stuck());
    assert_eq!(core.coroutines_in_flight(), 0);
    let sent: Vec<_> = out.drain().collect();
    assert!(sent.iter().any(|(_, m)| matches!(m, Message::CallResult(r) if matches!(&r.outcome, CallOutcome::Error(e) if e.kind == CallErrorKind::Timeout))));
    assert!(
        finish(&mut core, &job, Ok(vec![])).is_empty(),
        "a late answer is ignored"
    );
}
