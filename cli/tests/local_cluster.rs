//! `squall up`, `kv`, `status` and `down` end to end, as a person runs them.

mod cluster;

use cluster::local::all_pids;
use cluster::{config_toml, running, LocalCluster, PortRange};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// This file's ports: the `cluster` harness's range, 20000 up to the
/// kernel's ephemeral ports.
const PORTS: PortRange = PortRange {
    floor: 20_000,
    blocks: 24,
};

#[test]
fn up_kv_status_and_down_run_a_local_cluster_and_leave_no_process_behind() {
    let mut local = LocalCluster::new(&config_toml(2), "squall-up-", PORTS);
    let up = local.up(&["--routers", "1", "--nodes", "3", "--threads", "2"]);
    // The hint it prints works as printed: with this state directory.
    let state = format!("squall --state-dir {} kv put", local.state_dir().display());
    assert!(up.contains(&state), "{up}");
    let pids = all_pids(&local.record());
    assert_eq!(
        pids.len(),
        10,
        "one router, three storage nodes, a scheduler, a cache, two executors, the monitor \
         and the gateway"
    );
    assert!(pids.iter().all(|&p| running(p)));

    // A second `up` on the same state directory refuses.
    let base = local.base().to_string();
    let again = local.squall(&["up", "--base-port", &base], Duration::from_secs(30));
    assert!(
        !again.ok && again.stderr.contains("already running"),
        "{}",
        again.stderr
    );

    local.ok(&["kv", "put", "greeting", "hello", "world"]);
    assert_eq!(local.ok(&["kv", "get", "greeting"]), "hello world\n");
    local.ok(&["kv", "put", "--type", "set", "colors", "red", "green"]);
    local.ok(&["kv", "put", "-t", "set", "colors", "blue"]);
    assert_eq!(local.ok(&["kv", "get", "colors"]), "blue\ngreen\nred\n");
    local.ok(&["kv", "put", "-t", "counter", "hits", "5"]);
    local.ok(&["kv", "put", "-t", "counter", "hits", "-2"]);
    assert_eq!(local.ok(&["kv", "get", "hits"]), "3\n");

    let missing = local.squall(&["kv", "get", "nothing-here"], Duration::from_secs(30));
    assert_eq!(missing.code, Some(1));
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
    let mismatch = local.squall(
        &["kv", "put", "-t", "set", "greeting", "x"],
        Duration::from_secs(30),
    );
    assert!(
        !mismatch.ok && mismatch.stderr.contains("type mismatch"),
        "{}",
        mismatch.stderr
    );
    local.ok(&["kv", "del", "greeting"]);
    assert_eq!(
        local
            .squall(&["kv", "get", "greeting"], Duration::from_secs(30))
            .code,
        Some(1)
    );

    let status = local.ok(&["status"]);
    assert_eq!(status.matches(" running ").count(), 10, "{status}");
    // The monitor answers with what it gathered.
    assert!(
        status.lines().any(|l| l.starts_with("monitor tcp://")),
        "{status}"
    );
    assert!(!status.contains("NOT RUNNING"), "{status}");
    // Each executor by compute node and index.
    for executor in ["executor 0.0 ", "executor 0.1 "] {
        assert!(status.contains(executor), "{status}");
    }
    for n in 1..=3 {
        let line = status
            .lines()
            .find(|l| {
                l.trim_start().starts_with(&format!("node {n} ")) && l.contains("incarnation")
            })
            .unwrap_or_else(|| panic!("no router line for node {n}:\n{status}"));
        assert!(line.contains("up, 2 thread(s)"), "{line}");
    }
    // The scheduler has heard from both executors and the cache.
    let executors = status
        .lines()
        .filter(|l| l.trim_start().starts_with("executor tcp://"))
        .count();
    assert_eq!(executors, 2, "{status}");
    assert!(
        status
            .lines()
            .any(|l| l.trim_start().starts_with("cache    tcp://")),
        "{status}"
    );

    local.down(10);
    assert!(!local.state_dir().join("cluster.json").exists());

    // Its keys stay for the next `up`: `squall keys` lists them, writes
    // none anew, and every one is its owner's alone.
    let keys = local.state_dir().join("keys");
    let before: Vec<(String, String)> = key_files(&keys);
    let listed = local.ok(&["keys"]);
    assert_eq!(key_files(&keys), before);
    let names: Vec<&str> = before.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "client-admin.key",
            "client.key",
            "cluster.key",
            "executor.key",
            "member.key",
            "node-1.key",
            "node-2.key",
            "node-3.key"
        ]
    );
    for (name, what) in [
        ("cluster.key", "the cluster's secret"),
        ("node-2.key", "storage node 2's key"),
        ("member.key", "caches' and schedulers' key"),
        ("executor.key", "the executors' key"),
        (
            "client-admin.key",
            "client admin: read, write, register, call",
        ),
    ] {
        let line = listed
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_default();
        assert!(line.contains(what), "{name}: {listed}");
    }
    for name in names {
        let mode = std::fs::metadata(keys.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    let after = local.squall(&["status"], Duration::from_secs(30));
    assert!(
        !after.ok,
        "status with no cluster should fail:\n{}",
        after.stdout
    );
}

/// The key files in `dir` with their contents, by name.
fn key_files(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let text = std::fs::read_to_string(e.path()).unwrap();
            (e.file_name().to_string_lossy().into_owned(), text)
        })
        .collect();
    files.sort();
    files
}
