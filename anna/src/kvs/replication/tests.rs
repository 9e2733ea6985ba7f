//! Replication metadata keys, driven directly with synthetic messages.

use crate::cluster::{replication_key, ClusterState, ReplicationFactor};
use crate::kvs::{StorageWorker, WorkerConfig};
use crate::lattice::{KeyState, LatticeValue, Lww, Timestamp, WriterId};
use crate::protocol::{Ack, Address, KeyOp, KvsRequest, Membership, Message, NodeId, NodeInfo};
use crate::protocol::{Gossip, RequestId};
use crate::role::{Input, Outbox, Role};
use crate::time::Time;

const DEFAULT: ReplicationFactor = factor(1, 1);

const fn factor(global: u8, local: u8) -> ReplicationFactor {
    ReplicationFactor { global, local }
}

fn worker() -> StorageWorker {
    let node = NodeInfo {
        id: NodeId(1),
        threads: vec![Address::from("w0")],
        boot: 1,
        direct: Vec::new(),
    };
    let config = WorkerConfig {
        replication: DEFAULT,
        ..WorkerConfig::default()
    };
    let routers = vec![Address::from("router-a"), Address::from("router-b")];
    let mut w = StorageWorker::new(config, node.clone(), 0, routers);
    let mut state = ClusterState::default();
    state.record_join(node);
    w.merge_cluster(Time(0), state, &mut Outbox::default());
    w
}

fn at(wall_ms: u64) -> Timestamp {
    Timestamp {
        wall_ms,
        logical: 0,
        writer: WriterId(9),
    }
}

fn request(op: KeyOp) -> Input {
    Input::Message(Message::KvsRequest(KvsRequest {
        id: RequestId(1),
        reply_to: Address::from("client"),
        ops: vec![op],
        ack: Ack::FirstReplica,
        shared_memory: None,
    }))
}

fn put_override(key: &str, when: u64, bytes: Vec<u8>) -> Input {
    request(KeyOp::Put {
        key: replication_key(key),
        value: LatticeValue::Lww(Lww::new(at(when), bytes)),
    })
}

/// Every replication announcement sent, with its router.
fn announcements(out: &mut Outbox) -> Vec<(String, String, Timestamp, ReplicationFactor)> {
    out.drain()
        .filter_map(|(to, m)| match m {
            Message::Membership(Membership::SetReplication { key, at, factor }) => {
                Some((to.0, key, at, factor))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_write_of_a_metadata_key_is_announced_to_every_router_with_its_timestamp() {
    let mut w = worker();
    let mut out = Outbox::default();
    let three = factor(3, 2);
    w.step(
        Time(1_000),
        put_override("hot", 5, three.to_bytes()),
        &mut out,
    );
    let sent = announcements(&mut out);
    assert_eq!(
        sent,
        vec![
            ("router-a".into(), "hot".into(), at(5), three),
            ("router-b".into(), "hot".into(), at(5), three),
        ]
    );
    // The override is an ordinary key: it reads back.
    w.step(
        Time(1_000),
        request(KeyOp::Get {
            key: replication_key("hot"),
        }),
        &mut out,
    );
    let read = out.drain().find_map(|(_, m)| match m {
        Message::KvsResponse(r) => Some(r),
        _ => None,
    });
    assert!(format!("{read:?}").contains("Value(Lww"), "{read:?}");
}

#[test]
fn deleting_the_metadata_key_announces_the_default_factor() {
    let mut w = worker();
    let mut out = Outbox::default();
    let three = factor(3, 1);
    w.step(
        Time(1_000),
        put_override("hot", 5, three.to_bytes()),
        &mut out,
    );
    out.drain().for_each(drop);
    w.step(
        Time(1_000),
        request(KeyOp::Delete {
            key: replication_key("hot"),
            at: at(6),
        }),
        &mut out,
    );
    let sent = announcements(&mut out);
    assert_eq!(sent.len(), 2);
    assert!(sent
        .iter()
        .all(|(_, k, t, f)| k == "hot" && *t == at(6) && *f == DEFAULT));
}

#[test]
fn metadata_merged_by_gossip_is_announced_and_garbage_is_counted_not_announced() {
    let mut w = worker();
    let mut out = Outbox::default();
    let two = factor(2, 1);
    let gossip = Gossip {
        from: Address::from("w-other"),
        entries: vec![(
            replication_key("warm"),
            KeyState::from_value(LatticeValue::Lww(Lww::new(at(7), two.to_bytes()))),
        )],
        ack: None,
    };
    w.step(
        Time(1_000),
        Input::Message(Message::Gossip(gossip)),
        &mut out,
    );
    assert_eq!(announcements(&mut out).len(), 2);

    w.step(Time(1_000), put_override("odd", 8, vec![0, 1, 2]), &mut out);
    assert!(announcements(&mut out).is_empty());
    assert_eq!(w.stats.bad_replication_metadata, 1);
}

#[test]
fn anti_entropy_announces_held_overrides_again() {
    let mut w = worker();
    let mut out = Outbox::default();
    let three = factor(3, 1);
    w.step(
        Time(1_000),
        put_override("hot", 5, three.to_bytes()),
        &mut out,
    );
    out.drain().for_each(drop);
    // Run ticks for longer than one anti-entropy period.
    let mut now = Time(1_000);
    let mut again = 0;
    while now < Time(3_000_000) {
        now = w.next_tick().unwrap_or(Time(3_000_000)).max(now);
        w.step(now, Input::Tick, &mut out);
        again += announcements(&mut out).len();
        now = Time(now.0 + 1);
    }
    assert!(again >= 2, "re-announced {again} times");
}
