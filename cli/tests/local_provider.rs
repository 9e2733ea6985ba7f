//! `squall scale`: the local provider adds and removes storage and compute
//! nodes of a cluster `squall up` started, end to end through the binary.
//!
//! Each test has its own state directory and its own block of ports below
//! the blocks of the `cluster` harness (20000 and up), since `up` with a
//! compute node needs `base .. base + 425`, more than one harness block.

mod cluster;

use anna::client::Client;
use anna::protocol::Address;
use cluster::{assert_all_readable, client_config, config_toml, running, signal, tail, SQUALL};
use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Ports per test: routers at `base`, schedulers at `+ 50`, storage nodes
/// from `+ 100`, compute nodes from `+ 400`.
const BLOCK: u16 = 500;
const FLOOR: u16 = 12_000;
const BLOCKS: u32 = 15;

/// The first port of a block of [`BLOCK`] ports that were all free a moment
/// ago, from [`FLOOR`] up to the `cluster` harness's blocks.
fn reserve_block() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7);
    for _ in 0..BLOCKS {
        let block = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % BLOCKS;
        let base = FLOOR + u16::try_from(block).expect("block index") * BLOCK;
        if (base..base + BLOCK).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no free block of {BLOCK} ports from {FLOOR}");
}

/// What one `squall` command did.
struct Run {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// One test's local cluster: its state directory, config and ports. On
/// drop it runs `squall down`, then SIGKILLs every pid the record ever
/// held that still runs, and on a panic prints the tail of every log.
struct Scaled {
    dir: tempfile::TempDir,
    config: PathBuf,
    base: u16,
    seen: BTreeSet<u32>,
    runs: u32,
}

impl Scaled {
    fn new() -> Scaled {
        let dir = tempfile::Builder::new()
            .prefix("squall-scale-")
            .tempdir()
            .expect("temporary directory");
        let config = dir.path().join("squall.toml");
        // One replica per key, so keys really move when a node comes or goes.
        std::fs::write(&config, config_toml(1)).expect("writing the config");
        Scaled {
            dir,
            config,
            base: reserve_block(),
            seen: BTreeSet::new(),
            runs: 0,
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Runs `squall ARGS` with this cluster's config and state directory,
    /// killing it after `limit`.
    fn squall(&mut self, args: &[&str], limit: Duration) -> Run {
        self.runs += 1;
        let out = self.dir.path().join(format!("run-{}.out", self.runs));
        let err = self.dir.path().join(format!("run-{}.err", self.runs));
        let mut child = Command::new(SQUALL)
            .env_remove("SQUALL_CONFIG")
            .env_remove("SQUALL_STATE_DIR")
            .env_remove("SQUALL_LOG")
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .spawn()
            .expect("starting squall");
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = child.try_wait().expect("polling squall") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`squall {}` ran past {limit:?}", args.join(" "));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.record();
        Run {
            ok: status.success(),
            code: status.code(),
            stdout: std::fs::read_to_string(out).unwrap_or_default(),
            stderr: std::fs::read_to_string(err).unwrap_or_default(),
        }
    }

    /// Like [`Scaled::squall`] (within 60 s), panicking unless it succeeds.
    fn ok(&mut self, args: &[&str]) -> String {
        let run = self.squall(args, Duration::from_secs(60));
        assert!(
            run.ok,
            "`squall {}` failed ({:?}):\n{}\n{}",
            args.join(" "),
            run.code,
            run.stdout,
            run.stderr
        );
        run.stdout
    }

    /// `squall up` on this test's ports with `args` added.
    fn up(&mut self, args: &[&str]) {
        let base = self.base.to_string();
        // No monitor: these tests scale by hand and count every process.
        let mut all = vec!["up", "--base-port", &base, "--wait", "30", "--no-monitor"];
        all.extend(args);
        self.ok(&all);
    }

    /// `cluster.json` now (null if absent); its pids are remembered.
    fn record(&mut self) -> serde_json::Value {
        let Ok(text) = std::fs::read_to_string(self.state_dir().join("cluster.json")) else {
            return serde_json::Value::Null;
        };
        let record: serde_json::Value = serde_json::from_str(&text).expect("cluster.json is JSON");
        for part in ["routers", "nodes", "schedulers", "caches", "executors"] {
            self.seen.extend(pids(&record, part));
        }
        record
    }

    /// The router's address.
    fn router(&mut self) -> Address {
        let record = self.record();
        Address(
            record["routers"][0]["addresses"][0]
                .as_str()
                .expect("a router address")
                .to_string(),
        )
    }
}

impl Drop for Scaled {
    fn drop(&mut self) {
        if self.state_dir().join("cluster.json").exists() {
            let run = self.squall(&["down"], Duration::from_secs(30));
            if !run.ok {
                eprintln!("squall down failed: {}", run.stderr);
            }
        }
        for &pid in &self.seen {
            if running(pid) {
                signal(pid, libc::SIGKILL);
            }
        }
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            let logs = self.state_dir().join("logs");
            for entry in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
                eprintln!("---- {} (last 30 lines)", entry.path().display());
                for line in tail(&entry.path(), 30) {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// The pids of one part of a record (`nodes`, `caches`, ...).
fn pids(record: &serde_json::Value, part: &str) -> Vec<u32> {
    record[part]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            p["pid"]
                .as_u64()
                .and_then(|p| u32::try_from(p).ok())
                .expect("a pid")
        })
        .collect()
}

/// The ids of one part of a record.
fn ids(record: &serde_json::Value, part: &str) -> Vec<u64> {
    record[part]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["id"].as_u64().expect("an id"))
        .collect()
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
    let mut c = Scaled::new();
    c.up(&["--nodes", "1", "--compute-nodes", "0", "--threads", "1"]);
    let mut client = Client::connect(vec![c.router()], client_config()).expect("a client");
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
    let first_port = c.base + 120;
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

    let down = c.ok(&["down"]);
    assert!(down.contains("2 process(es) stopped"), "{down}");
    for &pid in &c.seen {
        assert!(!running(pid), "pid {pid} still running after `squall down`");
    }
}

#[test]
fn compute_scales_out_and_back_in_with_a_cache_and_its_executors() {
    let mut c = Scaled::new();
    c.up(&[
        "--nodes",
        "1",
        "--threads",
        "1",
        "--compute-nodes",
        "1",
        "--executors",
        "1",
    ]);

    let out = c.ok(&["scale", "compute", "2"]);
    assert!(out.contains("2 compute node(s), 2 running"), "{out}");
    assert!(out.contains("every scheduler sees 2 executor(s)"), "{out}");
    let record = c.record();
    assert_eq!(ids(&record, "caches"), [0, 1]);
    assert_eq!(ids(&record, "executors"), [0, 1]);
    assert_eq!(
        record["executors"][1]["addresses"][0].as_str(),
        Some(format!("tcp://127.0.0.1:{}", c.base + 421).as_str())
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

    let down = c.ok(&["down"]);
    assert!(down.contains("5 process(es) stopped"), "{down}");
    for &pid in &c.seen {
        assert!(!running(pid), "pid {pid} still running after `squall down`");
    }
}

#[test]
fn routers_zero_storage_nodes_and_unknown_kinds_are_refused_clearly() {
    let mut c = Scaled::new();
    let none = c.squall(&["scale", "storage", "2"], Duration::from_secs(30));
    assert!(!none.ok, "{}", none.stdout);
    assert!(
        none.stderr.contains("no local cluster recorded") && none.stderr.contains("squall up"),
        "{}",
        none.stderr
    );
    assert!(!c.state_dir().exists(), "a refused scale created the state");

    c.up(&["--nodes", "1", "--compute-nodes", "0", "--threads", "1"]);
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
