//! DAG calls: the plan's shape, refused shapes, and definitions read
//! through the KVS and cached.

mod common;

use anna::protocol::compute::{dag_key, encode_value, CallArgs, CallErrorKind};
use anna::protocol::Message;
use anna::sim::KvsDouble;
use common::*;
use squall_scheduler::{Scheduler, SchedulerConfig};

fn with_executors() -> Scheduler {
    let mut s = scheduler(SchedulerConfig::default());
    step(&mut s, 0, report("e1", "n1", 0, &[]));
    step(&mut s, 0, report("e2", "n2", 0, &[]));
    s
}

/// Calls DAG `d` as call `seq` at `now_ms`, `kvs` answering its reads;
/// returns what was sent besides KVS traffic, and how many reads.
fn call_stored(
    s: &mut Scheduler,
    now_ms: u64,
    seq: u64,
    kvs: &mut KvsDouble,
    fn_args: &[(&str, CallArgs)],
) -> (Vec<(anna::protocol::Address, Message)>, usize) {
    let before = kvs.requests().len();
    let sent = step(s, now_ms, call_dag(seq, "d", fn_args));
    let rest = serve_kvs(s, now_ms, sent, kvs);
    (rest, kvs.requests().len() - before)
}

#[test]
fn a_dag_plan_fans_out_and_in_with_upstream_in_connection_order() {
    let mut s = with_executors();
    step(&mut s, 0, cache("n2", &[("kc", 500)]));
    // a -> b, a -> c, c -> d, b -> d: d takes c's result first.
    let d = dag(
        "d",
        &["a", "b", "c", "d"],
        &[("a", "b"), ("a", "c"), ("c", "d"), ("b", "d")],
    );
    let (sent, reads) = call_stored(
        &mut s,
        1,
        1,
        &mut kvs_with_dag(&d),
        &[("a", args(&[])), ("c", args(&["kc"]))],
    );
    assert_eq!(reads, 1);
    let inv = invokes(&sent);
    assert_eq!(inv.len(), 1, "only the source a is invoked: {sent:?}");
    let (to, plan, function) = &inv[0];
    assert_eq!(*function, 0);
    assert_eq!(plan.functions[0].executor, *to);
    assert_eq!(plan.dag.as_deref(), Some("d"));
    let names: Vec<&str> = plan.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    assert_eq!(plan.functions[0].upstream, Vec::<u16>::new());
    assert_eq!(plan.functions[0].downstream, [1, 2]);
    assert_eq!(plan.functions[1].upstream, [0]);
    assert_eq!(plan.functions[2].upstream, [0]);
    assert_eq!(plan.functions[3].upstream, [2, 1]);
    assert_eq!(plan.functions[1].downstream, [3]);
    assert_eq!(plan.functions[3].downstream, Vec::<u16>::new());
    assert_eq!(plan.functions[0].args, args(&[]));
    assert_eq!(
        plan.functions[1].args,
        CallArgs::default(),
        "b was given no args"
    );
    assert_eq!(
        plan.functions[2].executor.as_str(),
        "e2",
        "c's data is on n2"
    );
    assert_eq!(plan.sources().collect::<Vec<_>>(), [0]);

    // The call ends when the sink d is done, not before.
    for f in [0, 1, 2] {
        step(
            &mut s,
            2,
            done(
                1,
                0,
                f,
                plan.functions[usize::from(f)].executor.as_str(),
                false,
            ),
        );
    }
    assert_eq!(s.in_flight(), 1);
    step(
        &mut s,
        3,
        done(1, 0, 3, plan.functions[3].executor.as_str(), false),
    );
    assert_eq!(s.in_flight(), 0);
    assert_eq!(s.stats().completed, 1);
}

