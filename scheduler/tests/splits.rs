//! Traffic splits: calls of a plain name go to versions by weight, the
//! split read through the KVS and cached; pinned calls are not split.

mod common;

use anna::lattice::KeyState;
use anna::protocol::compute::{encode_value, traffic_key, Traffic, TRAFFIC_PARTS};
use anna::protocol::{Message, Session};
use anna::sim::KvsDouble;
use common::*;
use squall_scheduler::{Scheduler, SchedulerConfig};

/// Two executors that take any number of calls.
fn with_executors() -> Scheduler {
    let config = SchedulerConfig {
        executor_capacity: 100_000,
        ..SchedulerConfig::default()
    };
    let mut s = scheduler(config);
    step(&mut s, 0, report("e1", "n1", 0, &[]));
    step(&mut s, 0, report("e2", "n2", 0, &[]));
    s
}

fn split(versions: &[(u32, f64)]) -> Traffic {
    Traffic {
        versions: versions
            .iter()
            .map(|&(v, w)| (v, (w * f64::from(TRAFFIC_PARTS)) as u32))
            .collect(),
    }
}

/// A KVS holding `t` as the split of `f`, written at millisecond `ms`.
fn kvs_with_split_at(t: &Traffic, ms: u64) -> KvsDouble {
    let mut kvs = kvs();
    kvs.put(&traffic_key("f"), lww_at(ms, encode_value(t)));
    kvs
}

/// Calls `function` as call `seq` at `now_ms`, `kvs` answering its reads;
/// returns the function each invoke names, and how many reads it took.
fn call_named(
    s: &mut Scheduler,
    now_ms: u64,
    seq: u64,
    function: &str,
    kvs: &mut KvsDouble,
) -> (Vec<String>, usize) {
    let before = kvs.requests().len();
    let sent = step(s, now_ms, call(seq, function, &[], 60_000));
    let sent = serve_kvs(s, now_ms, sent, kvs);
    let names = invokes(&sent)
        .into_iter()
        .map(|(_, plan, _)| plan.functions[0].name.clone())
        .collect();
    (names, kvs.requests().len() - before)
}

#[test]
fn a_split_sends_its_share_of_calls_to_each_version_and_the_rest_to_the_current_one() {
    let mut s = with_executors();
    let mut kvs = kvs_with_split_at(&split(&[(1, 0.3), (2, 0.1)]), 1);
    // The first call finds nothing cached: it runs the current version
    // and the split is read for the calls after it.
    let (names, reads) = call_named(&mut s, 1, 0, "f", &mut kvs);
    assert_eq!((names, reads), (vec!["f".to_string()], 1));
    let (mut v1, mut v2, mut current) = (0, 0, 0);
    for seq in 1..=2000 {
        let (names, reads) = call_named(&mut s, 2, seq, "f", &mut kvs);
        assert_eq!(reads, 0, "served from the cache");
        match names[0].as_str() {
            "f@1" => v1 += 1,
            "f@2" => v2 += 1,
            "f" => current += 1,
            other => panic!("called {other}"),
        }
    }
    // Expected 600, 200 and 1,200; binomial sds ~20, ~13, ~22.
    assert!((520..680).contains(&v1), "{v1}");
    assert!((150..250).contains(&v2), "{v2}");
    assert_eq!(v1 + v2 + current, 2000);
    assert_eq!(s.stats().split_calls, v1 + v2);
    assert_eq!(s.stats().split_reads, 1);
}

#[test]
fn a_call_is_split_alike_every_time_it_is_sent() {
    let mut s = with_executors();
    let mut kvs = kvs_with_split_at(&split(&[(1, 0.5)]), 1);
    call_named(&mut s, 1, 0, "f", &mut kvs);
    let picks: Vec<String> = (1..=50)
        .map(|seq| call_named(&mut s, 2, seq, "f", &mut kvs).0[0].clone())
        .collect();
    let mut again = with_executors();
    call_named(&mut again, 1, 0, "f", &mut kvs);
    let repeated: Vec<String> = (1..=50)
        .map(|seq| call_named(&mut again, 2, seq, "f", &mut kvs).0[0].clone())
        .collect();
    assert_eq!(picks, repeated, "the pick is a function of the call id");
    assert!(picks.iter().any(|p| p == "f@1") && picks.iter().any(|p| p == "f"));
}

#[test]
fn a_pinned_call_and_a_call_of_another_name_are_not_split() {
    let mut s = with_executors();
    let mut kvs = kvs_with_split_at(&split(&[(1, 1.0)]), 1);
    call_named(&mut s, 1, 0, "f", &mut kvs);
    assert_eq!(
        call_named(&mut s, 2, 1, "f@3", &mut kvs),
        (vec!["f@3".to_string()], 0),
        "a pinned call reads no split"
    );
    assert_eq!(call_named(&mut s, 2, 2, "f", &mut kvs).0, ["f@1"]);
    let (names, reads) = call_named(&mut s, 2, 3, "g", &mut kvs);
    assert_eq!((names, reads), (vec!["g".to_string()], 1), "g has none");
    assert_eq!(
        call_named(&mut s, 3, 4, "g", &mut kvs),
        (vec!["g".into()], 0)
    );
}

