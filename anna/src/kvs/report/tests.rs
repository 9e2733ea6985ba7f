//! A storage worker answering `StatsRequest`, driven directly with an
//! explicit `now`.

use crate::cluster::{ClusterState, ReplicationFactor};
use crate::kvs::{StorageWorker, WorkerConfig};
use crate::lattice::{LatticeValue, Max};
use crate::protocol::monitor::StorageReport;
use crate::protocol::{Ack, Address, KeyOp, KvsRequest, Message, NodeId, NodeInfo, RequestId};
use crate::role::{Input, Outbox, Role, TransportStats};
use crate::time::Time;
use std::time::Duration;

const SECOND: u64 = 1_000_000;

fn worker() -> StorageWorker {
    let node = NodeInfo {
        id: NodeId(7),
        threads: vec![Address::from("w0")],
        boot: 1,
        direct: Vec::new(),
    };
    let config = WorkerConfig {
        replication: ReplicationFactor {
            global: 1,
            local: 1,
        },
        stats_epoch: Duration::from_secs(1),
        ..WorkerConfig::default()
    };
    let mut w = StorageWorker::new(config, node.clone(), 0, vec![Address::from("router")]);
    let mut state = ClusterState::default();
    state.record_join(node);
    w.merge_cluster(Time(0), state, &mut Outbox::default());
    w
}

fn request(ops: Vec<KeyOp>) -> Input {
    Input::Message(Message::KvsRequest(KvsRequest {
        id: RequestId(1),
        reply_to: Address::from("client"),
        ops,
        ack: Ack::FirstReplica,
        shared_memory: None,
    }))
}

fn put(key: &str) -> KeyOp {
    KeyOp::Put {
        key: key.to_string(),
        value: LatticeValue::Max(Max::new(1)),
    }
}

fn get(key: &str) -> KeyOp {
    KeyOp::Get {
        key: key.to_string(),
    }
}

/// Steps a `StatsRequest` at `now` and returns the report sent back.
fn ask(w: &mut StorageWorker, now: Time) -> StorageReport {
    let mut out = Outbox::default();
    let reply_to = Address::from("monitor");
    let msg = Message::StatsRequest {
        id: RequestId(9),
        reply_to: reply_to.clone(),
    };
    w.step(now, Input::Message(msg), &mut out);
    let mut reports = out.drain().filter_map(|(to, m)| match m {
        Message::StorageReport { id, report } => {
            assert_eq!((to, id), (reply_to.clone(), RequestId(9)));
            Some(report)
        }
        _ => None,
    });
    let report = reports.next().expect("a storage report");
    assert!(reports.next().is_none());
    report
}

#[test]
fn a_stats_request_is_answered_with_the_last_epochs_figures() {
    let mut w = worker();
    let mut out = Outbox::default();
    w.observe_transport(TransportStats::default());
    w.step(Time(0), request(vec![put("hot"), put("cold")]), &mut out);
    for i in 1..=4 {
        w.step(Time(i * 100_000), request(vec![get("hot")]), &mut out);
    }
    w.observe_transport(TransportStats {
        busy_us: 300_000,
        ..TransportStats::default()
    });

    let report = ask(&mut w, Time(SECOND + SECOND / 2));
    assert_eq!(report.from, Address::from("w0"));
    assert_eq!((report.node, report.thread), (NodeId(7), 0));
    assert_eq!(report.epoch_ms, 1000);
    assert_eq!(report.keys, 2);
    let expected_bytes: u64 = w
        .shard()
        .iter()
        .map(|(k, s)| (k.len() + s.approx_bytes()) as u64)
        .sum();
    assert_eq!(report.bytes, expected_bytes);
    assert!(report.bytes > "hot".len() as u64 + "cold".len() as u64);
    assert_eq!(report.accesses, 6);
    assert_eq!(
        report.hot_keys,
        vec![("hot".to_string(), 5), ("cold".to_string(), 1)]
    );
    // 300 ms busy over the 1.5 s between the first input and the request.
    assert_eq!(report.busy_permille, 200);
    assert!(report.busy_permille <= 1000);
}

#[test]
fn a_stats_request_after_a_quiet_epoch_reports_no_access() {
    let mut w = worker();
    let mut out = Outbox::default();
    w.step(Time(0), request(vec![put("a"), get("a")]), &mut out);
    assert_eq!(ask(&mut w, Time(SECOND)).accesses, 2);

    // No input at all for several epochs; the request itself closes them.
    let report = ask(&mut w, Time(10 * SECOND));
    assert_eq!(report.accesses, 0);
    assert!(report.hot_keys.is_empty());
    assert_eq!(report.busy_permille, 0);
    assert_eq!(report.keys, 1, "keys held are current, not per epoch");
}

#[test]
fn a_misrouted_key_is_not_counted_as_an_access() {
    let mut w = StorageWorker::new(
        WorkerConfig::default(),
        NodeInfo {
            id: NodeId(1),
            threads: vec![Address::from("w0")],
            boot: 1,
            direct: Vec::new(),
        },
        0,
        Vec::new(),
    );
    let mut out = Outbox::default();
    w.step(Time(0), request(vec![get("elsewhere")]), &mut out);
    let report = ask(&mut w, Time(SECOND));
    assert_eq!(report.accesses, 0, "a worker not in the ring owns nothing");
}

#[test]
fn polling_a_key_that_holds_no_value_is_not_counted_as_an_access() {
    let mut w = worker();
    let mut out = Outbox::default();
    w.step(Time(0), request(vec![put("read")]), &mut out);
    // An executor waiting for a `Reference` asks every 5 ms: 190 polls of
    // a key nobody wrote, one of a deleted key, and 4 reads of a key that
    // holds a value.
    for i in 1..=190 {
        w.step(Time(i * 5_000), request(vec![get("missing")]), &mut out);
    }
    let whole = KeyOp::ReadState {
        key: "missing".to_string(),
        at_least: None,
    };
    w.step(Time(960_000), request(vec![whole]), &mut out);
    let delete = KeyOp::Delete {
        key: "gone".to_string(),
        at: crate::lattice::Timestamp {
            wall_ms: 1,
            logical: 0,
            writer: crate::lattice::WriterId(1),
        },
    };
    w.step(Time(970_000), request(vec![delete]), &mut out);
    w.step(Time(980_000), request(vec![get("gone")]), &mut out);
    for i in 0..4 {
        w.step(Time(990_000 + i), request(vec![get("read")]), &mut out);
    }

    let report = ask(&mut w, Time(SECOND + SECOND / 2));
    // The put, the delete and the four reads that found a value.
    assert_eq!(report.accesses, 6);
    assert_eq!(
        report.hot_keys,
        vec![("read".to_string(), 5), ("gone".to_string(), 1)]
    );
}
