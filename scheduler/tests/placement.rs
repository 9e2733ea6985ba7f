//! Where single calls go: referenced bytes, overload, warmth, ties.

mod common;

use common::*;
use squall_scheduler::SchedulerConfig;

#[test]
fn a_call_goes_where_the_cache_holds_most_referenced_bytes() {
    let mut s = scheduler(SchedulerConfig::default());
    step(&mut s, 0, report("e1", "n1", 0, &[]));
    step(&mut s, 0, report("e2", "n2", 0, &[]));
    step(&mut s, 0, cache("n1", &[("small", 10), ("other", 5000)]));
    step(&mut s, 0, cache("n2", &[("big", 1000)]));

    let sent = step(&mut s, 1, call(1, "f", &["small", "big"], 1000));
    let inv = invokes(&sent);
    assert_eq!(inv.len(), 1);
    let (to, plan, function) = &inv[0];
    assert_eq!(to.as_str(), "e2");
    assert_eq!(*function, 0);
    assert_eq!(plan.functions[0].executor.as_str(), "e2");
    assert_eq!(plan.deadline_ms, 1 + 1000);
    assert_eq!(plan.attempt, 0);
    assert_eq!(plan.dag, None);
    assert_eq!(plan.scheduler.as_str(), "scheduler");
    assert!(plan.functions[0].upstream.is_empty() && plan.functions[0].downstream.is_empty());

    let sent = step(&mut s, 2, call(2, "f", &["small"], 1000));
    assert_eq!(invokes(&sent)[0].0.as_str(), "e1");
}

#[test]
fn a_node_whose_cache_stopped_reporting_gets_no_call_while_another_can_take_it() {
    let mut s = scheduler(SchedulerConfig::default());
    step(&mut s, 0, report("e1", "n1", 0, &[]));
    step(&mut s, 0, report("e2", "n2", 0, &[]));
    step(&mut s, 0, cache("n1", &[("big", 1000)]));
    step(&mut s, 0, cache("n2", &[]));
    // n1's cache stalls; its executor and n2's cache go on reporting.
    for t in (500..=2000).step_by(500) {
        step(&mut s, t, report("e1", "n1", 0, &[]));
        step(&mut s, t, report("e2", "n2", 0, &[]));
        step(&mut s, t, cache("n2", &[]));
    }
    // Its data would draw the call there, but reads there would wait.
    let sent = step(&mut s, 2001, call(1, "f", &["big"], 1000));
    assert_eq!(invokes(&sent)[0].0.as_str(), "e2");
    // Reporting again, it is preferred again.
    step(&mut s, 2100, cache("n1", &[("big", 1000)]));
    let sent = step(&mut s, 2101, call(2, "f", &["big"], 1000));
    assert_eq!(invokes(&sent)[0].0.as_str(), "e1");
}

#[test]
fn an_executor_reporting_busy_is_skipped_despite_its_data() {
    let mut s = scheduler(SchedulerConfig::default());
    step(&mut s, 0, report("e1", "n1", 0, &[]));
    step(&mut s, 0, report("e2", "n2", 950, &["f"]));
    step(&mut s, 0, cache("n2", &[("k", 1000)]));
    let sent = step(&mut s, 1, call(1, "f", &["k"], 1000));
    assert_eq!(invokes(&sent)[0].0.as_str(), "e1");
}

#[test]
fn an_executor_at_capacity_is_skipped_until_a_call_finishes() {
    let config = SchedulerConfig {
        executor_capacity: 1,
        ..SchedulerConfig::default()
    };
    let mut s = scheduler(config);
    step(&mut s, 0, report("e1", "n1", 0, &[]));
    step(&mut s, 0, report("e2", "n2", 0, &[]));
    step(&mut s, 0, cache("n2", &[("k", 1000)]));
    let first = step(&mut s, 1, call(1, "f", &["k"], 1000));
    assert_eq!(invokes(&first)[0].0.as_str(), "e2");
    let second = step(&mut s, 2, call(2, "f", &["k"], 1000));
    assert_eq!(invokes(&second)[0].0.as_str(), "e1", "e2 is at capacity");
    step(&mut s, 3, done(1, 0, 0, "e2", false));
    let third = step(&mut s, 4, call(3, "f", &["k"], 1000));
    assert_eq!(invokes(&third)[0].0.as_str(), "e2", "e2 is free again");
}

#[test]
fn with_no_data_anywhere_the_executor_where_the_function_is_warm_wins() {
    let mut s = scheduler(SchedulerConfig::default());
    step(&mut s, 0, report("e1", "n1", 0, &["g"]));
    step(&mut s, 0, report("e2", "n2", 0, &["f"]));
    step(&mut s, 0, report("e3", "n3", 0, &[]));
    for seq in 0..3 {
        let sent = step(&mut s, 1, call(seq, "f", &[], 1000));
        assert_eq!(invokes(&sent)[0].0.as_str(), "e2");
    }
}

