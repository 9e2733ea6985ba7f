//! `squall scale`: the local provider adds and removes storage and compute
//! nodes of a cluster `squall up` started, end to end through the binary.
//!
//! Each test has its own state directory and its own block of ports from
//! 12000, below those of `local_cluster.rs` and the `cluster` harness
//! (20000 and up).

mod cluster;

use cluster::local::{ids, pids};
use cluster::{assert_all_readable, client_config, config_toml, running, LocalCluster, PortRange};
use squall_transport::Client;
use std::time::{Duration, Instant};

/// This file's ports: 15 blocks from 12000, up to the `cluster` harness's.
const PORTS: PortRange = PortRange {
    floor: 12_000,
    blocks: 15,
};

/// A local cluster with one replica per key, so keys really move when a
/// node comes or goes; not yet started.
fn cluster() -> LocalCluster {
    LocalCluster::new(&config_toml(1), "squall-scale-", PORTS)
}

/// `squall up` with `args`, without a monitor: these tests scale by hand
/// and count every process.
fn up(c: &mut LocalCluster, args: &[&str]) {
    let mut all = vec!["--no-monitor"];
    all.extend(args);
    c.up(&all);
}

/// The pids of running processes whose command line contains `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("listing /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
                && running(pid)
        })
        .collect()
}

/// How many executors `squall status` lists under the scheduler.
fn executors_in_status(status: &str) -> usize {
    status
        .lines()
        .filter(|l| l.trim_start().starts_with("executor tcp://"))
        .count()
}

#[test]
fn storage_scales_out_and_back_in_and_every_key_survives_the_departure() {
    let mut c = cluster();
    up(
        &mut c,
        &["--nodes", "1", "--compute-nodes", "0", "--threads", "1"],
    );
    let mut client =
        Client::connect(vec![c.address("routers")], client_config()).expect("a client");
    let expected: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| (format!("key-{i}"), format!("value-{i}").into_bytes()))
        .collect();
    for (k, v) in &expected {
        client.put_lww(k, v.clone()).expect("a put");
    }

    let out = c.ok(&["scale", "storage", "2"]);
    assert!(out.contains("2 storage node(s), 2 running"), "{out}");
    assert!(out.contains("every router lists 2 up"), "{out}");
    let record = c.record();
    assert_eq!(ids(&record, "nodes"), [1, 2]);
    let second = record["nodes"][1].clone();
    let first_port = c.base() + 120;
    assert_eq!(
        second["addresses"][0].as_str(),
        Some(format!("tcp://127.0.0.1:{first_port}").as_str()),
        "node 2 takes the ports `up` would have given it"
    );
    assert_all_readable(&mut client, &expected, Duration::from_secs(20));
    // Node 2 took its share of the keys.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = c.ok(&["status"]);
        let held = status
            .lines()
            .find(|l| {
                l.trim_start()
                    .starts_with(&format!("tcp://127.0.0.1:{first_port} "))
            })
            .and_then(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
            .unwrap_or(0);
        if held > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "node 2 holds no key:\n{status}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Asking for what is there changes nothing.
    let again = c.ok(&["scale", "storage", "2"]);
    assert!(again.contains("2 storage node(s), 2 running"), "{again}");
    assert_eq!(pids(&c.record(), "nodes"), pids(&record, "nodes"));

    let second_pid = u32::try_from(second["pid"].as_u64().expect("a pid")).expect("pid");
    let out = c.ok(&["scale", "storage", "1"]);
    assert!(out.contains("1 storage node(s), 1 running"), "{out}");
    assert!(out.contains("every router lists 1 up"), "{out}");
    assert!(!running(second_pid), "the removed node still runs");
    let log = std::fs::read_to_string(second["log"].as_str().expect("a log path"))
        .expect("the removed node's log");
    assert!(log.contains("keys handed over"), "{log}");
    assert!(!log.contains("leave timeout"), "{log}");
    assert_eq!(ids(&c.record(), "nodes"), [1]);
    let status = c.ok(&["status"]);
    let departed = status
        .lines()
        .find(|l| l.trim_start().starts_with("node 2 ") && l.contains("incarnation"))
        .unwrap_or_else(|| panic!("the router does not list node 2:\n{status}"));
    assert!(departed.contains("departed"), "{departed}");
    assert_all_readable(&mut client, &expected, Duration::from_secs(20));

    c.down(2);
}