#[test]
fn a_chain_link_follows_its_upstream_function_and_a_fan_out_spreads() {
    let mut s = with_executors();
    // a -> b -> c is a chain: all three on one executor, whichever it is.
    let chain = dag("d", &["a", "b", "c"], &[("a", "b"), ("b", "c")]);
    let (sent, _) = call_stored(&mut s, 1, 1, &mut kvs_with_dag(&chain), &[]);
    let (_, plan, _) = &invokes(&sent)[0];
    let on: Vec<&str> = plan.functions.iter().map(|f| f.executor.as_str()).collect();
    assert!(on.iter().all(|e| *e == on[0]), "{on:?}");

    // a -> b, a -> c fans out: b and c are no chain links, and spread.
    let mut s = with_executors();
    let fan = dag("d", &["a", "b", "c"], &[("a", "b"), ("a", "c")]);
    let (sent, _) = call_stored(&mut s, 1, 1, &mut kvs_with_dag(&fan), &[]);
    let (_, plan, _) = &invokes(&sent)[0];
    assert_ne!(plan.functions[1].executor, plan.functions[2].executor);
}

#[test]
fn with_colocate_chains_off_a_chain_link_goes_to_another_executor_while_there_is_one() {
    let config = SchedulerConfig {
        colocate_chains: false,
        ..SchedulerConfig::default()
    };
    let mut s = scheduler(config);
    step(&mut s, 0, report("e1", "n1", 0, &[]));
    step(&mut s, 0, report("e2", "n2", 0, &[]));
    let chain = dag("d", &["a", "b", "c"], &[("a", "b"), ("b", "c")]);
    let (sent, _) = call_stored(&mut s, 1, 1, &mut kvs_with_dag(&chain), &[]);
    let (_, plan, _) = &invokes(&sent)[0];
    let on: Vec<&str> = plan.functions.iter().map(|f| f.executor.as_str()).collect();
    assert_ne!(on[0], on[1], "{on:?}");
    assert_ne!(on[1], on[2], "{on:?}");

    // With one executor, the chain still runs: all on it.
    let config = SchedulerConfig {
        colocate_chains: false,
        ..SchedulerConfig::default()
    };
    let mut s = scheduler(config);
    step(&mut s, 0, report("e1", "n1", 0, &[]));
    let (sent, _) = call_stored(&mut s, 1, 1, &mut kvs_with_dag(&chain), &[]);
    let (_, plan, _) = &invokes(&sent)[0];
    assert!(plan.functions.iter().all(|f| f.executor.as_str() == "e1"));
}

#[test]
fn every_source_of_a_dag_is_invoked() {
    let mut s = with_executors();
    let d = dag("d", &["x", "y", "join"], &[("x", "join"), ("y", "join")]);
    let (sent, _) = call_stored(&mut s, 1, 1, &mut kvs_with_dag(&d), &[]);
    let mut functions: Vec<u16> = invokes(&sent).iter().map(|(_, _, f)| *f).collect();
    functions.sort();
    assert_eq!(functions, [0, 1]);
}

#[test]
fn a_dag_with_a_cycle_is_refused() {
    let mut s = with_executors();
    let d = dag("d", &["a", "b", "c"], &[("a", "b"), ("b", "c"), ("c", "b")]);
    let (sent, _) = call_stored(&mut s, 1, 1, &mut kvs_with_dag(&d), &[]);
    assert!(invokes(&sent).is_empty());
    let e = error(&sent);
    assert_eq!(e.kind, CallErrorKind::BadArguments);
    assert!(e.message.contains("cycle"), "{}", e.message);
}

#[test]
fn a_dag_connecting_an_unknown_function_is_refused() {
    let mut s = with_executors();
    let d = dag("d", &["a"], &[("a", "ghost")]);
    let (sent, _) = call_stored(&mut s, 1, 1, &mut kvs_with_dag(&d), &[]);
    let e = error(&sent);
    assert_eq!(e.kind, CallErrorKind::BadArguments);
    assert!(e.message.contains("ghost"), "{}", e.message);
}

