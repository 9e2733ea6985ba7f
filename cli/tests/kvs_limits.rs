//! The `[limits]` on real processes: an oversized put fails at once with
//! the size and the limit, at the client and at the replica; a frame over
//! `max_message_bytes` is refused by the socket and the node keeps serving;
//! a last-writer-wins timestamp far in the future is refused, so it cannot
//! silence later writes of the key.

mod cluster;

use anna::client::ClientError;
use anna::lattice::{LatticeValue, Lww, Timestamp, WriterId};
use anna::protocol::{KeyOp, KvsError, Outcome};
use cluster::{client_config, Cluster, Probe};
use std::time::{Duration, Instant};

const LIMITS: &str = "\n[limits]\nmax_message_bytes = 1048576\nmax_value_bytes = 262144\n";

fn lww(wall_ms: u64, bytes: Vec<u8>) -> LatticeValue {
    let at = Timestamp {
        wall_ms,
        logical: 0,
        writer: WriterId(99),
    };
    LatticeValue::Lww(Lww::new(at, bytes))
}

fn now_ms() -> u64 {
    squall_transport::clock::now().as_millis()
}

#[test]
fn an_oversized_put_fails_at_once_naming_its_size_and_the_limit() {
    let cluster = Cluster::start_with(2, 1, 2, LIMITS);
    let mut client = cluster.client(anna::client::ClientConfig {
        limits: anna::config::Limits {
            max_message_bytes: 1 << 20,
            max_value_bytes: 256 << 10,
            ..Default::default()
        },
        ..client_config()
    });
    let started = Instant::now();
    let err = client
        .put_lww("big", vec![7; 300 << 10])
        .expect_err("a put over the limit");
    assert!(started.elapsed() < Duration::from_millis(500), "{err}");
    assert!(
        matches!(
            &err,
            ClientError::Refused {
                reason: KvsError::TooLarge {
                    size: 307_200,
                    limit: 262_144
                },
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("307200") && text.contains("262144"), "{text}");

    // A client that does not check (another version, a forged request):
    // the replica refuses it, and stores nothing.
    let thread = cluster.node_threads(1)[0].clone();
    let mut probe = Probe::new();
    let results = probe
        .request_at(
            &thread,
            vec![KeyOp::Put {
                key: "big".into(),
                value: lww(now_ms(), vec![7; 300 << 10]),
            }],
        )
        .expect("the node answers");
    assert!(
        matches!(
            results[0].outcome,
            Outcome::Error(KvsError::TooLarge { limit: 262_144, .. }) | Outcome::NotMine { .. }
        ),
        "{:?}",
        results[0].outcome
    );
    assert_eq!(client.get("big").unwrap(), None);

    // A frame over max_message_bytes never reaches the role: the socket
    // refuses it, and the node goes on serving.
    assert_eq!(probe.counter(&thread, "malformed"), Some(0));
    probe.send_raw(&thread, &vec![0u8; 2 << 20]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        probe.ping(&thread, Duration::from_secs(2)),
        "the node stopped serving"
    );
    // Had the frame arrived, its decoder would have counted it malformed.
    assert_eq!(probe.counter(&thread, "malformed"), Some(0));
    client.put_lww("small", b"fine".to_vec()).unwrap();
    assert!(client.get("small").unwrap().is_some());
}

#[test]
fn a_timestamp_far_in_the_future_is_refused_and_later_writes_land() {
    let cluster = Cluster::start(2, 1, 2);
    let mut client = cluster.client(client_config());
    let err = client
        .put("poisoned", lww(u64::MAX, b"forever".to_vec()))
        .expect_err("a timestamp past the skew");
    assert!(
        matches!(
            &err,
            ClientError::Refused {
                reason: KvsError::ClockAhead { max_ms: 10_000, .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("max_clock_skew"), "{err}");
    // Within the skew is accepted (clocks differ a little)...
    client
        .put("poisoned", lww(now_ms() + 5_000, b"ahead".to_vec()))
        .unwrap();
    // ...and the key still takes later writes.
    std::thread::sleep(Duration::from_millis(5_100));
    client.put_lww("poisoned", b"later".to_vec()).unwrap();
    match client.get("poisoned").unwrap() {
        Some(LatticeValue::Lww(l)) => assert_eq!(l.value(), b"later"),
        other => panic!("{other:?}"),
    }
}