#[test]
fn compute_scales_out_and_back_in_with_a_cache_and_its_executors() {
    let mut c = cluster();
    up(
        &mut c,
        &[
            "--nodes",
            "1",
            "--threads",
            "1",
            "--compute-nodes",
            "1",
            "--executors",
            "1",
        ],
    );

    let out = c.ok(&["scale", "compute", "2"]);
    assert!(out.contains("2 compute node(s), 2 running"), "{out}");
    assert!(out.contains("every scheduler sees 2 executor(s)"), "{out}");
    let record = c.record();
    assert_eq!(ids(&record, "caches"), [0, 1]);
    assert_eq!(ids(&record, "executors"), [0, 1]);
    assert_eq!(
        record["executors"][1]["addresses"][0].as_str(),
        Some(format!("tcp://127.0.0.1:{}", c.base() + 421).as_str())
    );
    assert_eq!(executors_in_status(&c.ok(&["status"])), 2);
    let added_socket = "cache-1.sock";
    assert!(!processes_mentioning(added_socket).is_empty());

    let out = c.ok(&["scale", "compute", "1"]);
    assert!(out.contains("1 compute node(s), 1 running"), "{out}");
    assert!(out.contains("every scheduler sees 1 executor(s)"), "{out}");
    for pid in [pids(&record, "caches")[1], pids(&record, "executors")[1]] {
        assert!(!running(pid), "pid {pid} of the removed node still runs");
    }
    // The executor's supervised child included.
    let state = c.state_dir().canonicalize().expect("the state directory");
    let left = processes_mentioning(&state.join(added_socket).display().to_string());
    assert!(left.is_empty(), "processes of the removed node: {left:?}");
    let record = c.record();
    assert_eq!(ids(&record, "caches"), [0]);
    assert_eq!(ids(&record, "executors"), [0]);
    assert_eq!(executors_in_status(&c.ok(&["status"])), 1);

    // Router, storage node, scheduler, cache, executor, gateway.
    c.down(6);
}

#[test]
fn routers_zero_storage_nodes_and_unknown_kinds_are_refused_clearly() {
    let mut c = cluster();
    let none = c.squall(&["scale", "storage", "2"], Duration::from_secs(30));
    assert!(!none.ok, "{}", none.stdout);
    assert!(
        none.stderr.contains("no local cluster recorded") && none.stderr.contains("squall up"),
        "{}",
        none.stderr
    );
    assert!(!c.state_dir().exists(), "a refused scale created the state");

    up(
        &mut c,
        &["--nodes", "1", "--compute-nodes", "0", "--threads", "1"],
    );
    let before = c.record();
    let router = c.squall(&["scale", "router", "3"], Duration::from_secs(30));
    assert!(!router.ok, "{}", router.stdout);
    assert!(
        router.stderr.contains("storage and compute nodes only"),
        "{}",
        router.stderr
    );
    let zero = c.squall(&["scale", "storage", "0"], Duration::from_secs(30));
    assert!(
        !zero.ok && zero.stderr.contains("at least one storage node"),
        "{}",
        zero.stderr
    );
    let unknown = c.squall(&["scale", "gateway", "1"], Duration::from_secs(30));
    assert_eq!(unknown.code, Some(2), "{}", unknown.stderr);
    assert!(
        unknown.stderr.contains("invalid value 'gateway'"),
        "{}",
        unknown.stderr
    );
    let compute = c.squall(&["scale", "compute", "1"], Duration::from_secs(30));
    assert!(
        !compute.ok && compute.stderr.contains("no scheduler"),
        "{}",
        compute.stderr
    );
    // The count there is is accepted.
    let same = c.ok(&["scale", "router", "1"]);
    assert!(same.contains("1 router node(s), 1 running"), "{same}");
    let after = c.record();
    for part in ["routers", "nodes", "schedulers", "caches", "executors"] {
        assert_eq!(pids(&after, part), pids(&before, part), "{part}");
    }
    c.ok(&["down"]);
}
