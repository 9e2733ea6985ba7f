use super::*;
use crate::lattice::Lww;

fn spec(name: &str, prefix: &str, on: ChangeKind) -> TriggerSpec {
    TriggerSpec {
        name: name.into(),
        function: format!("fn-{name}"),
        prefix: prefix.into(),
        on,
    }
}

fn watch(watcher: &str, spec: TriggerSpec) -> Watch {
    Watch {
        watcher: Address::from(watcher),
        trigger: spec,
        lease_ms: 5_000,
        retry_ms: 1_000,
    }
}

/// `t` watched for trigger "t" (every key, puts) by `watcher` at `ms`.
fn watched(t: &mut Triggers, ms: u64, watcher: &str) -> WatchState {
    t.watch(
        at(ms),
        watch(watcher, spec("t", "", ChangeKind::Put)),
        &me(),
    )
}

fn me() -> Address {
    Address::from("tcp://127.0.0.1:7000")
}

fn at(ms: u64) -> Time {
    Time::from_micros(ms * 1_000)
}

fn lww(ms: u64, v: &[u8]) -> LatticeValue {
    LatticeValue::Lww(Lww::new(
        Timestamp {
            wall_ms: ms,
            logical: 0,
            writer: WriterId(7),
        },
        v.to_vec(),
    ))
}

/// What `t` sends at `ms`: every `Changes`, as (to, events).
fn send(t: &mut Triggers, ms: u64) -> Vec<(Address, Vec<ChangeEvent>)> {
    let mut out = Outbox::default();
    t.send(at(ms), &me(), &mut out);
    out.drain()
        .filter_map(|(to, m)| match m {
            Message::Changes(c) => Some((to, c.events)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_change_under_a_watched_prefix_goes_to_a_watcher_with_its_value_and_timestamp() {
    let mut t = Triggers::new(&me());
    t.watch(
        at(0),
        watch("tcp://s:1", spec("t", "up/", ChangeKind::Put)),
        &me(),
    );
    let v = lww(42, b"hello");
    t.changed(
        at(1),
        "up/a",
        ChangeKind::Put,
        Some(Timestamp {
            wall_ms: 42,
            logical: 0,
            writer: WriterId(7),
        }),
        Some(&v),
    );
    t.changed(at(1), "down/a", ChangeKind::Put, None, Some(&v));
    t.changed(at(1), "up/b", ChangeKind::Delete, None, None);
    assert_eq!(t.backlog(), 1);
    let sent = send(&mut t, 2);
    assert_eq!(sent.len(), 1);
    let (to, events) = &sent[0];
    assert_eq!(to, &Address::from("tcp://s:1"));
    assert_eq!(events[0].key, "up/a");
    assert_eq!(events[0].at.wall_ms, 42);
    assert_eq!(
        crate::protocol::compute::decode_value::<LatticeValue>(&events[0].value),
        Some(v)
    );
    // Held until done.
    assert_eq!(t.backlog(), 1);
    t.done(&[events[0].seq]);
    assert_eq!(t.backlog(), 0);
}

#[test]
fn changes_not_done_are_sent_again_after_the_retry_to_a_live_watcher() {
    let mut t = Triggers::new(&me());
    watched(&mut t, 0, "tcp://s:1");
    t.changed(at(1), "k", ChangeKind::Put, None, None);
    assert_eq!(send(&mut t, 1).len(), 1);
    // Not yet due.
    assert!(send(&mut t, 500).is_empty());
    // The first watcher lapses; another renews; the change goes there.
    watched(&mut t, 5_500, "tcp://s:2");
    let again = send(&mut t, 5_600);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, Address::from("tcp://s:2"));
    assert_eq!(t.resent, 1);
}

#[test]
fn the_window_bounds_changes_in_flight_and_the_backlog_bounds_what_is_held() {
    let mut t = Triggers::new(&me());
    watched(&mut t, 0, "tcp://s:1");
    for i in 0..MAX_BACKLOG + 5 {
        t.changed(at(1), &format!("k{i}"), ChangeKind::Put, None, None);
    }
    assert_eq!(t.backlog(), MAX_BACKLOG);
    assert_eq!(t.dropped, 5);
    let n: usize = send(&mut t, 2).iter().map(|(_, e)| e.len()).sum();
    assert_eq!(n, WINDOW);
    let state = watched(&mut t, 3, "tcp://s:1");
    assert_eq!((state.backlog, state.dropped), (MAX_BACKLOG as u64, 5));
}

#[test]
fn changes_without_a_timestamp_get_increasing_ones_and_system_keys_fire_only_system_prefixes() {
    let mut t = Triggers::new(&me());
    t.watch(
        at(0),
        watch("tcp://s:1", spec("all", "", ChangeKind::Put)),
        &me(),
    );
    t.changed(at(1), "__squall/fn/f", ChangeKind::Put, None, None);
    assert_eq!(t.backlog(), 0);
    t.changed(at(1), "a", ChangeKind::Put, None, None);
    t.changed(at(1), "b", ChangeKind::Put, None, None);
    let events: Vec<ChangeEvent> = send(&mut t, 2).into_iter().flat_map(|(_, e)| e).collect();
    assert_eq!(events.len(), 2);
    assert!(events[0].at < events[1].at);
    assert_ne!(events[0].seq, events[1].seq);
}

#[test]
fn a_trigger_without_a_watcher_for_long_is_forgotten() {
    let mut t = Triggers::new(&me());
    watched(&mut t, 0, "tcp://s:1");
    t.changed(at(1), "k", ChangeKind::Put, None, None);
    let due = t.next_due(at(10)).expect("a change waits");
    assert_eq!(due, at(10));
    send(&mut t, 6_000 + FORGET_AFTER.as_millis() as u64);
    assert!(!t.any());
    assert_eq!(t.backlog(), 0);
}
