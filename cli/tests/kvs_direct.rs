//! The direct path against real processes: every storage thread announces
//! a direct endpoint with its node, clients' requests go there and are
//! answered on their connection (counted as `direct` by the thread), a
//! client told not to use it goes over ZeroMQ, and a forged or replayed
//! frame on a direct connection is dropped and counted like one on the
//! thread's ZeroMQ socket.

mod cluster;

use anna::client::ClientConfig;
use anna::lattice::{LatticeValue, Lww, Timestamp, WriterId};
use anna::protocol::seal::{Identity, Sealer, Secret, Security};
use anna::protocol::{Ack, Address, KeyOp, KvsRequest, Message, RequestId};
use anna::role::Driver;
use cluster::{client_config, Cluster, Probe};
use squall_cache::{Cache, CacheConfig};
use squall_transport::security::{sender_id, unix_secs};
use squall_transport::{Endpoint, ZmqDriver};
use std::io::Write;
use std::time::Duration;

/// Requests taken on direct connections by every thread of nodes 1 and 2.
fn direct_requests(cluster: &Cluster, probe: &mut Probe) -> u64 {
    direct_requests_of(cluster, probe, &[1, 2])
}

/// Requests taken on direct connections by every thread of `nodes`.
fn direct_requests_of(cluster: &Cluster, probe: &mut Probe, nodes: &[u64]) -> u64 {
    cluster.threads_counter(probe, nodes, "direct")
}

fn put(key: &str, value: &[u8]) -> Message {
    let at = Timestamp {
        wall_ms: 1_700_000_000_000,
        logical: 0,
        writer: WriterId(5),
    };
    Message::KvsRequest(KvsRequest {
        id: RequestId(1),
        reply_to: Address::from("tcp://127.0.0.1:9"),
        ops: vec![KeyOp::Put {
            key: key.into(),
            value: LatticeValue::Lww(Lww::new(at, value.to_vec())),
        }],
        ack: Ack::FirstReplica,
        shared_memory: None,
    })
}

/// The bytes of a last-writer-wins value read.
fn bytes(value: Option<LatticeValue>) -> Option<Vec<u8>> {
    match value {
        Some(LatticeValue::Lww(l)) => Some(l.value().to_vec()),
        other => panic!("expected a last-writer-wins value, got {other:?}"),
    }
}

