//! Gossip, anti-entropy and handoff bounded by bytes, driven directly with
//! an explicit `now`.

use super::{entry_bytes, split_by_bytes, GOSSIP_BATCH};
use crate::cluster::{ClusterState, ReplicationFactor};
use crate::config::Limits;
use crate::kvs::{StorageWorker, WorkerConfig};
use crate::lattice::{KeyState, LatticeValue, Lww, Timestamp, WriterId};
use crate::protocol::RequestId;
use crate::protocol::{Ack, Address, Gossip, KeyOp, KvsRequest, Message, NodeId, NodeInfo};
use crate::role::{Input, Outbox, Role};
use crate::time::Time;
use std::time::Duration;

const MS: u64 = 1_000;
const PERIOD: Duration = Duration::from_millis(500);
const BUDGET: usize = 64 << 10;

fn node(id: u64) -> NodeInfo {
    NodeInfo {
        id: NodeId(id),
        threads: vec![Address::from(format!("w{id}").as_str())],
        boot: 1,
        direct: Vec::new(),
    }
}

fn config(limits: Limits) -> WorkerConfig {
    WorkerConfig {
        // Every key on both nodes.
        replication: ReplicationFactor {
            global: 2,
            local: 1,
        },
        anti_entropy_period: PERIOD,
        anti_entropy_bytes: BUDGET,
        limits,
        ..WorkerConfig::default()
    }
}

/// Worker `id` of a cluster of `members`.
fn worker(id: u64, members: &[u64], limits: Limits) -> StorageWorker {
    let mut w = StorageWorker::new(config(limits), node(id), 0, vec![Address::from("router")]);
    let mut state = ClusterState::default();
    for m in members {
        state.record_join(node(*m));
    }
    w.merge_cluster(Time(0), state, &mut Outbox::default());
    w
}

fn limits(max_message_bytes: usize) -> Limits {
    Limits {
        max_message_bytes,
        max_value_bytes: max_message_bytes - 4096,
        ..Limits::default()
    }
}

fn put(w: &mut StorageWorker, now: Time, key: &str, bytes: usize) {
    let at = Timestamp {
        wall_ms: 1,
        logical: 0,
        writer: WriterId(9),
    };
    let req = Message::KvsRequest(KvsRequest {
        id: RequestId(1),
        reply_to: Address::from("client"),
        ops: vec![KeyOp::Put {
            key: key.to_string(),
            value: LatticeValue::Lww(Lww::new(at, vec![7; bytes])),
        }],
        ack: Ack::FirstReplica,
        shared_memory: None,
    });
    w.step(now, Input::Message(req), &mut Outbox::default());
}

/// The gossip messages in `out`, with their receivers.
fn gossip(out: &mut Outbox) -> Vec<(Address, Gossip)> {
    out.drain()
        .filter_map(|(to, m)| match m {
            Message::Gossip(g) => Some((to, g)),
            _ => None,
        })
        .collect()
}

fn bytes_of(entries: &[(String, KeyState)]) -> usize {
    entries.iter().map(|(k, s)| entry_bytes(k, s)).sum()
}

/// Steps a tick at `now`; the gossip it sent.
fn tick(w: &mut StorageWorker, now: Time) -> Vec<(Address, Gossip)> {
    let mut out = Outbox::default();
    w.step(now, Input::Tick, &mut out);
    gossip(&mut out)
}

#[test]
fn batches_split_by_count_and_by_bytes_in_order() {
    let sizes = [10, 10, 10, 25, 100, 1, 1];
    let batches = split_by_bytes(sizes.to_vec(), 30, |n| *n);
    assert_eq!(
        batches,
        vec![vec![10, 10, 10], vec![25], vec![100], vec![1, 1]],
        "an item over the limit goes alone"
    );
    let many = split_by_bytes(vec![0u8; GOSSIP_BATCH * 2 + 1], usize::MAX, |_| 1);
    let lens: Vec<usize> = many.iter().map(Vec::len).collect();
    assert_eq!(lens, vec![GOSSIP_BATCH, GOSSIP_BATCH, 1]);
    assert!(split_by_bytes(Vec::<usize>::new(), 1, |n| *n).is_empty());
}