#[test]
fn arguments_for_a_function_outside_the_dag_are_refused() {
    let mut s = with_executors();
    let d = dag("d", &["a"], &[]);
    let (sent, _) = call_stored(&mut s, 1, 1, &mut kvs_with_dag(&d), &[("zzz", args(&[]))]);
    let e = error(&sent);
    assert_eq!(e.kind, CallErrorKind::BadArguments);
    assert!(e.message.contains("zzz"), "{}", e.message);
}

#[test]
fn an_unregistered_dag_is_unknown() {
    let mut s = with_executors();
    let (sent, reads) = call_stored(&mut s, 1, 1, &mut kvs(), &[]);
    assert_eq!(reads, 1);
    assert_eq!(error(&sent).kind, CallErrorKind::UnknownDag);
}

#[test]
fn an_undecodable_definition_is_a_clear_error() {
    let mut s = with_executors();
    let mut kvs = kvs();
    kvs.put(&dag_key("d"), lww_at(1, vec![0xff; 3]));
    let (sent, _) = call_stored(&mut s, 1, 1, &mut kvs, &[]);
    let e = error(&sent);
    assert_eq!(e.kind, CallErrorKind::BadFunction);
    assert!(e.message.contains("does not decode"), "{}", e.message);
}

#[test]
fn a_definition_is_read_once_cached_and_dropped_when_the_dag_changes() {
    let mut s = with_executors();
    let mut kvs = kvs_with_dag(&dag("d", &["a"], &[]));
    // Two calls while the read is out: one read serves both.
    let first = step(&mut s, 1, call_dag(1, "d", &[]));
    let second = step(&mut s, 1, call_dag(2, "d", &[]));
    assert!(second.is_empty(), "the second call waits: {second:?}");
    assert_eq!(s.queued(), 2);
    let sent = serve_kvs(&mut s, 1, first, &mut kvs);
    assert_eq!(kvs.requests().len(), 1);
    assert_eq!(invokes(&sent).len(), 2);

    // Cached: no read at all.
    let sent = step(&mut s, 2, call_dag(3, "d", &[]));
    assert_eq!(invokes(&sent).len(), 1, "{sent:?}");
    assert_eq!(s.stats().dag_cache_hits, 1);

    // Changed: read again.
    step(
        &mut s,
        3,
        Message::DagChanged(anna::protocol::compute::DagChanged {
            name: "d".to_string(),
        }),
    );
    let (sent, reads) = call_stored(&mut s, 4, 4, &mut kvs, &[]);
    assert_eq!(reads, 1);
    assert_eq!(invokes(&sent).len(), 1);

    // Expired: read again after the TTL.
    let ttl = SchedulerConfig::default().dag_cache_ttl.as_millis() as u64;
    let (_, reads) = call_stored(&mut s, 5 + ttl, 5, &mut kvs, &[]);
    assert_eq!(reads, 1);
}

#[test]
fn a_change_during_a_read_reads_again() {
    let mut s = with_executors();
    let mut kvs = kvs_with_dag(&dag("d", &["old"], &[]));
    let sent = step(&mut s, 1, call_dag(1, "d", &[]));
    assert!(
        matches!(sent.first(), Some((_, Message::StatusRequest { .. }))),
        "the client asks the router first: {sent:?}"
    );
    let (_, placement) = kvs.answer(at(1), &sent[0]).expect("the router answers");
    let sent = step(&mut s, 1, placement);
    let Some(read @ (_, Message::KvsRequest(_))) = sent.first().cloned() else {
        panic!("then reads the key: {sent:?}");
    };
    step(
        &mut s,
        2,
        Message::DagChanged(anna::protocol::compute::DagChanged {
            name: "d".to_string(),
        }),
    );
    let (_, old) = kvs.answer(at(3), &read).expect("the KVS answers");
    let sent = step(&mut s, 3, old);
    assert!(invokes(&sent).is_empty(), "the old answer is not used");
    let Some(again @ (_, Message::KvsRequest(_))) = sent.first().cloned() else {
        panic!("the key is read again: {sent:?}");
    };
    let new = dag("d", &["new"], &[]);
    kvs.put(&dag_key("d"), lww_at(2, encode_value(&new)));
    let (_, new) = kvs.answer(at(4), &again).expect("the KVS answers");
    let sent = step(&mut s, 4, new);
    let inv = invokes(&sent);
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0].1.functions[0].name, "new");
}

