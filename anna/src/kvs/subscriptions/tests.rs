//! A storage worker's subscriptions, driven directly with synthetic
//! messages and an explicit `now`.

use super::*;
use crate::cluster::{ClusterState, ReplicationFactor};
use crate::kvs::WorkerConfig;
use crate::lattice::{LatticeValue, Max};
use crate::protocol::{Ack, KeyOp, KvsRequest, NodeId, NodeInfo, RequestId};
use crate::role::{Input, Role};

const MS: u64 = 1000;

fn worker(joined: bool) -> StorageWorker {
    let node = NodeInfo {
        id: NodeId(1),
        threads: vec![Address::from("w0")],
        boot: 1,
        direct: Vec::new(),
    };
    let config = WorkerConfig {
        replication: ReplicationFactor {
            global: 1,
            local: 1,
        },
        ..WorkerConfig::default()
    };
    let mut w = StorageWorker::new(config, node.clone(), 0, vec![Address::from("router")]);
    if joined {
        let mut state = ClusterState::default();
        state.record_join(node);
        w.merge_cluster(Time(0), state, &mut Outbox::default());
    }
    w
}

fn subscribe(who: &str, keys: &[&str], lease_ms: u32) -> Input {
    Input::Message(Message::Subscribe(Subscribe {
        subscriber: Address::from(who),
        keys: keys.iter().map(|k| k.to_string()).collect(),
        lease_ms,
    }))
}

fn put(key: &str, n: u64) -> Input {
    Input::Message(Message::KvsRequest(KvsRequest {
        id: RequestId(n),
        reply_to: Address::from("client"),
        ops: vec![KeyOp::Put {
            key: key.to_string(),
            value: LatticeValue::Max(Max::new(n as i64)),
        }],
        ack: Ack::FirstReplica,
        shared_memory: None,
    }))
}

/// A pushed gossip: its sender, and its entries' keys and values.
type Pushed = (Address, Vec<(Key, Option<LatticeValue>)>);

/// Every gossip sent to `to`.
fn gossip_to(out: &mut Outbox, to: &str) -> Vec<Pushed> {
    out.drain()
        .filter_map(|(a, m)| match m {
            Message::Gossip(g) if a.as_str() == to => {
                assert_eq!(g.ack, None, "pushes ask for no acknowledgement");
                let entries = g
                    .entries
                    .into_iter()
                    .map(|(k, s)| (k, s.value().cloned()))
                    .collect();
                Some((g.from, entries))
            }
            _ => None,
        })
        .collect()
}

fn max(n: u64) -> Option<LatticeValue> {
    Some(LatticeValue::Max(Max::new(n as i64)))
}

fn counter(w: &StorageWorker, name: &str) -> u64 {
    let counters = w
        .stats
        .counters(w.shard.len(), w.subs.len(), w.shard.tiers());
    counters
        .into_iter()
        .find(|(k, _)| k == name)
        .map_or_else(|| panic!("no counter {name}"), |(_, v)| v)
}

#[test]
fn a_subscriber_gets_the_current_state_at_once_and_every_change_at_the_next_gossip_round() {
    let mut w = worker(true);
    let mut out = Outbox::default();
    w.step(Time(MS), put("k", 3), &mut out);
    out.drain().for_each(drop);

    w.step(
        Time(2 * MS),
        subscribe("cache", &["k", "unheld"], 10_000),
        &mut out,
    );
    assert_eq!(
        gossip_to(&mut out, "cache"),
        vec![(Address::from("w0"), vec![("k".to_string(), max(3))])],
        "the held key's state at once; nothing for a key not held yet"
    );
    assert_eq!(w.subscriptions(), 2);

    w.step(Time(3 * MS), put("k", 7), &mut out);
    w.step(Time(3 * MS), put("unheld", 1), &mut out);
    out.drain().for_each(drop);
    let due = w.next_tick().expect("a gossip round is due");
    w.step(due.max(Time(4 * MS)), Input::Tick, &mut out);
    let pushed = gossip_to(&mut out, "cache");
    assert_eq!(pushed.len(), 1, "one message per subscriber: {pushed:?}");
    let mut entries = pushed[0].1.clone();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        entries,
        vec![("k".to_string(), max(7)), ("unheld".to_string(), max(1))]
    );
    assert_eq!(counter(&w, "subscription_pushes"), 3);
    assert_eq!(counter(&w, "subscribes"), 1);
}

#[test]
fn lapsed_subscriptions_get_nothing_and_are_pruned() {
    let mut w = worker(true);
    let mut out = Outbox::default();
    w.step(Time(MS), subscribe("cache", &["k"], 100), &mut out);
    assert_eq!(w.subscriptions(), 1);
    assert!(w.subs.prune_due().is_some(), "a tick is asked for to prune");
    let later = Time(MS) + Duration::from_millis(200);
    w.step(later, put("k", 1), &mut out);
    out.drain().for_each(drop);
    w.step(later + Duration::from_millis(20), Input::Tick, &mut out);
    assert!(gossip_to(&mut out, "cache").is_empty());
    assert_eq!(w.subscriptions(), 0);
    assert_eq!(
        w.subs.prune_due(),
        None,
        "nothing left to prune: no tick for it"
    );
}

#[test]
fn keys_not_owned_are_ignored() {
    let mut w = worker(false);
    let mut out = Outbox::default();
    w.step(Time(MS), subscribe("cache", &["a", "b"], 10_000), &mut out);
    assert_eq!(w.subscriptions(), 0);
    assert_eq!(counter(&w, "subscriptions_not_mine"), 2);
    assert!(out.is_empty());
}

#[test]
fn subscribers_per_key_are_bounded_and_renewals_do_not_duplicate() {
    let mut w = worker(true);
    let mut out = Outbox::default();
    for i in 0..(MAX_SUBSCRIBERS_PER_KEY + 6) {
        w.step(
            Time(MS),
            subscribe(&format!("c{i}"), &["k"], 10_000),
            &mut out,
        );
    }
    assert_eq!(w.subscriptions(), MAX_SUBSCRIBERS_PER_KEY);
    assert_eq!(counter(&w, "subscriptions_refused"), 6);
    // A renewal by a subscriber already there is taken, not refused.
    w.step(Time(2 * MS), subscribe("c0", &["k"], 20_000), &mut out);
    assert_eq!(w.subscriptions(), MAX_SUBSCRIBERS_PER_KEY);
    assert_eq!(counter(&w, "subscriptions_refused"), 6);
    // Once leases lapse, room is made for newcomers.
    let late = Time(MS) + Duration::from_secs(11);
    w.step(late, subscribe("newcomer", &["k"], 10_000), &mut out);
    assert_eq!(w.subscriptions(), 2, "c0 (renewed) and the newcomer");
}

#[test]
fn the_table_renews_without_shortening_and_prunes_lapsed_leases() {
    let mut t = Subscribers::default();
    let a = Address::from("a");
    assert_eq!(t.subscribe("k", &a, Time(100), Time(0)), Subscribed::Yes);
    assert_eq!(t.subscribe("k", &a, Time(50), Time(0)), Subscribed::Yes);
    assert_eq!(t.live("k", Time(80)).count(), 1, "the longer lease stands");
    assert_eq!(t.live("k", Time(100)).count(), 0);
    t.prune(Time(100));
    assert!(t.is_empty());
    assert!(!t.has("k"));
    assert_eq!(lease(u32::MAX), MAX_LEASE);
}