/// A shard of 100 small keys and one of 1 MB, every key on 2 nodes.
fn loaded_worker() -> StorageWorker {
    let mut w = worker(1, &[1, 2], Limits::default());
    for i in 0..100 {
        put(&mut w, Time(0), &format!("small{i}"), 100);
    }
    put(&mut w, Time(0), "big", 1_000_000);
    // The writes' own gossip, and anti-entropy's first slice.
    tick(&mut w, Time(MS));
    w
}

#[test]
fn an_anti_entropy_round_sends_at_most_its_byte_budget_and_a_big_key_alone() {
    let mut w = loaded_worker();
    let period = PERIOD.as_micros() as u64;
    let mut rounds: Vec<(u64, Vec<(String, KeyState)>)> = Vec::new();
    // Ten simulated minutes, a tick every 100 ms.
    for step in 1..=6_000u64 {
        let now = MS + step * 100 * MS;
        let sent = tick(&mut w, Time(now));
        if sent.is_empty() {
            continue;
        }
        let mut entries = Vec::new();
        for (to, g) in sent {
            assert_eq!(to, Address::from("w2"));
            assert_eq!(g.ack, None);
            entries.extend(g.entries);
        }
        rounds.push((now, entries));
    }
    let big = 1_000_000 + "big".len();
    for pair in rounds.windows(2) {
        let ((at, entries), (next, _)) = (&pair[0], &pair[1]);
        let bytes = bytes_of(entries);
        if entries.len() > 1 {
            assert!(bytes <= BUDGET, "{} keys, {bytes} bytes", entries.len());
        } else {
            // One key over the budget: the next round waits its worth.
            let periods = bytes.div_ceil(BUDGET).max(1) as u64;
            assert!(
                next - at >= periods * period,
                "{bytes} bytes at {at}, next round at {next}"
            );
        }
    }
    let big_sends = rounds
        .iter()
        .filter(|(_, e)| e.iter().any(|(k, _)| k == "big"))
        .count();
    assert!(big_sends >= 2, "the big key is still re-sent: {big_sends}");
    // 600 s at 64 KiB per 500 ms: the 1 MB key about every 8 s, not every
    // half second.
    let most = 600 * 2 * BUDGET / big + 1;
    assert!(big_sends <= most, "{big_sends} re-sends, at most {most}");
    for i in 0..100 {
        let key = format!("small{i}");
        let sends = rounds
            .iter()
            .filter(|(_, e)| e.iter().any(|(k, _)| *k == key))
            .count();
        assert!(sends >= 2, "{key} re-sent {sends} times");
    }
}

#[test]
fn anti_entropy_alone_brings_every_key_to_a_replica_that_missed_the_gossip() {
    let mut a = loaded_worker();
    // The replica missed all of it (the writes' gossip was lost).
    let mut b = worker(2, &[1, 2], Limits::default());
    let mut now = MS;
    let wanted = a.shard().len();
    while b.shard().len() < wanted || b.shard().iter().any(|(k, s)| a.get_state(k) != Some(s)) {
        now += 100 * MS;
        assert!(now < 120 * 1_000 * MS, "not converged after 2 minutes");
        for (to, g) in tick(&mut a, Time(now)) {
            assert_eq!(to, Address::from("w2"));
            b.step(
                Time(now),
                Input::Message(Message::Gossip(g)),
                &mut Outbox::default(),
            );
        }
    }
    assert_eq!(b.get_state("big"), a.get_state("big"));
}

