//! [`LocalCluster`]: a cluster started with `squall up`, driven through the
//! binary as a person runs it (`up`, `kv`, `scale`, `status`, `down`).
//!
//! Unlike [`super::Cluster`], the harness starts no server itself: `squall
//! up` does, and records them in `cluster.json`. So the harness reads that
//! record after every command and remembers every pid it ever listed; on
//! drop it runs `squall down`, then SIGKILLs whatever of those still runs,
//! whether the test's `down` worked or not.

use super::{running, signal, tail, SQUALL};
use anna::protocol::Address;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Ports one local cluster reserves: `up` puts routers at `base`,
/// schedulers at `+ 50`, the monitor at `+ 60`, storage nodes from `+ 100`
/// (20 each) and compute nodes from `+ 400`, so up to `base + 425`.
pub const LOCAL_BLOCK: u16 = 500;

/// Where a test file's local clusters take their ports: `blocks` blocks of
/// [`LOCAL_BLOCK`] ports from `floor`. Files that run in parallel use
/// ranges that do not overlap.
#[derive(Clone, Copy, Debug)]
pub struct PortRange {
    pub floor: u16,
    pub blocks: u16,
}

impl PortRange {
    /// The first port of a block that was all free a moment ago. Blocks
    /// differ between the tests of one process; across processes the probe
    /// (and the process id in the starting block) keeps them apart.
    fn reserve(self) -> u16 {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let blocks = u32::from(self.blocks);
        let start = std::process::id().wrapping_mul(7);
        for _ in 0..blocks {
            let block = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % blocks;
            let base = self.floor + u16::try_from(block).expect("block index") * LOCAL_BLOCK;
            if (base..base + LOCAL_BLOCK).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
                return base;
            }
        }
        panic!("no free block of {LOCAL_BLOCK} ports in {self:?}");
    }
}

/// The parts of `cluster.json` that list processes.
const PARTS: [&str; 7] = [
    "routers",
    "nodes",
    "schedulers",
    "caches",
    "executors",
    "monitors",
    "gateways",
];

/// What one `squall` command did.
pub struct Run {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// One test's local cluster: a temporary directory holding its config
/// file and state directory, and its block of ports.
pub struct LocalCluster {
    dir: TempDir,
    config: PathBuf,
    base: u16,
    /// Every pid the record has listed, for the drop.
    seen: RefCell<BTreeSet<u32>>,
    /// Commands run so far, so each writes fresh output files.
    runs: u32,
}

impl LocalCluster {
    /// A cluster yet to be started, reading `config` (a `squall.toml`), in
    /// a temporary directory named from `prefix`, on ports from `ports`.
    pub fn new(config: &str, prefix: &str, ports: PortRange) -> LocalCluster {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("temporary directory");
        let path = dir.path().join("squall.toml");
        std::fs::write(&path, config).expect("writing the config");
        LocalCluster {
            dir,
            config: path,
            base: ports.reserve(),
            seen: RefCell::default(),
            runs: 0,
        }
    }

    /// The first port of this cluster's block.
    pub fn base(&self) -> u16 {
        self.base
    }

