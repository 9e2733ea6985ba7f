//! Reads during a ring change, driven directly with an explicit `now`.

use crate::cluster::{ClusterState, Placement, ReplicationFactor};
use crate::kvs::{StorageWorker, WorkerConfig};
use crate::protocol::{Ack, Address, KeyOp, KvsRequest, Message, NodeId, NodeInfo, RequestId};
use crate::role::{Input, Outbox, Role};
use crate::time::Time;

const ONE: ReplicationFactor = ReplicationFactor {
    global: 1,
    local: 1,
};

fn node(id: u64, thread: &str) -> NodeInfo {
    NodeInfo {
        id: NodeId(id),
        threads: vec![Address::from(thread)],
        boot: 1,
        direct: Vec::new(),
    }
}

#[test]
fn a_read_after_a_departure_does_not_wait_for_the_departed_owner() {
    let (me, gone) = (node(1, "w1"), node(2, "w2"));
    let config = WorkerConfig {
        replication: ONE,
        ..WorkerConfig::default()
    };
    let mut w = StorageWorker::new(config, me.clone(), 0, vec![Address::from("router")]);
    let mut state = ClusterState::default();
    state.record_join(me.clone());
    let incarnation = state.record_join(gone.clone());
    let mut out = Outbox::default();
    w.merge_cluster(Time(0), state.clone(), &mut out);
    // A key node 2 owned while it was up.
    let both = Placement::new(&state, ONE);
    let key = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| both.owners(k) == vec![Address::from("w2")])
        .expect("some key on node 2");

    // Node 2 departs: the key is this worker's now, within the
    // transition window.
    state.record_departure(gone.id, incarnation);
    w.merge_cluster(Time(1_000), state, &mut out);
    out.drain().for_each(drop);
    let get = Message::KvsRequest(KvsRequest {
        id: RequestId(9),
        reply_to: Address::from("client"),
        ops: vec![KeyOp::Get { key: key.clone() }],
        ack: Ack::FirstReplica,
        shared_memory: None,
    });
    w.step(Time(2_000), Input::Message(get), &mut out);
    let sent: Vec<(Address, Message)> = out.drain().collect();
    assert!(
        !sent.iter().any(|(_, m)| matches!(m, Message::Fetch { .. })),
        "no fetch from the departed owner: {sent:?}"
    );
    assert!(
        sent.iter()
            .any(|(to, m)| to.as_str() == "client" && matches!(m, Message::KvsResponse(_))),
        "answered at once: {sent:?}"
    );
}

/// One request of `ops` to `w`; the outcomes answered.
fn request(w: &mut StorageWorker, now: Time, ops: Vec<KeyOp>) -> Vec<crate::protocol::Outcome> {
    let mut out = Outbox::default();
    let req = Message::KvsRequest(KvsRequest {
        id: RequestId(1),
        reply_to: Address::from("client"),
        ops,
        ack: Ack::FirstReplica,
        shared_memory: None,
    });
    w.step(now, Input::Message(req), &mut out);
    let answer = out.drain().find_map(|(_, m)| match m {
        Message::KvsResponse(r) => Some(r.results.into_iter().map(|r| r.outcome).collect()),
        _ => None,
    });
    answer.expect("an answer")
}

#[test]
fn a_write_is_answered_with_the_delete_epoch_it_landed_in_and_a_read_of_state_with_it() {
    use crate::lattice::{Counter, KeyState, LatticeValue, Timestamp, WriterId};
    use crate::protocol::Outcome;

    let me = node(1, "w1");
    let config = WorkerConfig {
        replication: ONE,
        ..WorkerConfig::default()
    };
    let mut w = StorageWorker::new(config, me.clone(), 0, vec![Address::from("router")]);
    let mut state = ClusterState::default();
    state.record_join(me);
    w.merge_cluster(Time(0), state, &mut Outbox::default());
    let count = |n| {
        let mut c = Counter::default();
        c.increment(WriterId(3), n);
        LatticeValue::Counter(c)
    };
    let put = |n| KeyOp::Put {
        key: "k".into(),
        value: count(n),
    };
    assert_eq!(
        request(&mut w, Time(1), vec![put(5)]),
        vec![Outcome::Stored { epoch: None }]
    );
    let at = Timestamp {
        wall_ms: 7,
        ..Timestamp::default()
    };
    let delete = KeyOp::Delete {
        key: "k".into(),
        at,
    };
    assert_eq!(
        request(&mut w, Time(2), vec![delete, put(6)]),
        vec![
            Outcome::Stored { epoch: Some(at) },
            Outcome::Stored { epoch: Some(at) }
        ]
    );
    // A plain read counts since the delete; a state read has it all.
    let get = KeyOp::Get { key: "k".into() };
    assert_eq!(
        request(&mut w, Time(3), vec![get]),
        vec![Outcome::Value(
            count(1).since(&LatticeValue::Counter(Counter::default()))
        )]
    );
    let read = KeyOp::ReadState {
        key: "k".into(),
        at_least: None,
    };
    let Outcome::State(s) = request(&mut w, Time(3), vec![read]).remove(0) else {
        panic!("a state");
    };
    assert!(s.covers(&KeyState::written(Some(at), count(6))));
    assert_eq!(s.baseline(), Some(&count(5)));
}