/// `frame` after its length, as a direct connection carries it.
fn framed(frame: &[u8]) -> Vec<u8> {
    let mut out = (frame.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(frame);
    out
}

#[test]
fn clients_requests_go_straight_to_the_threads_unless_told_otherwise() {
    let cluster = Cluster::start(2, 2, 2);
    let view = cluster.router_view();
    for (id, info) in view.live_nodes() {
        assert_eq!(
            info.direct.len(),
            2,
            "node {id:?} announces a direct endpoint per thread"
        );
        assert!(info
            .direct
            .iter()
            .all(|d| d.as_str().starts_with("tcp://127.0.0.1:")));
    }
    let mut probe = Probe::new();
    let before = direct_requests(&cluster, &mut probe);
    let mut client = cluster.client(client_config());
    for i in 0..40 {
        client
            .put_lww(&format!("direct-{i}"), vec![i as u8; 10])
            .unwrap();
    }
    for i in 0..40 {
        let got = client.get(&format!("direct-{i}")).unwrap();
        assert_eq!(bytes(got), Some(vec![i as u8; 10]));
    }
    // Large values cross whole both ways (a frame that fills its buffer
    // alone is handed over with it), and small ones after them.
    let large: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    client.put_lww("direct-large", large.clone()).unwrap();
    assert_eq!(bytes(client.get("direct-large").unwrap()), Some(large));
    assert_eq!(bytes(client.get("direct-0").unwrap()), Some(vec![0; 10]));
    let taken = direct_requests(&cluster, &mut probe) - before;
    assert!(
        taken >= 83,
        "83 requests went direct, the threads counted {taken}"
    );

    // Over ZeroMQ only: the same answers, nothing taken on a connection.
    let mut zmq_only = cluster.client(ClientConfig {
        direct: false,
        ..client_config()
    });
    for i in 0..10 {
        let key = format!("direct-{i}");
        let got = zmq_only.get(&key).unwrap();
        assert_eq!(bytes(got), Some(vec![i as u8; 10]));
        zmq_only.put_lww(&key, b"over zmq".to_vec()).unwrap();
    }
    assert_eq!(direct_requests(&cluster, &mut probe) - before, taken);
    // And the direct client reads what the other wrote.
    let got = client.get("direct-3").unwrap();
    assert_eq!(bytes(got), Some(b"over zmq".to_vec()));
}

#[test]
fn forged_and_replayed_frames_on_a_direct_connection_are_dropped_and_counted() {
    let cluster = Cluster::start(2, 1, 2);
    let view = cluster.router_view();
    let (_, node) = view.live_nodes().next().expect("a live node");
    let thread = node.threads[0].clone();
    let endpoint = node.direct[0].clone();
    let mut probe = Probe::new();
    let unauthenticated = probe.counter(&thread, "unauthenticated").unwrap();

    let mut stream =
        std::net::TcpStream::connect(endpoint.as_str().trim_start_matches("tcp://")).unwrap();
    // Sealed with another cluster's key.
    let theirs = Security {
        identity: Some(Identity::member(Secret::from_bytes([7; 32]))),
        ..Security::default()
    };
    let mut stranger = Sealer::new(&theirs, sender_id());
    let mut frame = Vec::new();
    stranger
        .seal_into(&put("forged", b"theirs"), unix_secs(), &mut frame)
        .unwrap();
    stream.write_all(&framed(&frame)).unwrap();
    // Not sealed at all.
    let open = anna::protocol::encode(&put("forged", b"open")).unwrap();
    stream.write_all(&framed(&open)).unwrap();
    // A frame of ours, sent twice: it opens once.
    let mut ours = Sealer::new(&squall_transport::security::security(), sender_id());
    ours.seal_into(&put("replayed", b"once"), unix_secs(), &mut frame)
        .unwrap();
    stream.write_all(&framed(&frame)).unwrap();
    stream.write_all(&framed(&frame)).unwrap();

    cluster::wait_until(
        "the thread to count three unauthenticated frames",
        Duration::from_secs(5),
        || (probe.counter(&thread, "unauthenticated")? >= unauthenticated + 3).then_some(()),
    );
    assert_eq!(
        probe.counter(&thread, "unauthenticated"),
        Some(unauthenticated + 3)
    );
    let mut client = cluster.client(client_config());
    assert!(
        client.get("forged").unwrap().is_none(),
        "no forged write landed"
    );
    let got = client.get("replayed").unwrap();
    assert_eq!(bytes(got), Some(b"once".to_vec()));
}

#[test]
fn a_caches_misses_go_to_the_threads_direct_endpoints_unless_told_otherwise() {
    let cluster = Cluster::start(1, 1, 1);
    let mut client = cluster.client(client_config());
    client.put_lww("via-cache", b"hello".to_vec()).unwrap();
    let mut probe = Probe::new();
    for direct in [true, false] {
        let before = direct_requests_of(&cluster, &mut probe, &[1]);
        let ctx = zmq::Context::new();
        let config = CacheConfig {
            client: ClientConfig {
                direct,
                ..client_config()
            },
            ..CacheConfig::default()
        };
        let routers = vec![cluster.router()];
        let any = Address::from("tcp://127.0.0.1:*");
        let mut driver = ZmqDriver::bind_with(&ctx, &any, |me| {
            Cache::new(
                config,
                "test".into(),
                me.clone(),
                routers,
                vec![],
                WriterId(77),
            )
        })
        .unwrap();
        let cache = driver.address().clone();
        let stop = driver.shutdown_handle();
        let running = std::thread::spawn(move || driver.run());
        let mut endpoint = Endpoint::connect(cache, &any, Duration::from_secs(5)).unwrap();
        assert_eq!(
            bytes(endpoint.get("via-cache", None).unwrap()),
            Some(b"hello".to_vec())
        );
        stop.stop().unwrap();
        running.join().unwrap().unwrap();
        let taken = direct_requests_of(&cluster, &mut probe, &[1]) - before;
        if direct {
            assert!(taken >= 1, "the cache's miss went direct: {taken}");
        } else {
            assert_eq!(taken, 0, "a cache told not to goes over ZeroMQ");
        }
    }
}