    /// The state directory every command is pointed at.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Runs `squall ARGS` with this cluster's config and state directory
    /// and none of the `SQUALL_*` environment; panics if it cannot start or
    /// runs past `limit` (it is killed then).
    pub fn squall(&mut self, args: &[&str], limit: Duration) -> Run {
        self.try_squall(args, limit)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`LocalCluster::squall`] within a minute, panicking unless it
    /// succeeds: its stdout.
    pub fn ok(&mut self, args: &[&str]) -> String {
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

    /// `squall up` on this cluster's ports, waiting up to 30 s for it to
    /// serve, with `args` added; its stdout.
    pub fn up(&mut self, args: &[&str]) -> String {
        let base = self.base.to_string();
        let mut all = vec!["up", "--base-port", &base, "--wait", "30"];
        all.extend(args);
        self.ok(&all)
    }

    /// `squall down`, panicking unless it says it stopped `stopped`
    /// processes and none the record ever listed still runs.
    pub fn down(&mut self, stopped: usize) {
        let out = self.ok(&["down"]);
        assert!(
            out.contains(&format!("{stopped} process(es) stopped")),
            "{out}"
        );
        for pid in self.seen() {
            assert!(!running(pid), "pid {pid} still running after `squall down`");
        }
    }

    /// `cluster.json` now (null if absent or unreadable); its pids are
    /// remembered.
    pub fn record(&self) -> serde_json::Value {
        let record: serde_json::Value =
            std::fs::read_to_string(self.state_dir().join("cluster.json"))
                .ok()
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or_default();
        let mut seen = self.seen.borrow_mut();
        for part in PARTS {
            for p in record[part].as_array().into_iter().flatten() {
                seen.extend(p["pid"].as_u64().and_then(|p| u32::try_from(p).ok()));
            }
        }
        record
    }

    /// Every pid the record has listed so far.
    pub fn seen(&self) -> Vec<u32> {
        self.seen.borrow().iter().copied().collect()
    }

    /// The first address of the first process of `part` in the record.
    pub fn address(&self, part: &str) -> Address {
        let record = self.record();
        let a = record[part][0]["addresses"][0].as_str();
        Address(
            a.unwrap_or_else(|| panic!("no {part} in {record}"))
                .to_string(),
        )
    }

    /// [`LocalCluster::squall`] without the panic, so the drop can use it.
    fn try_squall(&mut self, args: &[&str], limit: Duration) -> Result<Run, String> {
        self.runs += 1;
        let out = self.dir.path().join(format!("run-{}.out", self.runs));
        let err = self.dir.path().join(format!("run-{}.err", self.runs));
        let what = format!("`squall {}`", args.join(" "));
        let files = std::fs::File::create(&out).and_then(|o| Ok((o, std::fs::File::create(&err)?)));
        let (stdout, stderr) = files.map_err(|e| format!("{what}: output files: {e}"))?;
        // `up` keeps a key already there: this process's, so its own
        // clients and probes speak to the cluster.
        if args.first() == Some(&"up") {
            super::write_cluster_key(&self.state_dir());
        }
        let mut child = Command::new(SQUALL)
            .env_remove("SQUALL_CONFIG")
            .env_remove("SQUALL_STATE_DIR")
            .env_remove("SQUALL_LOG")
            .env_remove("SQUALL_KEY_FILE")
            .env_remove("SQUALL_INSECURE")
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("{what}: {e}"))?;
        let deadline = Instant::now() + limit;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    self.record();
                    return Err(format!("{what} ran past {limit:?}"));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(format!("{what}: {e}")),
            }
        };
        self.record();
        Ok(Run {
            ok: status.success(),
            code: status.code(),
            stdout: std::fs::read_to_string(out).unwrap_or_default(),
            stderr: std::fs::read_to_string(err).unwrap_or_default(),
        })
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if self.state_dir().join("cluster.json").exists() {
            match self.try_squall(&["down"], Duration::from_secs(30)) {
                Ok(run) if !run.ok => eprintln!("squall down failed: {}", run.stderr),
                Ok(_) => {}
                Err(e) => eprintln!("{e}"),
            }
        }
        for pid in self.seen() {
            if running(pid) {
                signal(pid, libc::SIGKILL);
            }
        }
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!("logs kept in {}", self.state_dir().display());
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
pub fn pids(record: &serde_json::Value, part: &str) -> Vec<u32> {
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

/// The pids of every process a record lists.
pub fn all_pids(record: &serde_json::Value) -> Vec<u32> {
    PARTS.iter().flat_map(|part| pids(record, part)).collect()
}

/// The ids of one part of a record.
pub fn ids(record: &serde_json::Value, part: &str) -> Vec<u64> {
    record[part]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["id"].as_u64().expect("an id"))
        .collect()
}
