//! Executor deaths (by silence, restart or leaving), retries, the queue,
//! deadlines, and an idle scheduler. Calls are served by an empty KVS
//! (`call_served`): their function has no traffic split.

mod common;

use anna::protocol::compute::CallErrorKind;
use anna::protocol::{Address, Message, RequestId};
use anna::role::Role;
use common::*;
use squall_scheduler::{Delivery, SchedulerConfig};

/// e1 holds the call's data; e2 keeps reporting after e1 stops.
fn call_on_e1(config: SchedulerConfig) -> squall_scheduler::Scheduler {
    let mut s = scheduler(config);
    step(&mut s, 0, report("e1", "n1", 0, &[]));
    step(&mut s, 0, report("e2", "n2", 0, &[]));
    step(&mut s, 0, cache("n1", &[("k", 100)]));
    let sent = call_served(&mut s, 0, call(1, "f", &["k"], 60_000));
    assert_eq!(invokes(&sent)[0].0.as_str(), "e1");
    step(&mut s, 1000, report("e2", "n2", 0, &[]));
    s
}

#[test]
fn executor_death_invokes_the_call_again_with_the_same_id_and_attempt_1() {
    let mut s = call_on_e1(SchedulerConfig::default());
    assert_eq!(s.next_tick(), Some(at(1500)), "e1's timeout is next");
    assert!(tick(&mut s, 1499).is_empty());
    let sent = tick(&mut s, 1500);
    let inv = invokes(&sent);
    assert_eq!(inv.len(), 1, "{sent:?}");
    let (to, plan, _) = &inv[0];
    assert_eq!(to.as_str(), "e2");
    assert_eq!(plan.id, id(1));
    assert_eq!(plan.attempt, 1);
    assert!(results(&sent).is_empty());
    assert_eq!(s.stats().retries, 1);
    assert_eq!(s.stats().executor_deaths, 1);

    // A late CallDone of attempt 0 is ignored; attempt 1's finishes it.
    step(&mut s, 1600, done(1, 0, 0, "e1", false));
    assert_eq!(s.in_flight(), 1);
    step(&mut s, 1700, done(1, 1, 0, "e2", false));
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn an_executor_restarted_before_it_fell_silent_counts_as_dead() {
    let mut s = call_on_e1(SchedulerConfig::default());
    // e1's process died and its supervisor started it again within the
    // timeout: a report with a new boot number.
    let sent = step(&mut s, 1200, report_of_boot("e1", "n1", 0, &[], 2));
    let inv = invokes(&sent);
    assert_eq!(inv.len(), 1, "{sent:?}");
    let (_, plan, _) = &inv[0];
    assert_eq!((plan.id, plan.attempt), (id(1), 1));
    assert_eq!(s.stats().executor_deaths, 1);
    // The new process is an executor like any other.
    let status = step(
        &mut s,
        1200,
        Message::ComputeStatusRequest {
            id: RequestId(1),
            reply_to: Address::from("admin"),
        },
    );
    assert!(matches!(
        &status[0].1,
        Message::ComputeStatusReply { status, .. } if status.executors.len() == 2
    ));
}

#[test]
fn when_retries_are_exhausted_the_call_fails_with_executor_died() {
    let mut s = call_on_e1(SchedulerConfig::default());
    step(&mut s, 1000, report("e3", "n3", 0, &[]));
    tick(&mut s, 1500);
    // The retry went to e2 or e3; keep only the other one alive.
    let replanned = s.stats().retries;
    assert_eq!(replanned, 1);
    let status = step(
        &mut s,
        1500,
        Message::ComputeStatusRequest {
            id: RequestId(1),
            reply_to: Address::from("admin"),
        },
    );
    assert!(matches!(
        &status[0].1,
        Message::ComputeStatusReply { status, .. } if status.in_flight == 1 && status.executors.len() == 2
    ));
    // Both e2 and e3 fall silent: the call's second executor dies.
    let sent = tick(&mut s, 2500);
    let e = error(&sent);
    assert_eq!(e.kind, CallErrorKind::ExecutorDied);
    assert!(e.message.contains("attempt 2 of 2"), "{}", e.message);
    assert!(e.message.contains("`f`"), "{}", e.message);
    assert!(
        e.message.contains("e2") || e.message.contains("e3"),
        "{}",
        e.message
    );
    assert_eq!(e.function.as_deref(), Some("f"));
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn at_most_once_fails_the_call_at_once_when_its_executor_dies() {
    let config = SchedulerConfig {
        delivery: Delivery::AtMostOnce,
        ..SchedulerConfig::default()
    };
    let mut s = call_on_e1(config);
    let sent = tick(&mut s, 1500);
    assert!(invokes(&sent).is_empty());
    let e = error(&sent);
    assert_eq!(e.kind, CallErrorKind::ExecutorDied);
    assert!(e.message.contains("e1") && e.message.contains("at-most-once"));
    assert_eq!(results(&sent)[0].id, id(1));
}

#[test]
fn with_no_executor_a_call_waits_and_is_dispatched_when_one_reports() {
    let mut s = scheduler(SchedulerConfig::default());
    let sent = call_served(&mut s, 0, call(1, "f", &[], 1000));
    assert!(sent.is_empty());
    assert_eq!(s.queued(), 1);
    assert_eq!(s.next_tick(), Some(at(1000)), "the queued call's deadline");
    let sent = step(&mut s, 10, report("e1", "n1", 0, &[]));
    let inv = invokes(&sent);
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0].0.as_str(), "e1");
    assert_eq!(
        inv[0].1.deadline_ms, 1000,
        "the deadline counts from arrival"
    );
    assert_eq!(s.queued(), 0);
}