#[test]
fn a_dag_call_is_refused_when_no_definition_can_wait() {
    let config = SchedulerConfig {
        queue_capacity: 0,
        ..SchedulerConfig::default()
    };
    let mut s = scheduler(config);
    let sent = step(&mut s, 1, call_dag(1, "d", &[]));
    assert_eq!(error(&sent).kind, CallErrorKind::Overloaded);
}

#[test]
fn functions_of_an_abandoned_attempt_hold_their_executor_until_reported_done() {
    let config = SchedulerConfig {
        executor_capacity: 2,
        ..SchedulerConfig::default()
    };
    let mut s = scheduler(config);
    for (e, n) in [("e1", "n1"), ("e2", "n2"), ("e3", "n3")] {
        step(&mut s, 0, report(e, n, 0, &[]));
    }
    step(&mut s, 0, cache("n1", &[("k1", 100)]));
    step(&mut s, 0, cache("n2", &[("k2", 100)]));
    let d = dag("d", &["a", "b"], &[("a", "b")]);
    let fn_args = [("a", args(&["k1"])), ("b", args(&["k2"]))];
    let (sent, _) = call_stored(&mut s, 0, 1, &mut kvs_with_dag(&d), &fn_args);
    let plan = &invokes(&sent)[0].1;
    assert_eq!(plan.functions[0].executor.as_str(), "e1");
    assert_eq!(plan.functions[1].executor.as_str(), "e2");

    step(&mut s, 1000, report("e2", "n2", 0, &[]));
    step(&mut s, 1000, report("e3", "n3", 0, &[]));
    step(&mut s, 1000, cache("n2", &[("k2", 100)]));
    let sent = tick(&mut s, 1500);
    let inv = invokes(&sent);
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0].1.attempt, 1);
    assert_eq!(inv[0].1.functions[1].executor.as_str(), "e2");

    // e2 holds b of attempt 0 (it may still run) and b of attempt 1: full.
    let sent = step(&mut s, 1600, call(2, "f", &["k2"], 1000));
    assert_eq!(invokes(&sent)[0].0.as_str(), "e3");
    // Attempt 0's b reports done: ignored for the call, but e2 frees up.
    step(&mut s, 1700, done(1, 0, 1, "e2", false));
    assert_eq!(s.in_flight(), 2);
    let sent = step(&mut s, 1800, call(3, "f", &["k2"], 1000));
    assert_eq!(invokes(&sent)[0].0.as_str(), "e2");
}

#[test]
fn a_cached_definition_older_than_the_callers_register_is_read_again() {
    use anna::lattice::KeyState;
    use anna::protocol::Session;

    let mut s = with_executors();
    let mut kvs = kvs_with_dag_at(&dag("d", &["old"], &[]), 1);
    let (sent, reads) = call_stored(&mut s, 1, 1, &mut kvs, &[]);
    assert_eq!(
        (reads, invokes(&sent)[0].1.functions[0].name.as_str()),
        (1, "old")
    );

    // The caller registered `d` again at 5; the cache holds the one of 1.
    let new = dag("d", &["new"], &[]);
    let written = KeyState::from_value(lww_at(5, encode_value(&new)));
    let Message::CallDag(mut req) = call_dag(2, "d", &[]) else {
        unreachable!()
    };
    req.session = Session::new(vec![(dag_key("d"), written.witness())]);
    let sent = step(&mut s, 2, Message::CallDag(req));
    kvs.put_state(&dag_key("d"), written);
    let sent = serve_kvs(&mut s, 2, sent, &mut kvs);
    assert_eq!(
        kvs.requests().len(),
        2,
        "read again, not served from the cache"
    );
    assert_eq!(invokes(&sent)[0].1.functions[0].name, "new");

    // A caller that wrote nothing of `d` is served from the cache.
    let (sent, reads) = call_stored(&mut s, 3, 3, &mut kvs, &[]);
    assert_eq!((reads, invokes(&sent).len()), (0, 1));
}