#[test]
fn gossip_of_changed_keys_is_split_by_bytes() {
    // 64 KiB frames: messages of at most 32 KiB of entries.
    let mut w = worker(1, &[1, 2], limits(64 << 10));
    tick(&mut w, Time(MS));
    for i in 0..6 {
        put(&mut w, Time(2 * MS), &format!("k{i}"), 20_000);
    }
    put(&mut w, Time(2 * MS), "huge", 50_000);
    let sent = tick(&mut w, Time(20 * MS));
    let mut keys: Vec<String> = Vec::new();
    for (_, g) in &sent {
        let bytes = bytes_of(&g.entries);
        assert!(
            bytes <= 32 << 10 || g.entries.len() == 1,
            "{} entries, {bytes} bytes",
            g.entries.len()
        );
        keys.extend(g.entries.iter().map(|(k, _)| k.clone()));
    }
    keys.sort();
    assert_eq!(keys, ["huge", "k0", "k1", "k2", "k3", "k4", "k5"]);
    assert!(sent.len() >= 4, "{} messages", sent.len());
}

#[test]
fn a_handoff_is_split_by_bytes_and_each_part_acknowledged() {
    let mut w = worker(1, &[1], limits(64 << 10));
    for i in 0..6 {
        put(&mut w, Time(MS), &format!("k{i}"), 20_000);
    }
    tick(&mut w, Time(2 * MS));
    // Node 2 joins: every key is handed to it too.
    let mut state = w.cluster().clone();
    state.record_join(node(2));
    let mut out = Outbox::default();
    w.merge_cluster(Time(3 * MS), state, &mut out);
    let sent = gossip(&mut out);
    let mut keys: Vec<String> = Vec::new();
    let mut ids = Vec::new();
    for (to, g) in &sent {
        assert_eq!(*to, Address::from("w2"));
        assert!(
            bytes_of(&g.entries) <= 32 << 10,
            "{} bytes",
            bytes_of(&g.entries)
        );
        ids.push(g.ack.expect("a handoff asks for an acknowledgement"));
        keys.extend(g.entries.iter().map(|(k, _)| k.clone()));
    }
    keys.sort();
    assert_eq!(keys, ["k0", "k1", "k2", "k3", "k4", "k5"]);
    assert!(sent.len() >= 4, "{} messages", sent.len());
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), sent.len(), "one acknowledgement per message");
    assert!(!w.settled());
    for id in ids {
        let ack = Message::GossipAck {
            id,
            from: Address::from("w2"),
        };
        w.step(Time(4 * MS), Input::Message(ack), &mut Outbox::default());
    }
    assert!(w.settled(), "every part acknowledged");
}

#[test]
fn an_unacknowledged_handoff_is_sent_again_after_doubling_waits() {
    let mut w = worker(1, &[1], limits(64 << 20));
    put(&mut w, Time(MS), "big", 1 << 20);
    tick(&mut w, Time(2 * MS));
    let mut state = w.cluster().clone();
    state.record_join(node(2));
    let start = 3 * MS;
    let mut out = Outbox::default();
    w.merge_cluster(Time(start), state, &mut out);
    let handoffs = |sent: &[(Address, Gossip)]| {
        sent.iter()
            .filter(|(to, g)| *to == Address::from("w2") && g.ack.is_some())
            .count()
    };
    assert_eq!(handoffs(&gossip(&mut out)), 1);
    // Node 2 never answers: resent at 300 ms, then 600 ms later, then
    // 1.2 s later..., never more than once per wait.
    let retry = WorkerConfig::default().handoff_retry.as_micros() as u64;
    let mut resent_at = Vec::new();
    let mut now = start;
    while now < start + 5_000 * MS {
        now += 10 * MS;
        let sent = tick(&mut w, Time(now));
        if handoffs(&sent) > 0 {
            resent_at.push(now - start);
        }
    }
    assert!(resent_at.len() >= 3, "{resent_at:?}");
    let gaps: Vec<u64> = std::iter::once(resent_at[0])
        .chain(resent_at.windows(2).map(|w| w[1] - w[0]))
        .collect();
    for (k, gap) in gaps.iter().enumerate() {
        let wait = retry << k.min(6);
        assert!(
            *gap >= wait && *gap <= wait + 20 * MS,
            "resend {k} after {gap} µs, expected about {wait}: {resent_at:?}"
        );
    }
}