#[test]
fn a_split_older_than_the_ttl_serves_while_it_is_read_again() {
    let mut s = with_executors();
    let mut kvs = kvs_with_split_at(&split(&[(1, 1.0)]), 1);
    call_named(&mut s, 1, 0, "f", &mut kvs);
    assert_eq!(
        call_named(&mut s, 2, 1, "f", &mut kvs),
        (vec!["f@1".into()], 0)
    );

    // Another client moves every call to version 2.
    kvs.put(
        &traffic_key("f"),
        lww_at(5, encode_value(&split(&[(2, 1.0)]))),
    );
    let ttl = SchedulerConfig::default().dag_cache_ttl.as_millis() as u64;
    assert_eq!(
        call_named(&mut s, ttl - 1, 2, "f", &mut kvs),
        (vec!["f@1".into()], 0),
        "within the TTL the cached split serves"
    );
    assert_eq!(
        call_named(&mut s, ttl + 1, 3, "f", &mut kvs),
        (vec!["f@1".into()], 1),
        "past it the old split serves this call and is read again"
    );
    assert_eq!(call_named(&mut s, ttl + 2, 4, "f", &mut kvs).0, ["f@2"]);

    // Unused for twice the TTL: forgotten, read again on the next call.
    tick(&mut s, 3 * ttl + 3);
    assert_eq!(
        call_named(&mut s, 3 * ttl + 3, 5, "f", &mut kvs),
        (vec!["f".into()], 1)
    );
}

#[test]
fn a_caller_that_set_a_split_waits_for_a_read_that_sees_it() {
    let mut s = with_executors();
    let mut kvs = kvs();
    // No split yet: cached as none.
    assert_eq!(
        call_named(&mut s, 1, 0, "f", &mut kvs),
        (vec!["f".into()], 1)
    );

    // The caller sets every call to version 2, then calls.
    let written = KeyState::from_value(lww_at(5, encode_value(&split(&[(2, 1.0)]))));
    let Message::Call(mut req) = call(1, "f", &[], 60_000) else {
        unreachable!()
    };
    req.session = Session::new(vec![(traffic_key("f"), written.witness())]);
    let sent = step(&mut s, 6, Message::Call(req.clone()));
    assert!(invokes(&sent).is_empty(), "the call waits: {sent:?}");
    assert_eq!(s.queued(), 1);
    kvs.put_state(&traffic_key("f"), written.clone());
    let sent = serve_kvs(&mut s, 6, sent, &mut kvs);
    assert_eq!(invokes(&sent)[0].1.functions[0].name, "f@2");
    assert_eq!(s.queued(), 0);

    // The caller clears it (a delete): its next call runs the current one.
    let mut cleared = written;
    cleared.delete(anna::lattice::Timestamp {
        wall_ms: 7,
        logical: 0,
        writer: anna::lattice::WriterId(1),
    });
    req.id = id(2);
    req.session = Session::new(vec![(traffic_key("f"), cleared.witness())]);
    let sent = step(&mut s, 8, Message::Call(req));
    assert!(invokes(&sent).is_empty(), "the call waits: {sent:?}");
    kvs.put_state(&traffic_key("f"), cleared);
    let sent = serve_kvs(&mut s, 8, sent, &mut kvs);
    assert_eq!(invokes(&sent)[0].1.functions[0].name, "f");
}

#[test]
fn a_split_that_is_no_split_record_is_ignored() {
    let mut s = with_executors();
    let mut kvs = kvs();
    kvs.put(&traffic_key("f"), lww_at(1, vec![0xff; 3]));
    call_named(&mut s, 1, 0, "f", &mut kvs);
    assert_eq!(
        call_named(&mut s, 2, 1, "f", &mut kvs),
        (vec!["f".into()], 0)
    );
    assert_eq!(s.stats().bad_splits, 1);
}

#[test]
fn a_caller_waiting_for_a_split_past_its_deadline_times_out() {
    let mut s = with_executors();
    let written = KeyState::from_value(lww_at(5, encode_value(&split(&[(2, 1.0)]))));
    let Message::Call(mut req) = call(1, "f", &[], 100) else {
        unreachable!()
    };
    req.session = Session::new(vec![(traffic_key("f"), written.witness())]);
    step(&mut s, 0, Message::Call(req));
    assert_eq!(s.queued(), 1);
    // No KVS answers.
    let sent = tick(&mut s, 100);
    let e = error(&sent);
    assert_eq!(e.kind, anna::protocol::compute::CallErrorKind::Timeout);
    assert!(e.message.contains("traffic split of `f`"), "{}", e.message);
    assert_eq!(s.queued(), 0);
}
