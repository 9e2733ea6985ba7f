//! Forged frames against real processes.
//!
//! - From outside the cluster (no key, another cluster's key, a replay of
//!   a captured frame): dropped and counted as `unauthenticated`, never
//!   acted on.
//! - From a client's key or the executors' key: membership is refused,
//!   and a client's request without its right is answered with the right
//!   it lacks.
//! - From inside: a node's `Depart` is taken only under that node's own key
//!   (not a cache's or scheduler's, not another node's), and even then a
//!   `Depart` or a `Heartbeat` with an incarnation the router never gave
//!   the node must not remove or move it.

mod cluster;

use anna::lattice::{LatticeValue, Lww, Timestamp, WriterId};
use anna::protocol::seal::{Identity, Sealer, Secret, Security};
use anna::protocol::{
    Ack, Address, KeyOp, KvsError, KvsRequest, Membership, Message, NodeId, NodeInfo, Outcome,
};
use cluster::{client_config, Cluster, Probe};
use squall_transport::security::{sender_id, unix_secs};
use squall_transport::Sender;
use std::time::Duration;

const CLIENTS: &str = "\n[security.clients]\n\
                       admin = [\"read\", \"write\", \"register\", \"call\"]\n\
                       reader = [\"read\"]\n";

fn depart(node: u64) -> Message {
    Message::Membership(Membership::Depart {
        node: NodeId(node),
        incarnation: 1,
    })
}

fn lww(value: &[u8]) -> LatticeValue {
    let ts = Timestamp {
        wall_ms: 1_700_000_000_000,
        logical: 0,
        writer: WriterId(3),
    };
    LatticeValue::Lww(Lww::new(ts, value.to_vec()))
}

/// A sealer of client `name` of the test clusters.
fn client_sealer(name: &str) -> Sealer {
    let identity = Identity::parse(&cluster::test_secret().client_key_file(name)).unwrap();
    let security = Security {
        identity: Some(identity),
        ..Security::default()
    };
    Sealer::new(&security, sender_id())
}

fn sealed(sealer: &mut Sealer, msg: &Message) -> Vec<u8> {
    let mut frame = Vec::new();
    sealer.seal_into(msg, unix_secs(), &mut frame).unwrap();
    frame
}

#[test]
fn frames_from_outside_the_cluster_are_dropped_and_counted_and_change_nothing() {
    let cluster = Cluster::start(2, 1, 2);
    let router = cluster.router();
    let mut probe = Probe::new();
    // Unsealed, as before authentication: the departure of both nodes.
    for node in [1, 2] {
        probe.send_raw(&router, &anna::protocol::encode(&depart(node)).unwrap());
    }
    // Sealed with another cluster's key.
    let theirs = Security {
        identity: Some(Identity::member(Secret::from_bytes([7; 32]))),
        ..Security::default()
    };
    let mut stranger = Sealer::new(&theirs, sender_id());
    probe.send_raw(&router, &sealed(&mut stranger, &depart(1)));
    // A frame of ours, captured and sent again: it opens once.
    let mut ours = Sealer::new(&squall_transport::security::security(), sender_id());
    let ping = Message::Ping {
        id: anna::protocol::RequestId(1),
        reply_to: Address::from("tcp://127.0.0.1:9"),
    };
    let captured = sealed(&mut ours, &ping);
    probe.send_raw(&router, &captured);
    probe.send_raw(&router, &captured);
    // A flipped byte of a frame of ours.
    let mut changed = sealed(&mut ours, &ping);
    let n = changed.len();
    changed[n / 2] ^= 1;
    probe.send_raw(&router, &changed);

    cluster::wait_until(
        "the router to count five unauthenticated frames",
        Duration::from_secs(5),
        || (probe.counter(&router, "unauthenticated")? >= 5).then_some(()),
    );
    assert_eq!(probe.counter(&router, "unauthenticated"), Some(5));
    assert_eq!(probe.counter(&router, "departures_refused"), Some(0));
    assert_eq!(cluster.router_view().live_nodes().count(), 2);
    let log = cluster.router_log();
    assert!(log.contains("dropped unauthenticated frame"), "{log}");
    assert!(!log.contains("node departed"), "{log}");
}

