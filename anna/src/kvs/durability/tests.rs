//! Flushing to the store and durable acknowledgements, driven directly
//! with an explicit `now` and a [`SharedStore`] the test can crash.

use crate::cluster::{ClusterState, ReplicationFactor};
use crate::kvs::{FlushPolicy, SharedStore, StorageWorker, WorkerConfig};
use crate::lattice::{LatticeValue, Lww, Timestamp, WriterId};
use crate::protocol::{
    Ack, Address, KeyOp, KvsError, KvsRequest, Message, NodeId, NodeInfo, Outcome, RequestId,
};
use crate::role::{Input, Outbox, Role};
use crate::time::Time;
use std::time::Duration;

fn me() -> NodeInfo {
    NodeInfo {
        id: NodeId(1),
        threads: vec![Address::from("w1")],
        boot: 1,
        direct: Vec::new(),
    }
}

fn config(flush: FlushPolicy) -> WorkerConfig {
    WorkerConfig {
        replication: ReplicationFactor {
            global: 1,
            local: 1,
        },
        flush,
        flush_period: Duration::from_millis(100),
        ..WorkerConfig::default()
    }
}

/// A joined worker of a one-node cluster keeping its keys in `store`.
fn worker(flush: FlushPolicy, store: &SharedStore) -> StorageWorker {
    let w = StorageWorker::new(config(flush), me(), 0, vec![Address::from("router")]);
    let (mut w, skipped) = w.with_store(Box::new(store.clone())).expect("loads");
    assert_eq!(skipped, 0);
    let mut state = ClusterState::default();
    state.record_join(me());
    w.merge_cluster(Time(0), state, &mut Outbox::default());
    w
}

fn put(key: &str, at_ms: u64) -> KeyOp {
    let ts = Timestamp {
        wall_ms: at_ms,
        logical: 0,
        writer: WriterId(3),
    };
    KeyOp::Put {
        key: key.into(),
        value: LatticeValue::Lww(Lww::new(ts, format!("v{at_ms}").into_bytes())),
    }
}

/// Sends request `id` of `ops` at `ack`; the answers sent, by request id.
fn send(w: &mut StorageWorker, now: Time, id: u64, ops: Vec<KeyOp>, ack: Ack) -> Vec<Answer> {
    let req = Message::KvsRequest(KvsRequest {
        id: RequestId(id),
        reply_to: Address::from("client"),
        ops,
        ack,
        shared_memory: None,
    });
    step(w, now, Input::Message(req))
}

type Answer = (RequestId, Vec<Outcome>);

fn step(w: &mut StorageWorker, now: Time, input: Input) -> Vec<Answer> {
    let mut out = Outbox::default();
    w.step(now, input, &mut out);
    out.drain()
        .filter_map(|(_, m)| match m {
            Message::KvsResponse(r) => {
                Some((r.id, r.results.into_iter().map(|r| r.outcome).collect()))
            }
            _ => None,
        })
        .collect()
}

fn stored() -> Outcome {
    Outcome::Stored { epoch: None }
}

#[test]
fn durable_writes_are_answered_after_one_sync_for_the_whole_batch() {
    let store = SharedStore::default();
    let mut w = worker(FlushPolicy::Periodic, &store);
    let t = Time::from_micros(1_000);
    // Three durable puts arrive in one batch: none is answered yet.
    for (id, key) in [(1, "a"), (2, "b"), (3, "c")] {
        assert!(send(&mut w, t, id, vec![put(key, 5)], Ack::Durable).is_empty());
    }
    assert_eq!(store.with(|s| s.synced("a").cloned()), None);
    // The worker asks for a tick at once; that tick syncs once and
    // answers all three.
    assert!(w.next_tick().is_some_and(|due| due <= t));
    let answers = step(&mut w, t, Input::Tick);
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert!(answers.iter().all(|(_, o)| o == &vec![stored()]));
    assert_eq!(store.with(|s| s.syncs), 1);
    for key in ["a", "b", "c"] {
        assert!(store.with(|s| s.synced(key).is_some()), "{key} on disk");
    }
    assert_eq!(w.stats().syncs, 1);
}

