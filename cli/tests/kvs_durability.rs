//! Durable state with real processes: storage nodes started with a data
//! directory, killed with SIGKILL (no chance to flush) and started again
//! with the same id and directory.

mod cluster;

use anna::client::ClientConfig;
use anna::lattice::{LatticeValue, Lww, Timestamp, WriterId};
use anna::protocol::Ack;
use cluster::{assert_all_readable, client_config, Cluster, Probe, Writer};
use std::time::Duration;

fn durable() -> ClientConfig {
    ClientConfig {
        put_ack: Ack::Durable,
        ..client_config()
    }
}

fn lww(n: u64) -> LatticeValue {
    let ts = Timestamp {
        wall_ms: 1_700_000_000_000 + n,
        logical: 0,
        writer: WriterId(5),
    };
    LatticeValue::Lww(Lww::new(ts, format!("value {n}").into_bytes()))
}

#[test]
fn a_lone_node_killed_and_restarted_serves_every_durable_write_from_its_disk() {
    // One node: after the kill no other replica holds anything, so every
    // key read afterwards came from its data directory.
    let mut cluster = Cluster::start_durable(1, 2, 1, 0);
    let mut client = cluster.client(durable());
    let keys: Vec<(String, Vec<u8>)> = (0..500)
        .map(|n| (format!("disk/{n}"), format!("value {n}").into_bytes()))
        .collect();
    for (n, (key, _)) in keys.iter().enumerate() {
        client.put(key, lww(n as u64)).expect("durable put");
    }
    cluster.kill_node(1);
    cluster.start_node(1);
    cluster.wait_live(&[1]);
    assert_all_readable(
        &mut cluster.client(client_config()),
        &keys,
        Duration::from_secs(15),
    );
    let log = cluster.node_log(1);
    assert!(log.contains("loaded the keys kept on disk"), "{log}");
    let loaded: u64 = (log.lines())
        .filter(|l| l.contains("loaded the keys kept on disk"))
        .filter_map(|l| {
            l.split("keys=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    // Every key put here, and the one the harness put to see the node
    // serving.
    assert_eq!(loaded, 501, "{log}");
}

#[test]
fn a_cluster_killed_whole_under_load_keeps_every_durable_write() {
    let mut cluster = Cluster::start_durable(3, 2, 2, 0);
    let writer = Writer::start(cluster.router(), durable(), "whole");
    writer.wait_for(400, Duration::from_secs(30));
    let report = writer.stop();
    for id in 1..=3 {
        cluster.kill_node(id);
    }
    for id in 1..=3 {
        cluster.start_node(id);
    }
    cluster.wait_live(&[1, 2, 3]);
    assert_all_readable(
        &mut cluster.client(client_config()),
        &report.acked,
        Duration::from_secs(20),
    );
}

#[test]
fn a_node_without_a_data_directory_refuses_durable_writes_naming_why() {
    let cluster = Cluster::start(1, 1, 1);
    let mut client = cluster.client(durable());
    let err = client.put("volatile", lww(1)).expect_err("not durable");
    assert!(err.to_string().contains("memory only"), "{err}");
    // The default level still works.
    let mut plain = cluster.client(client_config());
    plain.put("volatile", lww(2)).expect("plain put");
}

#[test]
fn three_times_the_memory_budget_is_written_and_read_back() {
    // One node of one thread with 64 KiB of memory; 192 KiB of values.
    let cluster = Cluster::start_durable(1, 1, 1, 64 << 10);
    let mut client = cluster.client(client_config());
    let value = |n: u64| vec![(n % 251) as u8; 1024];
    let keys: Vec<(String, Vec<u8>)> = (0..192).map(|n| (format!("tier/{n}"), value(n))).collect();
    for (n, (key, bytes)) in keys.iter().enumerate() {
        let ts = Timestamp {
            wall_ms: 1_700_000_000_000 + n as u64,
            logical: 0,
            writer: WriterId(5),
        };
        client
            .put(key, LatticeValue::Lww(Lww::new(ts, bytes.clone())))
            .expect("put");
    }
    let thread = cluster.node_threads(1).remove(0);
    let mut probe = Probe::new();
    // Flushes every 100 ms demote what is over the budget.
    cluster::wait_until("keys to leave memory", Duration::from_secs(10), || {
        (probe.counter(&thread, "disk_keys")? >= 100).then_some(())
    });
    assert!(probe.counter(&thread, "memory_bytes").unwrap() <= 64 << 10);
    assert_all_readable(&mut client, &keys, Duration::from_secs(15));
    assert!(probe.counter(&thread, "disk_hits").unwrap() >= 100);
    assert!(probe.counter(&thread, "promoted").unwrap() >= 100);
}
