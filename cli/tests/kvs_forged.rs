//! Forged membership frames against real processes: a ZeroMQ PUSH of a
//! `Depart` or a `Heartbeat` for a live node, with an incarnation the
//! router never gave it, must not remove or move the node (the security
//! issue's first finding).

mod cluster;

use anna::lattice::{LatticeValue, Lww, Timestamp, WriterId};
use anna::protocol::{Address, Membership, Message, NodeId, NodeInfo};
use cluster::{client_config, Cluster, Probe};
use squall_transport::Sender;
use std::time::Duration;

#[test]
fn a_forged_departure_of_a_live_node_is_refused_and_counted() {
    let cluster = Cluster::start(2, 1, 2);
    let ctx = zmq::Context::new();
    let mut tx = Sender::new(&ctx);
    for node in [1, 2] {
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
            },
            incarnation: u64::from(u32::MAX),
        });
        tx.send(&cluster.router(), &moved).expect("sent");
    }
    let mut probe = Probe::new();
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