#[test]
fn a_call_waits_for_capacity_and_goes_when_a_call_finishes() {
    let config = SchedulerConfig {
        executor_capacity: 1,
        ..SchedulerConfig::default()
    };
    let mut s = scheduler(config);
    step(&mut s, 0, report("e1", "n1", 0, &[]));
    call_served(&mut s, 0, call(1, "f", &[], 1000));
    assert!(call_served(&mut s, 0, call(2, "f", &[], 1000)).is_empty());
    assert_eq!(s.queued(), 1);
    let sent = step(&mut s, 5, done(1, 0, 0, "e1", false));
    let inv = invokes(&sent);
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0].1.id, id(2));
}

#[test]
fn a_queued_call_past_its_deadline_times_out() {
    let mut s = scheduler(SchedulerConfig::default());
    call_served(&mut s, 0, call(1, "f", &[], 1000));
    assert!(tick(&mut s, 999).is_empty());
    let sent = tick(&mut s, 1000);
    let e = error(&sent);
    assert_eq!(e.kind, CallErrorKind::Timeout);
    assert!(
        e.message.contains("no executor is registered"),
        "{}",
        e.message
    );
    assert_eq!(s.queued(), 0);
    assert_eq!(s.next_tick(), None);
}

#[test]
fn a_full_queue_refuses_with_overloaded() {
    let config = SchedulerConfig {
        queue_capacity: 1,
        ..SchedulerConfig::default()
    };
    let mut s = scheduler(config);
    assert!(call_served(&mut s, 0, call(1, "f", &[], 1000)).is_empty());
    let sent = call_served(&mut s, 0, call(2, "f", &[], 1000));
    let e = error(&sent);
    assert_eq!(e.kind, CallErrorKind::Overloaded);
    assert_eq!(results(&sent)[0].id, id(2));
    assert_eq!(s.stats().overloaded, 1);
}

#[test]
fn a_call_in_flight_past_its_deadline_times_out_and_is_forgotten() {
    let mut s = scheduler(SchedulerConfig::default());
    step(&mut s, 0, report("e1", "n1", 0, &[]));
    call_served(&mut s, 0, call(1, "f", &[], 100));
    let grace = SchedulerConfig::default().deadline_grace.as_millis() as u64;
    step(&mut s, 50, report("e1", "n1", 0, &[]));
    assert!(results(&tick(&mut s, 100 + grace - 1)).is_empty());
    let sent = tick(&mut s, 100 + grace);
    assert_eq!(error(&sent).kind, CallErrorKind::Timeout);
    assert_eq!(s.in_flight(), 0);
    // A late CallDone changes nothing.
    step(&mut s, 700, done(1, 0, 0, "e1", false));
    assert_eq!(s.stats().completed, 0);
}