#[test]
fn parallel_branches_of_one_call_go_to_different_executors_even_where_one_is_warm_with_both() {
    let mut s = scheduler(SchedulerConfig::default());
    // e1 ran every function before; e2 is cold. Warmth alone would put
    // both branches on e1, one after the other, while e2 idles.
    step(&mut s, 0, report("e1", "n1", 0, &["left", "right", "sink"]));
    step(&mut s, 0, report("e2", "n2", 0, &[]));
    let d = dag(
        "d",
        &["left", "right", "sink"],
        &[("left", "sink"), ("right", "sink")],
    );
    let mut kvs = kvs_with_dag(&d);
    for seq in 1..=6 {
        let (sent, _) = call_stored(&mut s, seq, seq, &mut kvs, &[]);
        let inv = invokes(&sent);
        assert_eq!(inv.len(), 2, "both sources are invoked: {sent:?}");
        let plan = &inv[0].1;
        assert_ne!(
            plan.functions[0].executor, plan.functions[1].executor,
            "call {seq}: left and right may run at once"
        );
        for f in 0..3u16 {
            let on = plan.functions[usize::from(f)].executor.as_str().to_string();
            step(&mut s, seq, done(seq, 0, f, &on, false));
        }
    }
}

#[test]
fn a_branch_with_data_keeps_its_node_and_its_sibling_goes_elsewhere() {
    let mut s = with_executors();
    step(&mut s, 0, cache("n1", &[("k", 1000)]));
    // b is listed first but has no data; c's data is on n1.
    let d = dag("d", &["b", "c", "sink"], &[("b", "sink"), ("c", "sink")]);
    let (sent, _) = call_stored(&mut s, 1, 1, &mut kvs_with_dag(&d), &[("c", args(&["k"]))]);
    let plan = &invokes(&sent)[0].1;
    assert_eq!(plan.functions[1].executor.as_str(), "e1", "c reads locally");
    assert_eq!(plan.functions[0].executor.as_str(), "e2", "b runs beside c");
}

#[test]
fn more_branches_than_executors_still_run_spread_over_all_of_them() {
    let mut s = with_executors();
    let d = dag(
        "d",
        &["a", "b", "c", "sink"],
        &[("a", "sink"), ("b", "sink"), ("c", "sink")],
    );
    let (sent, _) = call_stored(&mut s, 1, 1, &mut kvs_with_dag(&d), &[]);
    let inv = invokes(&sent);
    assert_eq!(inv.len(), 3, "every branch is invoked: {sent:?}");
    let mut on: Vec<&str> = inv[0].1.functions[..3]
        .iter()
        .map(|f| f.executor.as_str())
        .collect();
    on.sort();
    on.dedup();
    assert_eq!(on, ["e1", "e2"]);
}

#[test]
fn a_chain_beside_a_parallel_branch_stays_together_and_apart_from_it() {
    let mut s = with_executors();
    // a -> b is a chain; x runs beside it; both end in the sink.
    let d = dag(
        "d",
        &["a", "b", "x", "sink"],
        &[("a", "b"), ("b", "sink"), ("x", "sink")],
    );
    let (sent, _) = call_stored(&mut s, 1, 1, &mut kvs_with_dag(&d), &[]);
    let plan = &invokes(&sent)[0].1;
    let on = |i: usize| plan.functions[i].executor.as_str();
    assert_eq!(on(0), on(1), "b follows a");
    assert_ne!(on(2), on(0), "x runs beside the chain");
}
