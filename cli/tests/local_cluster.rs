//! `squall up`, `kv`, `status` and `down` end to end, as a person runs them.

mod cluster;

use cluster::{config_toml, reserve_ports, running, signal, SQUALL};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one `squall` command did.
struct Run {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// The local cluster of one test: its state directory and config, and the
/// pids `up` recorded, SIGKILLed on drop whatever `down` did.
struct Local {
    dir: tempfile::TempDir,
    config: PathBuf,
    base: u16,
    pids: Vec<u32>,
    runs: u32,
}

impl Local {
    fn new() -> Local {
        let dir = tempfile::Builder::new()
            .prefix("squall-up-")
            .tempdir()
            .expect("temporary directory");
        let config = dir.path().join("squall.toml");
        std::fs::write(&config, config_toml(2)).expect("writing the config");
        Local {
            dir,
            config,
            base: reserve_ports(),
            pids: Vec::new(),
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
        Run {
            ok: status.success(),
            code: status.code(),
            stdout: std::fs::read_to_string(out).unwrap_or_default(),
            stderr: std::fs::read_to_string(err).unwrap_or_default(),
        }
    }

    /// Like [`Local::squall`], panicking unless it succeeds.
    fn ok(&mut self, args: &[&str]) -> String {
        let run = self.squall(args, Duration::from_secs(30));
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

    /// The pids recorded in `cluster.json`.
    fn recorded_pids(&self) -> Vec<u32> {
        recorded_pids(&self.state_dir())
    }
}

fn recorded_pids(state_dir: &Path) -> Vec<u32> {
    let Ok(text) = std::fs::read_to_string(state_dir.join("cluster.json")) else {
        return Vec::new();
    };
    let record: serde_json::Value = serde_json::from_str(&text).expect("cluster.json is JSON");
    [
        "routers",
        "nodes",
        "schedulers",
        "caches",
        "executors",
        "monitors",
    ]
    .iter()
    .flat_map(|part| record[part].as_array().cloned().unwrap_or_default())
    .map(|p| {
        p["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .expect("a pid")
    })
    .collect()
}

impl Drop for Local {
    fn drop(&mut self) {
        let mut pids = self.pids.clone();
        pids.extend(self.recorded_pids());
        for pid in pids {
            if running(pid) {
                signal(pid, libc::SIGKILL);
            }
        }
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            let logs = self.state_dir().join("logs");
            for entry in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
                eprintln!("---- {} (last 30 lines)", entry.path().display());
                for line in cluster::tail(&entry.path(), 30) {
                    eprintln!("{line}");
                }
            }
        }
    }
}

#[test]
fn up_kv_status_and_down_run_a_local_cluster_and_leave_no_process_behind() {
    let mut local = Local::new();
    let base = local.base.to_string();
    local.ok(&[
        "up",
        "--routers",
        "1",
        "--nodes",
        "3",
        "--threads",
        "2",
        "--base-port",
        &base,
        "--wait",
        "20",
    ]);
    local.pids = local.recorded_pids();
    assert_eq!(
        local.pids.len(),
        9,
        "one router, three storage nodes, a scheduler, a cache, two executors and the monitor"
    );
    assert!(local.pids.iter().all(|&p| running(p)));

    // A second `up` on the same state directory refuses.
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
    assert_eq!(status.matches(" running ").count(), 9, "{status}");
    // The monitor answers with what it gathered.
    assert!(
        status.lines().any(|l| l.starts_with("monitor tcp://")),
        "{status}"
    );
    assert!(!status.contains("NOT RUNNING"), "{status}");
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

    let down = local.ok(&["down"]);
    assert!(down.contains("9 process(es) stopped"), "{down}");
    for &pid in &local.pids {
        assert!(!running(pid), "pid {pid} still running after `squall down`");
    }
    assert!(!local.state_dir().join("cluster.json").exists());
    let after = local.squall(&["status"], Duration::from_secs(30));
    assert!(
        !after.ok,
        "status with no cluster should fail:\n{}",
        after.stdout
    );
}
