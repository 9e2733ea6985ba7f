//! The cluster under test and the questions the benchmark asks it:
//! [`BenchCluster`] runs `squall up` with a bench config in a fresh state
//! directory and `squall down` when dropped; [`Probe`] asks a router,
//! storage threads, a scheduler and the monitor for their status directly
//! over ZeroMQ, the way `squall status` does.

use crate::backend::{BackendError, Result};
use anna::cluster::ClusterState;
use anna::protocol::compute::ComputeStatus;
use anna::protocol::monitor::{MonitorStatus, StorageReport};
use anna::protocol::{Address, Message, RequestId};
use squall_transport::{Receiver, Sender};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn setup(what: impl std::fmt::Display) -> BackendError {
    BackendError::Setup(what.to_string())
}

/// Milliseconds since the Unix epoch (the monitor's event clock).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A local cluster started with `squall up` for one run, stopped with
/// `squall down` when dropped.
pub struct BenchCluster {
    squall: PathBuf,
    pub dir: PathBuf,
    pub routers: Vec<Address>,
    pub schedulers: Vec<Address>,
    pub monitor: Address,
    keep: bool,
}

/// The `squall` binary next to the running one.
fn squall_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| setup("no directory for the binary"))?;
    [dir.join("squall"), dir.join("../squall")]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            setup(format!(
                "the squall binary is not built next to {} (cargo build --release -p squall)",
                exe.display()
            ))
        })
}

impl BenchCluster {
    /// Writes `config` (no `[cluster]` section: this adds one naming the
    /// state directory) into a fresh state directory and runs `squall up`
    /// there with `up_args`; `keep` leaves the directory (logs) behind.
    pub fn up(config: &str, up_args: &[String], base_port: u16, keep: bool) -> Result<Self> {
        let squall = squall_binary()?;
        // The kvs benchmark's name pattern: a killed run's directory is
        // reaped (and its cluster stopped) by the next `squall-bench kvs`.
        let dir =
            std::env::temp_dir().join(format!("squall-bench-{}-{base_port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let config_path = dir.join("squall.toml");
        // The state directory in the file too, not only on the command
        // line: the monitor's local provider reads it from the config.
        let state_dir = dir.to_string_lossy();
        std::fs::write(
            &config_path,
            format!("[cluster]\nstate_dir = {state_dir:?}\n\n{config}"),
        )?;
        crate::squall::share_secret(&dir)?;
        let status = Command::new(&squall)
            .arg("--config")
            .arg(&config_path)
            .arg("--state-dir")
            .arg(&dir)
            .args(["--log", "info", "up"])
            .args(["--base-port", &base_port.to_string()])
            .args(up_args)
            .status()
            .map_err(|e| setup(format!("running {}: {e}", squall.display())))?;
        if !status.success() {
            return Err(setup(format!(
                "`squall up` failed ({status}); see {}",
                dir.display()
            )));
        }
        let text = std::fs::read_to_string(dir.join("cluster.json"))?;
        let record: serde_json::Value = serde_json::from_str(&text).map_err(setup)?;
        let first_addresses = |field: &str| -> Vec<Address> {
            record[field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["addresses"][0].as_str().map(Address::from))
                .collect()
        };
        let monitor = first_addresses("monitors")
            .pop()
            .ok_or_else(|| setup("`squall up` started no monitor"))?;
        Ok(BenchCluster {
            squall,
            routers: first_addresses("routers"),
            schedulers: first_addresses("schedulers"),
            monitor,
            dir,
            keep,
        })
    }

    /// The monitor's log (its decisions, the provider's starts and stops).
    pub fn monitor_log(&self) -> PathBuf {
        self.dir.join("logs").join("monitor.log")
    }
}

impl Drop for BenchCluster {
    fn drop(&mut self) {
        let stopped = Command::new(&self.squall)
            .arg("--state-dir")
            .arg(&self.dir)
            .args(["--log", "warn", "down"])
            .output();
        if let Err(e) = stopped {
            eprintln!("warning: `squall down` failed: {e}");
        }
        if self.keep {
            eprintln!("state directory kept: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Asks the cluster's processes for their status, directly over ZeroMQ.
pub struct Probe {
    rx: Receiver,
    tx: Sender,
    next: u64,
}

fn reply_id(msg: &Message) -> Option<RequestId> {
    match msg {
        Message::StatusReply { id, .. }
        | Message::StorageReport { id, .. }
        | Message::ComputeStatusReply { id, .. }
        | Message::MonitorStatusReply { id, .. } => Some(*id),
        _ => None,
    }
}

/// How long one round of questions may take; a process that has not
/// answered by then is counted as silent for this sample.
const ASK_TIMEOUT: Duration = Duration::from_millis(150);

impl Probe {
    pub fn new(ctx: &zmq::Context) -> Result<Self> {
        let rx = Receiver::bind(ctx, &Address::from("tcp://127.0.0.1:*"))
            .map_err(|e| setup(format!("binding the probe: {e}")))?;
        Ok(Probe {
            rx,
            tx: Sender::new(ctx),
            next: 0,
        })
    }

    /// Sends one question to each of `to` and collects the answers that
    /// arrive within [`ASK_TIMEOUT`].
    fn ask(&mut self, to: &[Address], make: fn(RequestId, Address) -> Message) -> Vec<Message> {
        let mut waiting = BTreeSet::new();
        for peer in to {
            self.next += 1;
            let id = RequestId(self.next);
            if self
                .tx
                .send(peer, &make(id, self.rx.address().clone()))
                .is_ok()
            {
                waiting.insert(id);
            }
        }
        let deadline = Instant::now() + ASK_TIMEOUT;
        let mut answers = Vec::new();
        while !waiting.is_empty() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            match self.rx.recv(Some(left)) {
                Ok(Some(msg)) => {
                    if reply_id(&msg).is_some_and(|id| waiting.remove(&id)) {
                        answers.push(msg);
                    }
                }
                Ok(None) => {}
                Err(_) => break,
            }
        }
        answers
    }

    /// The cluster state a router holds.
    pub fn cluster(&mut self, router: &Address) -> Option<ClusterState> {
        let make = |id, reply_to| Message::StatusRequest { id, reply_to };
        self.ask(std::slice::from_ref(router), make)
            .into_iter()
            .find_map(|m| match m {
                Message::StatusReply { cluster, .. } => Some(cluster),
                _ => None,
            })
    }

    /// The statistics of storage threads `threads` (those that answered).
    pub fn storage(&mut self, threads: &[Address]) -> Vec<StorageReport> {
        let make = |id, reply_to| Message::StatsRequest { id, reply_to };
        self.ask(threads, make)
            .into_iter()
            .filter_map(|m| match m {
                Message::StorageReport { report, .. } => Some(report),
                _ => None,
            })
            .collect()
    }

    /// What a scheduler knows of the compute tier.
    pub fn compute(&mut self, scheduler: &Address) -> Option<ComputeStatus> {
        let make = |id, reply_to| Message::ComputeStatusRequest { id, reply_to };
        self.ask(std::slice::from_ref(scheduler), make)
            .into_iter()
            .find_map(|m| match m {
                Message::ComputeStatusReply { status, .. } => Some(status),
                _ => None,
            })
    }

    /// What the monitor sees and has decided.
    pub fn monitor(&mut self, monitor: &Address) -> Option<MonitorStatus> {
        let make = |id, reply_to| Message::MonitorStatusRequest { id, reply_to };
        self.ask(std::slice::from_ref(monitor), make)
            .into_iter()
            .find_map(|m| match m {
                Message::MonitorStatusReply { status, .. } => Some(*status),
                _ => None,
            })
    }
}