#[test]
fn a_clients_key_cannot_change_membership_or_do_what_it_has_no_right_to() {
    let cluster = Cluster::start_with(2, 1, 2, CLIENTS);
    let router = cluster.router();
    let node = cluster.node_threads(1)[0].clone();
    let mut probe = Probe::new();
    // Even the client with every right is not a member.
    let mut admin = client_sealer("admin");
    probe.send_raw(&router, &sealed(&mut admin, &depart(1)));
    // Nor is an executor (which runs user code): its key is not the
    // secret.
    let executor = Security {
        identity: Some(Identity::parse(&cluster::test_secret().executor_key_file()).unwrap()),
        ..Security::default()
    };
    let mut executor = Sealer::new(&executor, sender_id());
    probe.send_raw(&router, &sealed(&mut executor, &depart(2)));
    cluster::wait_until(
        "the router to refuse the client's and the executor's departures",
        Duration::from_secs(5),
        || (probe.counter(&router, "refused")? >= 2).then_some(()),
    );
    assert_eq!(cluster.router_view().live_nodes().count(), 2);

    // The read-only client reads, and its write is answered with the right
    // it lacks.
    let mut reader = client_sealer("reader");
    let put = |id, reply_to| {
        Message::KvsRequest(KvsRequest {
            id,
            reply_to,
            ops: vec![KeyOp::Put {
                key: "written-by-a-reader".into(),
                value: lww(b"no"),
            }],
            ack: Ack::FirstReplica,
            shared_memory: None,
        })
    };
    let reply = probe
        .ask_as(Some(&mut reader), &node, Duration::from_secs(5), put)
        .expect("an answer to the refused write");
    let Message::KvsResponse(response) = reply else {
        panic!("{reply:?}");
    };
    match &response.results[0].outcome {
        Outcome::Error(KvsError::PermissionDenied { reason }) => {
            assert!(reason.contains("`write`"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let get = |id, reply_to| {
        Message::KvsRequest(KvsRequest {
            id,
            reply_to,
            ops: vec![KeyOp::Get {
                key: "written-by-a-reader".into(),
            }],
            ack: Ack::FirstReplica,
            shared_memory: None,
        })
    };
    let reply = probe.ask_as(Some(&mut reader), &node, Duration::from_secs(5), get);
    let Some(Message::KvsResponse(response)) = reply else {
        panic!("{reply:?}");
    };
    assert!(
        matches!(
            response.results[0].outcome,
            Outcome::NotFound | Outcome::NotMine { .. }
        ),
        "{response:?}"
    );
    assert!(probe.counter(&node, "refused") >= Some(1));
}

#[test]
fn a_departure_is_taken_only_from_the_node_itself_and_only_of_its_incarnation() {
    let cluster = Cluster::start(2, 1, 2);
    let router = cluster.router();
    let mut probe = Probe::new();
    let secret = cluster::test_secret();
    // A member without the secret (a cache, a scheduler) and node 2 cannot
    // speak for node 1.
    let as_member = Security {
        identity: Some(Identity::parse(&secret.member_key_file()).unwrap()),
        ..Security::default()
    };
    let as_node_2 = Security {
        identity: Some(Identity::parse(&secret.node_key_file(2)).unwrap()),
        ..Security::default()
    };
    for security in [as_member, as_node_2] {
        let mut sealer = Sealer::new(&security, sender_id());
        probe.send_raw(&router, &sealed(&mut sealer, &depart(1)));
    }
    cluster::wait_until("the router to refuse both", Duration::from_secs(5), || {
        (probe.counter(&router, "refused")? >= 2).then_some(())
    });
    assert_eq!(probe.counter(&router, "departures_refused"), Some(0));
    assert_eq!(cluster.router_view().live_nodes().count(), 2);

    // The node's own key, with an incarnation the router never gave it:
    // refused by the router (a node's key found on another machine, say).
    let ctx = zmq::Context::new();
    for node in [1, 2] {
        let own = Security {
            identity: Some(Identity::parse(&secret.node_key_file(node)).unwrap()),
            ..Security::default()
        };
        let mut tx = Sender::secured(&ctx, &own);
        let forged = Message::Membership(Membership::Depart {
            node: NodeId(node),
            incarnation: u64::from(u32::MAX),
        });
        tx.send(&cluster.router(), &forged).expect("sent");
        let moved = Message::Membership(Membership::Heartbeat {
            node: NodeInfo {
                id: NodeId(node),
                threads: vec![Address::from("tcp://127.0.0.1:9")],
                boot: 1,
                direct: Vec::new(),
            },
            incarnation: u64::from(u32::MAX),
        });
        tx.send(&cluster.router(), &moved).expect("sent");
    }
    cluster::wait_until(
        "the router to count the refusals",
        Duration::from_secs(5),
        || (probe.counter(&cluster.router(), "departures_refused")? >= 2).then_some(()),
    );
    assert_eq!(cluster.router_view().live_nodes().count(), 2);
    // The cluster still takes writes.
    let mut client = cluster.client(client_config());
    let ts = Timestamp {
        wall_ms: 1_700_000_000_000,
        logical: 0,
        writer: WriterId(3),
    };
    client
        .put(
            "after-forgery",
            LatticeValue::Lww(Lww::new(ts, b"ok".to_vec())),
        )
        .expect("writes still go through");
    assert!(cluster.router_log().contains("departure refused"));
}