#[test]
fn a_failed_function_ends_the_call() {
    let mut s = scheduler(SchedulerConfig::default());
    step(&mut s, 0, report("e1", "n1", 0, &[]));
    call_served(&mut s, 0, call(1, "f", &[], 1000));
    let sent = step(&mut s, 1, done(1, 0, 0, "e1", true));
    assert!(results(&sent).is_empty(), "the executor told the caller");
    assert_eq!(s.in_flight(), 0);
    assert_eq!(s.stats().failed, 1);
}

#[test]
fn an_idle_scheduler_asks_for_no_tick() {
    let mut s = scheduler(SchedulerConfig::default());
    assert_eq!(s.next_tick(), None);
    // One executor, one call, done; then the executor goes away.
    step(&mut s, 0, report("e1", "n1", 0, &[]));
    call_served(&mut s, 0, call(1, "f", &[], 1000));
    step(&mut s, 1, done(1, 0, 0, "e1", false));
    assert_eq!(s.next_tick(), Some(at(1500)));
    tick(&mut s, 1500);
    assert_eq!(s.next_tick(), None);
    assert!(tick(&mut s, 1501).is_empty());
}

#[test]
fn status_requests_are_answered_with_named_counters() {
    let mut s = scheduler(SchedulerConfig::default());
    call_served(&mut s, 0, call(1, "f", &[], 1000));
    let sent = step(
        &mut s,
        0,
        Message::StatusRequest {
            id: RequestId(9),
            reply_to: Address::from("admin"),
        },
    );
    let Message::StatusReply { id, counters, .. } = &sent[0].1 else {
        panic!("{sent:?}");
    };
    assert_eq!(*id, RequestId(9));
    let get = |name: &str| counters.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    assert_eq!(get("calls"), Some(1));
    assert_eq!(get("queued"), Some(1));
    assert_eq!(get("retries"), Some(0));
    assert_eq!(get("received"), Some(0));
}

fn leaving(executor: &str) -> Message {
    Message::ExecutorLeaving {
        executor: Address::from(executor),
    }
}

