//! Prewarms: code fetched as for a call, loaded on the worker with no call.

use super::*;

fn prewarm(name: &str) -> Message {
    Message::Prewarm {
        function: name.into(),
    }
}

fn tick(core: &mut ExecutorCore, now: Time) -> Vec<(Address, Message)> {
    let mut out = Outbox::default();
    core.step(now, Input::Tick, &mut out);
    out.drain().collect()
}

fn fetches(sent: &[(Address, Message)]) -> usize {
    let fetch = |m: &Message| matches!(m, Message::KvsRequest(r) if r.ops == vec![KeyOp::ReadState { key: function_key("f"), at_least: None }]);
    sent.iter().filter(|(_, m)| fetch(m)).count()
}

#[test]
fn a_prewarm_fetches_the_code_and_loads_it_on_the_worker_without_running_a_call() {
    let mut core = core();
    let sent = step(&mut core, T0, prewarm("f"));
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0.as_str(), CACHE);
    assert_eq!(fetches(&sent), 1, "{sent:?}");
    let after = answer_fetch(&mut core, &sent, found(&code(1)));
    assert!(
        matches!(&after[..], [(_, Message::Subscribe(s))] if s.keys == vec![function_key("f")]),
        "only the code subscription: {after:?}"
    );
    let load = next_job(&mut core).expect("a load job");
    assert!(load.load_only);
    assert_eq!(
        (load.function.as_str(), load.code.code.as_slice()),
        ("f", &[1][..])
    );
    assert!(load.payload.is_empty() && load.upstream.is_empty());
    assert!(next_job(&mut core).is_none(), "nothing else to load");
    assert!(
        finish(&mut core, &load, Ok(vec![])).is_empty(),
        "no result, no CallDone"
    );

    let due = core.next_tick().unwrap();
    let sent = tick(&mut core, due);
    let Some((_, Message::ExecutorReport(report))) = sent.last() else {
        panic!("{sent:?}")
    };
    assert_eq!(report.warm, vec!["f".to_string()]);
    assert!(report.calls.is_empty(), "no call ran: {report:?}");
    assert_eq!(report.queue, 0);
    assert_eq!(core.counters().prewarms, 1);
    assert_eq!(core.counters().calls_ok, 0);

    // A call then runs the loaded generation: no fetch, no reload.
    let sent = step(
        &mut core,
        T0,
        Message::Invoke {
            plan: single("f"),
            function: 0,
        },
    );
    assert!(sent.is_empty(), "{sent:?}");
    let call = next_job(&mut core).expect("the call");
    assert!(!call.load_only);
    assert_eq!(call.generation, load.generation);
}

#[test]
fn a_prewarm_of_a_warm_function_sends_and_loads_nothing() {
    let mut core = core();
    warm_up(&mut core, "f");
    assert!(step(&mut core, T0, prewarm("f")).is_empty());
    assert!(next_job(&mut core).is_none());
    assert_eq!(core.counters().prewarms, 1);
    assert_eq!(core.counters().fetches, 1, "the first call's only");
}

#[test]
fn a_prewarm_of_an_unknown_function_is_counted_and_nothing_else() {
    let mut core = core();
    let sent = step(&mut core, T0, prewarm("nope"));
    let after = answer_fetch(&mut core, &sent, None);
    assert!(after.is_empty(), "{after:?}");
    assert!(next_job(&mut core).is_none());
    assert!(core.warm_functions().is_empty());
    assert_eq!(core.counters().prewarms_unknown, 1);
    assert_eq!(core.counters().calls_failed, 0);
}

#[test]
fn a_prewarm_and_an_invoke_of_the_same_function_fetch_once_and_the_call_loads_it() {
    for prewarm_first in [true, false] {
        let mut core = core();
        let invoke = Message::Invoke {
            plan: single("f"),
            function: 0,
        };
        let (first, second) = match prewarm_first {
            true => (prewarm("f"), invoke),
            false => (invoke, prewarm("f")),
        };
        let sent = step(&mut core, T0, first);
        assert_eq!(fetches(&sent), 1);
        assert!(
            step(&mut core, T0, second).is_empty(),
            "the fetch in flight serves both"
        );
        answer_fetch(&mut core, &sent, found(&code(1)));
        let call = next_job(&mut core).expect("the call");
        assert!(!call.load_only, "the call goes first");
        let sent = finish(&mut core, &call, Ok(b"r".to_vec()));
        assert!(sent
            .iter()
            .any(|(_, m)| matches!(m, Message::CallResult(_))));
        assert!(
            next_job(&mut core).is_none(),
            "the call loaded it: no load job"
        );
        assert_eq!(core.counters().fetches, 1);
        assert_eq!(core.warm_functions(), vec!["f".to_string()]);
    }
}

#[test]
fn a_prewarm_whose_load_fails_leaves_the_warm_set() {
    let mut core = core();
    let sent = step(&mut core, T0, prewarm("f"));
    answer_fetch(&mut core, &sent, found(&code(1)));
    let load = next_job(&mut core).expect("a load job");
    assert!(finish(&mut core, &load, Err(call_error_for_test())).is_empty());
    assert!(core.warm_functions().is_empty());
    assert_eq!(core.counters().prewarms_failed, 1);
}

#[test]
fn a_prewarm_retries_its_fetch_until_the_default_timeout_then_gives_up() {
    let mut core = core();
    let config = ExecutorConfig::default();
    step(&mut core, T0, prewarm("f"));
    let sent = tick(&mut core, T0 + config.fetch_retry);
    assert_eq!(fetches(&sent), 1, "sent again: {sent:?}");
    let late = T0 + config.default_timeout + config.fetch_retry;
    assert_eq!(fetches(&tick(&mut core, late)), 0);
    // A prewarm after giving up fetches afresh.
    assert_eq!(fetches(&step(&mut core, late, prewarm("f"))), 1);
}

#[test]
fn a_load_stuck_past_its_deadline_and_grace_marks_the_executor_stuck() {
    let mut core = core();
    let config = ExecutorConfig::default();
    let sent = step(&mut core, T0, prewarm("f"));
    answer_fetch(&mut core, &sent, found(&code(1)));
    let load = next_job(&mut core).expect("a load job");
    tick(&mut core, T0 + config.default_timeout);
    assert!(!core.is_stuck(), "within the grace");
    let sent = tick(&mut core, T0 + config.default_timeout + config.grace);
    assert!(core.is_stuck());
    assert!(
        !sent
            .iter()
            .any(|(_, m)| matches!(m, Message::CallResult(_) | Message::CallDone { .. })),
        "{sent:?}"
    );
    assert!(finish(&mut core, &load, Ok(vec![])).is_empty());
}