#[test]
fn equal_executors_share_calls() {
    let mut s = scheduler(SchedulerConfig::default());
    step(&mut s, 0, report("e1", "n1", 0, &[]));
    step(&mut s, 0, report("e2", "n2", 0, &[]));
    let a = invokes(&step(&mut s, 1, call(1, "f", &[], 1000)))[0]
        .0
        .clone();
    let b = invokes(&step(&mut s, 1, call(2, "f", &[], 1000)))[0]
        .0
        .clone();
    assert_ne!(a, b, "the second call goes to the less loaded executor");
    step(&mut s, 2, done(1, 0, 0, a.as_str(), false));
    step(&mut s, 2, done(2, 0, 0, b.as_str(), false));
    let c = invokes(&step(&mut s, 3, call(3, "f", &[], 1000)))[0]
        .0
        .clone();
    let d = invokes(&step(&mut s, 3, call(4, "f", &[], 1000)))[0]
        .0
        .clone();
    assert_ne!(c, d);
}

/// A report of an executor with `running` of its `limit` coroutine slots
/// taken, `f` among its coroutine functions.
fn async_report(executor: &str, running: u32, limit: u32) -> anna::protocol::Message {
    let mut msg = report(executor, "n1", 0, &["f"]);
    if let anna::protocol::Message::ExecutorReport(r) = &mut msg {
        r.async_running = running;
        r.async_limit = limit;
        r.async_functions = vec!["f".to_string()];
    }
    msg
}

#[test]
fn a_coroutine_function_fills_the_free_coroutine_slots_beyond_the_capacity() {
    let config = SchedulerConfig {
        executor_capacity: 1,
        ..SchedulerConfig::default()
    };
    let mut s = scheduler(config);
    // One slot of three taken: room for the capacity (1) plus two.
    step(&mut s, 0, async_report("e1", 1, 3));
    for seq in 0..3 {
        let sent = step(&mut s, 1, call(seq, "f", &[], 1000));
        assert_eq!(invokes(&sent).len(), 1, "call {seq} is placed");
    }
    let sent = step(&mut s, 2, call(3, "f", &[], 1000));
    assert!(invokes(&sent).is_empty(), "the fourth call waits");
    // A plain function sees only the capacity, which is taken.
    let sent = step(&mut s, 3, call(4, "g", &[], 1000));
    assert!(invokes(&sent).is_empty(), "a plain call waits");
    // A coroutine finishes: the waiting call of f goes.
    let sent = step(&mut s, 4, done(0, 0, 0, "e1", false));
    assert_eq!(invokes(&sent).len(), 1);
}

#[test]
fn with_every_coroutine_slot_taken_a_coroutine_function_sees_only_the_capacity() {
    let config = SchedulerConfig {
        executor_capacity: 1,
        ..SchedulerConfig::default()
    };
    let mut s = scheduler(config);
    step(&mut s, 0, async_report("e1", 3, 3));
    let sent = step(&mut s, 1, call(0, "f", &[], 1000));
    assert_eq!(invokes(&sent).len(), 1);
    let sent = step(&mut s, 2, call(1, "f", &[], 1000));
    assert!(invokes(&sent).is_empty());
}

#[test]
fn an_executor_of_short_functions_may_have_more_outstanding_and_one_of_long_ones_not() {
    // Capacity 2, ten calls: two go to e1 and eight wait; e1 then finishes
    // calls 1 and 2 `apart_ms` apart (the second while another is
    // outstanding: one sample of its time per function). Returns how many
    // invocations the second completion let go.
    let run = |apart_ms: u64| {
        let config = SchedulerConfig {
            executor_capacity: 2,
            ..SchedulerConfig::default()
        };
        let mut s = scheduler(config);
        step(&mut s, 0, report("e1", "n1", 0, &[]));
        let placed: usize = (1..=10)
            .map(|seq| invokes(&step(&mut s, 1, call(seq, "f", &[], 60_000))).len())
            .sum();
        assert_eq!(placed, 2, "the capacity, nothing measured yet");
        let first = step(&mut s, 2, done(1, 0, 0, "e1", false));
        assert_eq!(invokes(&first).len(), 1, "one freed, one more goes");
        let second = step(&mut s, 2 + apart_ms, done(2, 0, 0, "e1", false));
        (invokes(&second).len(), s)
    };
    // 1 ms a function: five fit in QUEUED_WORK (5 ms); one outstanding
    // after the completion, so four go.
    assert_eq!(run(1).0, 4);
    // 50 ms a function: the capacity of 2 as before.
    assert_eq!(run(50).0, 1);
    // Another function, not timed there, keeps the capacity: a burst of
    // it after many short calls is not piled onto the executor.
    let (_, mut s) = run(1);
    let sent = step(&mut s, 4, call(100, "g", &[], 60_000));
    assert!(invokes(&sent).is_empty(), "g waits: e1 has 5 outstanding");
}