fn executors_in_status(s: &mut squall_scheduler::Scheduler, now_ms: u64) -> Vec<String> {
    let request = Message::ComputeStatusRequest {
        id: RequestId(1),
        reply_to: Address::from("admin"),
    };
    match &step(s, now_ms, request)[0].1 {
        Message::ComputeStatusReply { status, .. } => (status.executors.iter())
            .map(|r| r.executor.to_string())
            .collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_executor_leaving_has_its_call_replanned_at_once_on_another_executor() {
    let mut s = call_on_e1(SchedulerConfig::default());
    // Well before e1's executor_timeout (1500 ms) would have run out.
    let sent = step(&mut s, 1001, leaving("e1"));
    let inv = invokes(&sent);
    assert_eq!(inv.len(), 1, "{sent:?}");
    let (to, plan, _) = &inv[0];
    assert_eq!(to.as_str(), "e2");
    assert_eq!((plan.id, plan.attempt), (id(1), 1));
    assert!(results(&sent).is_empty());
    assert_eq!(s.stats().retries, 1);
    assert_eq!(s.stats().executor_deaths, 1);
    assert_eq!(s.stats().executors_left, 1);
    assert_eq!(executors_in_status(&mut s, 1001), ["e2"]);
    // Its timeout passing later changes nothing: it is already gone.
    assert!(invokes(&tick(&mut s, 1500)).is_empty());
    assert_eq!(s.stats().executor_deaths, 1);
    // A repeated goodbye is ignored.
    assert!(step(&mut s, 1501, leaving("e1")).is_empty());
    assert_eq!(s.stats().executors_left, 1);
}

#[test]
fn no_call_is_placed_on_an_executor_after_it_leaves_until_it_reports_from_a_new_process() {
    let mut s = scheduler(SchedulerConfig::default());
    step(&mut s, 0, report("e1", "n1", 0, &[]));
    step(&mut s, 0, report("e2", "n2", 0, &[]));
    step(&mut s, 0, cache("n1", &[("k", 100)]));
    step(&mut s, 10, leaving("e1"));
    // e1's cache holds the data, but e1 is gone.
    for seq in 1..=3 {
        let sent = step(&mut s, 20, call(seq, "f", &["k"], 60_000));
        assert_eq!(invokes(&sent)[0].0.as_str(), "e2", "call {seq}");
    }
    // A new process at the same address (a new boot) is a new executor,
    // placed on again.
    step(&mut s, 30, report_of_boot("e1", "n1", 0, &[], 2));
    assert_eq!(executors_in_status(&mut s, 30), ["e1", "e2"]);
    let sent = step(&mut s, 40, call(4, "f", &["k"], 60_000));
    assert_eq!(invokes(&sent)[0].0.as_str(), "e1");
}

#[test]
fn at_most_once_fails_the_call_at_once_when_its_executor_leaves() {
    let config = SchedulerConfig {
        delivery: Delivery::AtMostOnce,
        ..SchedulerConfig::default()
    };
    let mut s = call_on_e1(config);
    let sent = step(&mut s, 1001, leaving("e1"));
    assert!(invokes(&sent).is_empty(), "{sent:?}");
    let e = error(&sent);
    assert_eq!(e.kind, CallErrorKind::ExecutorDied);
    assert!(e.message.contains("e1") && e.message.contains("at-most-once"));
    assert_eq!(results(&sent)[0].id, id(1));
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn an_unknown_executor_leaving_changes_nothing() {
    let mut s = call_on_e1(SchedulerConfig::default());
    assert!(step(&mut s, 1001, leaving("e9")).is_empty());
    assert_eq!(s.stats().executor_deaths, 0);
    assert_eq!(s.in_flight(), 1);
    assert_eq!(executors_in_status(&mut s, 1001), ["e1", "e2"]);
}

#[test]
fn a_scheduler_stalled_past_the_executor_timeout_declares_no_executor_dead_when_it_wakes() {
    let mut s = scheduler(SchedulerConfig::default());
    step(&mut s, 0, report("e1", "n1", 0, &[]));
    step(&mut s, 0, report("e2", "n2", 0, &[]));
    // The scheduler was stopped for 10 s; its overdue tick runs before it
    // reads the reports waiting in its socket (as the driver does).
    tick(&mut s, 10_000);
    assert_eq!(s.stats().executor_deaths, 0, "its own stall counted");
    step(&mut s, 10_001, report("e1", "n1", 0, &[]));
    step(&mut s, 10_001, report("e2", "n2", 0, &[]));
    assert_eq!(executors_in_status(&mut s, 10_001), ["e1", "e2"]);
    // A real silence is still noticed: e2 stops reporting.
    for t in (10_500..=14_000).step_by(500) {
        step(&mut s, t, report("e1", "n1", 0, &[]));
        tick(&mut s, t);
    }
    assert_eq!(s.stats().executor_deaths, 1);
    assert_eq!(executors_in_status(&mut s, 14_000), ["e1"]);
}

#[test]
fn a_scheduler_answers_a_ping_with_its_boot_so_callers_notice_a_restart() {
    let ping = || Message::Ping {
        id: RequestId(3),
        reply_to: Address::from("caller"),
    };
    let boot_of = |s: &mut squall_scheduler::Scheduler| match &step(s, 1, ping())[0].1 {
        Message::Pong { id, boot } => {
            assert_eq!(*id, RequestId(3));
            *boot
        }
        other => panic!("{other:?}"),
    };
    let mut first = scheduler(SchedulerConfig::default());
    let mut restarted = squall_scheduler::Scheduler::new(
        SchedulerConfig::default(),
        Address::from("scheduler"),
        vec![Address::from(ROUTER)],
        anna::lattice::WriterId(8),
    );
    let (a, b) = (boot_of(&mut first), boot_of(&mut restarted));
    assert_ne!(a, 0);
    assert_ne!(
        a, b,
        "the same address after a restart answers another boot"
    );
    assert_eq!(boot_of(&mut first), a, "one process keeps its boot");
}