#[test]
fn periodic_flush_answers_at_once_and_a_crash_loses_only_the_last_period() {
    let store = SharedStore::default();
    let mut w = worker(FlushPolicy::Periodic, &store);
    let t0 = Time::from_micros(1_000);
    let answers = send(&mut w, t0, 1, vec![put("old", 1)], Ack::FirstReplica);
    assert_eq!(answers, vec![(RequestId(1), vec![stored()])]);
    // At the period's end the key is written and synced.
    let due = w.next_tick().expect("a flush is due");
    assert!(due <= t0 + Duration::from_millis(100));
    step(&mut w, t0 + Duration::from_millis(100), Input::Tick);
    assert!(store.with(|s| s.synced("old").is_some()));
    // A write after the flush, then a crash before the next one: lost.
    let t1 = t0 + Duration::from_millis(150);
    send(&mut w, t1, 2, vec![put("new", 2)], Ack::FirstReplica);
    let survivor = store.with(|s| s.crash());
    assert!(survivor.synced("old").is_some());
    assert!(survivor.synced("new").is_none());

    // A worker restarted on what survived serves "old" at once.
    let crashed = SharedStore(std::sync::Arc::new(std::sync::Mutex::new(survivor)));
    let w2 = worker(FlushPolicy::Periodic, &crashed);
    assert!(w2.get_state("old").is_some());
    assert!(w2.get_state("new").is_none());
}

#[test]
fn flush_always_holds_every_write_until_it_is_synced() {
    let store = SharedStore::default();
    let mut w = worker(FlushPolicy::Always, &store);
    let t = Time::from_micros(1_000);
    assert!(send(&mut w, t, 1, vec![put("k", 1)], Ack::FirstReplica).is_empty());
    let answers = step(&mut w, t, Input::Tick);
    assert_eq!(answers, vec![(RequestId(1), vec![stored()])]);
    assert!(store.with(|s| s.synced("k").is_some()));
}

#[test]
fn deletes_reach_the_store_and_reads_are_not_held() {
    let store = SharedStore::default();
    let mut w = worker(FlushPolicy::Periodic, &store);
    let t = Time::from_micros(1_000);
    send(&mut w, t, 1, vec![put("k", 1)], Ack::Durable);
    step(&mut w, t, Input::Tick);
    let at = Timestamp {
        wall_ms: 2,
        logical: 0,
        writer: WriterId(3),
    };
    send(
        &mut w,
        t,
        2,
        vec![KeyOp::Delete {
            key: "k".into(),
            at,
        }],
        Ack::Durable,
    );
    step(&mut w, t, Input::Tick);
    let on_disk = store.with(|s| s.synced("k").cloned()).expect("a tombstone");
    assert_eq!(on_disk.deleted_at(), Some(at));
    let read = send(
        &mut w,
        t,
        3,
        vec![KeyOp::Get { key: "k".into() }],
        Ack::Durable,
    );
    assert_eq!(read, vec![(RequestId(3), vec![Outcome::NotFound])]);
}

#[test]
fn a_node_without_a_data_directory_refuses_durable_writes_with_a_reason() {
    let mut w = StorageWorker::new(
        config(FlushPolicy::Periodic),
        me(),
        0,
        vec![Address::from("router")],
    );
    let mut state = ClusterState::default();
    state.record_join(me());
    w.merge_cluster(Time(0), state, &mut Outbox::default());
    let answers = send(&mut w, Time(1), 1, vec![put("k", 1)], Ack::Durable);
    match &answers[..] {
        [(_, outcomes)] => match &outcomes[..] {
            [Outcome::Error(KvsError::NotDurable { reason })] => {
                assert!(reason.contains("no data directory"), "{reason}")
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    // The write itself was taken (in memory).
    assert!(w.get_state("k").is_some());
}

#[test]
fn a_failing_store_fails_durable_writes_and_recovers() {
    let store = SharedStore::default();
    let mut w = worker(FlushPolicy::Periodic, &store);
    store.with(|s| s.failing = Some("disk full".into()));
    let t = Time::from_micros(1_000);
    send(&mut w, t, 1, vec![put("k", 1)], Ack::Durable);
    let answers = step(&mut w, t, Input::Tick);
    let [(_, outcomes)] = &answers[..] else {
        panic!("{answers:?}")
    };
    assert!(
        matches!(&outcomes[..], [Outcome::Error(KvsError::NotDurable { reason })] if reason.contains("disk full")),
        "{outcomes:?}"
    );
    assert_eq!(w.stats().store_errors, 1);
    // The key stays dirty: written once the store works again.
    store.with(|s| s.failing = None);
    let later = t + Duration::from_millis(100);
    step(&mut w, later, Input::Tick);
    assert!(store.with(|s| s.synced("k").is_some()));
    send(&mut w, later, 2, vec![put("k2", 2)], Ack::Durable);
    let answers = step(&mut w, later, Input::Tick);
    assert_eq!(answers, vec![(RequestId(2), vec![stored()])]);
}

#[test]
fn under_flush_always_a_write_asking_for_two_replicas_waits_for_the_sync_and_the_ack() {
    let store = SharedStore::default();
    let other = NodeInfo {
        id: NodeId(2),
        threads: vec![Address::from("w2")],
        boot: 1,
        direct: Vec::new(),
    };
    let two = WorkerConfig {
        replication: ReplicationFactor {
            global: 2,
            local: 1,
        },
        ..config(FlushPolicy::Always)
    };
    let w = StorageWorker::new(two, me(), 0, vec![Address::from("router")]);
    let (mut w, _) = w.with_store(Box::new(store.clone())).unwrap();
    let mut state = ClusterState::default();
    state.record_join(me());
    state.record_join(other);
    w.merge_cluster(Time(0), state, &mut Outbox::default());
    let t = Time::from_micros(5_000);
    let req = Message::KvsRequest(KvsRequest {
        id: RequestId(1),
        reply_to: Address::from("client"),
        ops: vec![put("k", 1)],
        ack: Ack::Replicas(2),
        shared_memory: None,
    });
    let mut out = Outbox::default();
    w.step(t, Input::Message(req), &mut out);
    let ack_id = out
        .drain()
        .find_map(|(to, m)| match m {
            Message::Gossip(g) if to.as_str() == "w2" => g.ack,
            _ => None,
        })
        .expect("the write goes to the other replica, asking for an ack");
    // Synced, but the other replica has not acknowledged: no answer.
    assert!(step(&mut w, t, Input::Tick).is_empty());
    assert!(store.with(|s| s.synced("k").is_some()));
    let ack = Message::GossipAck {
        id: ack_id,
        from: Address::from("w2"),
    };
    let answers = step(&mut w, t, Input::Message(ack));
    assert_eq!(answers, vec![(RequestId(1), vec![stored()])]);
}

/// A worker of a one-node cluster with a memory budget of `budget` bytes.
fn tiered(store: &SharedStore, budget: usize) -> StorageWorker {
    let config = WorkerConfig {
        memory_bytes: budget,
        ..config(FlushPolicy::Periodic)
    };
    let w = StorageWorker::new(config, me(), 0, vec![Address::from("router")]);
    let (mut w, _) = w.with_store(Box::new(store.clone())).unwrap();
    let mut state = ClusterState::default();
    state.record_join(me());
    w.merge_cluster(Time(0), state, &mut Outbox::default());
    w
}

fn big_put(key: &str, n: u64) -> KeyOp {
    let ts = Timestamp {
        wall_ms: n,
        logical: 0,
        writer: WriterId(3),
    };
    KeyOp::Put {
        key: key.into(),
        value: LatticeValue::Lww(Lww::new(ts, vec![n as u8; 1000])),
    }
}

fn read(w: &mut StorageWorker, now: Time, key: &str) -> Outcome {
    let got = send(
        w,
        now,
        99,
        vec![KeyOp::Get { key: key.into() }],
        Ack::FirstReplica,
    );
    got.into_iter().next().expect("answered").1.remove(0)
}

#[test]
fn three_times_the_memory_budget_is_written_and_read_back_through_the_disk_tier() {
    let store = SharedStore::default();
    // 20 KB of memory; 60 values of 1 KB.
    let mut w = tiered(&store, 20_000);
    let mut t = Time::from_micros(1_000);
    for n in 0..60u64 {
        send(
            &mut w,
            t,
            n,
            vec![big_put(&format!("k{n}"), n)],
            Ack::FirstReplica,
        );
        if n % 10 == 9 {
            t = t + Duration::from_millis(100);
            step(&mut w, t, Input::Tick);
        }
    }
    t = t + Duration::from_millis(100);
    step(&mut w, t, Input::Tick);
    let tiers = w.tiers();
    assert_eq!(tiers.memory_keys + tiers.disk_keys, 60, "{tiers:?}");
    assert!(tiers.disk_keys >= 40, "most keys left memory: {tiers:?}");
    assert!(tiers.memory_bytes <= 20_000, "{tiers:?}");
    assert!(w.shard().len() < 25);
    // Every key reads back, those on disk only promoted as they are read.
    for n in 0..60u64 {
        match read(&mut w, t, &format!("k{n}")) {
            Outcome::Value(LatticeValue::Lww(l)) => assert_eq!(l.value(), &vec![n as u8; 1000][..]),
            other => panic!("k{n}: {other:?}"),
        }
    }
    let after = w.tiers();
    assert!(after.disk_hits >= 40 && after.promoted >= 40, "{after:?}");
    // Every key is back in memory: nothing is counted on disk only.
    assert_eq!((after.disk_keys, after.disk_bytes), (0, 0), "{after:?}");
    assert_eq!(after.memory_keys, 60);
    // The next round brings memory back under its budget, keeping the keys
    // read since the round before last for last.
    t = t + Duration::from_millis(100);
    step(&mut w, t, Input::Tick);
    assert!(w.tiers().memory_bytes <= 20_000, "{:?}", w.tiers());
}

#[test]
fn a_write_to_a_key_on_disk_only_merges_with_its_disk_state() {
    use crate::lattice::{Lattice, SetLattice};
    let store = SharedStore::default();
    // A budget smaller than the one key: it leaves memory at the first
    // round after it is on disk.
    let mut w = tiered(&store, 100);
    let t = Time::from_micros(1_000);
    let set = |item: u8| LatticeValue::Set(SetLattice::new([vec![item; 200]]));
    let put = |item| KeyOp::Put {
        key: "s".into(),
        value: set(item),
    };
    send(&mut w, t, 1, vec![put(b'a')], Ack::Durable);
    step(&mut w, t, Input::Tick);
    assert!(w.get_state("s").is_none(), "left memory");
    assert_eq!(w.tiers().disk_keys, 1);
    assert_eq!(w.tiers().demoted, 1);
    // The write brings the key's disk state back and merges into it.
    send(&mut w, t, 2, vec![put(b'b')], Ack::Durable);
    step(&mut w, t, Input::Tick);
    let mut want = set(b'a');
    want.merge(set(b'b'));
    assert_eq!(
        w.peek_state("s").and_then(|s| s.value().cloned()),
        Some(want.clone())
    );
    assert_eq!(w.tiers().promoted, 1);
    assert_eq!(
        store.with(|s| s.synced("s").and_then(|s| s.value().cloned())),
        Some(want)
    );
}

#[test]
fn a_restart_with_a_budget_loads_what_fits_and_serves_the_rest_from_disk() {
    let store = SharedStore::default();
    {
        let mut w = tiered(&store, 0);
        let t = Time::from_micros(1_000);
        for n in 0..30u64 {
            send(
                &mut w,
                t,
                n,
                vec![big_put(&format!("k{n}"), n)],
                Ack::Durable,
            );
        }
        step(&mut w, t, Input::Tick);
    }
    let mut w = tiered(&store, 10_000);
    let tiers = w.tiers();
    assert_eq!(tiers.memory_keys + tiers.disk_keys, 30, "{tiers:?}");
    assert!(
        tiers.memory_keys <= 10 && tiers.disk_keys >= 20,
        "{tiers:?}"
    );
    for n in 0..30u64 {
        assert!(
            matches!(
                read(&mut w, Time::from_micros(2_000), &format!("k{n}")),
                Outcome::Value(_)
            ),
            "k{n}"
        );
    }
}

#[test]
fn storage_reports_carry_the_memory_tier_and_the_hits_since_the_last_report() {
    let store = SharedStore::default();
    let mut w = tiered(&store, 5_000);
    let mut t = Time::from_micros(1_000);
    for n in 0..20u64 {
        send(
            &mut w,
            t,
            n,
            vec![big_put(&format!("k{n}"), n)],
            Ack::FirstReplica,
        );
    }
    t = t + Duration::from_millis(100);
    step(&mut w, t, Input::Tick);
    for n in 0..20u64 {
        read(&mut w, t, &format!("k{n}"));
    }
    let report = |w: &mut StorageWorker| {
        let mut out = Outbox::default();
        let ask = Message::StatsRequest {
            id: RequestId(1),
            reply_to: Address::from("monitor"),
        };
        w.step(t, Input::Message(ask), &mut out);
        let found = out.drain().find_map(|(_, m)| match m {
            Message::StorageReport { report, .. } => Some(report),
            _ => None,
        });
        found.expect("a report")
    };
    let first = report(&mut w);
    assert_eq!(first.memory_budget, 5_000);
    assert!(first.memory_bytes > 0);
    // 20 puts found nothing to merge into; 20 reads found their keys, most
    // on disk only.
    assert_eq!(first.memory_hits + first.disk_hits, 20, "{first:?}");
    assert!(first.disk_hits >= 10, "{first:?}");
    // The next report counts only what came after.
    let second = report(&mut w);
    assert_eq!((second.memory_hits, second.disk_hits), (0, 0));
}
