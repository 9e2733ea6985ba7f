//! The record of a local cluster, `STATE_DIR/cluster.json`: what `squall
//! up` started ([`ClusterRecord`], one [`ProcessRecord`] per process), how
//! it launched them ([`LaunchSettings`]), and how a restart is rationed
//! ([`MAX_RESTARTS`] within [`RESTART_WINDOW`]).
//!
//! `up`, `down`, `squall scale` and a monitor's local provider may all
//! change the record; each reads, changes and writes it under
//! [`RecordLock`], and writes it whole ([`write_record`]), so a reader
//! ([`read_record`]) sees the old record or the new one.

use anna::protocol::Address;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `squall up` started, as recorded in `cluster.json` (and changed by
/// the local provider as it adds and removes nodes).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// How the processes were started; absent in records written before
    /// nodes could be added later.
    #[serde(default)]
    pub launch: Option<LaunchSettings>,
    pub routers: Vec<ProcessRecord>,
    pub nodes: Vec<ProcessRecord>,
    #[serde(default)]
    pub schedulers: Vec<ProcessRecord>,
    /// One cache per compute node; its addresses are its tcp address (for
    /// the KVS) and its `ipc://` address (for its executors).
    #[serde(default)]
    pub caches: Vec<ProcessRecord>,
    #[serde(default)]
    pub executors: Vec<ProcessRecord>,
    /// The monitor, if `up` started one: its address, then its metrics
    /// URL.
    #[serde(default)]
    pub monitors: Vec<ProcessRecord>,
    /// The HTTP gateway, if `up` started one: its `http://` address.
    #[serde(default)]
    pub gateways: Vec<ProcessRecord>,
}

/// One process of the local cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: u32,
    /// The router's address, or the node's thread addresses.
    pub addresses: Vec<String>,
    /// The storage node's id; the compute node's number for caches and
    /// executors; 0 for routers and schedulers.
    pub id: u64,
    pub log: PathBuf,
    /// Asked to stop and not yet gone (a storage node handing its keys
    /// over); kept in the record until it exits, so `down` still stops it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stopping: bool,
    /// What it was started as (its log's name and the binary's arguments
    /// after `--config` and `--log`), so that the local provider can start
    /// it again, the same, if it dies; empty in records written before.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// How many times it was started again after dying.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// When (ms since the Unix epoch) it was last started again, within
    /// the last [`RESTART_WINDOW`]: at most [`MAX_RESTARTS`] there, so a
    /// process that cannot start (a bad flag, a port taken) is not started
    /// every half second.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_restarts: Vec<u64>,
}

/// See [`ProcessRecord::recent_restarts`].
pub(crate) const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// See [`ProcessRecord::recent_restarts`].
pub(crate) const MAX_RESTARTS: usize = 5;

/// What [`crate::launch::Launch::restart`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Restart {
    Started,
    /// The record does not say how (written before it kept arguments).
    Unknown,
    /// Started [`MAX_RESTARTS`] times within [`RESTART_WINDOW`] already.
    TooOften,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// How `up` launched the cluster's processes, so that nodes added later
/// run with the same config, log filter and layout.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LaunchSettings {
    /// The config file every process reads (absolute), if any.
    pub config: Option<PathBuf>,
    pub log_filter: String,
    /// The host every process binds and is reached at.
    pub host: String,
    pub base_port: u16,
    /// Worker threads per storage node.
    pub threads: u16,
    /// Executors per compute node.
    pub executors: u16,
    /// The virtualenv executors import from.
    pub venv: Option<PathBuf>,
    /// Every process runs with open frames (`squall up --insecure`).
    #[serde(default)]
    pub insecure: bool,
    /// The cluster's secret every process reads (absolute), if not
    /// insecure.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl ClusterRecord {
    /// The router addresses.
    pub fn router_addresses(&self) -> Vec<Address> {
        self.routers
            .iter()
            .flat_map(|r| r.addresses.iter().map(|a| Address(a.clone())))
            .collect()
    }

    /// The scheduler addresses.
    pub fn scheduler_addresses(&self) -> Vec<Address> {
        self.schedulers
            .iter()
            .flat_map(|r| r.addresses.iter().map(|a| Address(a.clone())))
            .collect()
    }

    /// Every recorded process with what it is, in start order.
    pub(crate) fn labelled(&self) -> impl Iterator<Item = (&'static str, &ProcessRecord)> {
        let tag = |what: &'static str| move |p| (what, p);
        self.routers
            .iter()
            .map(tag("router"))
            .chain(self.nodes.iter().map(tag("storage")))
            .chain(self.schedulers.iter().map(tag("scheduler")))
            .chain(self.caches.iter().map(tag("cache")))
            .chain(self.executors.iter().map(tag("executor")))
            .chain(self.monitors.iter().map(tag("monitor")))
            .chain(self.gateways.iter().map(tag("gateway")))
    }

    /// The monitor addresses.
    pub fn monitor_addresses(&self) -> Vec<Address> {
        self.monitors
            .iter()
            .filter_map(|m| m.addresses.first().map(|a| Address(a.clone())))
            .collect()
    }

    pub(crate) fn processes(&self) -> impl Iterator<Item = &ProcessRecord> {
        self.labelled().map(|(_, p)| p)
    }
}

pub(crate) fn state_file(dir: &Path) -> PathBuf {
    dir.join("cluster.json")
}

/// Reads the record of the cluster `squall up` started in `dir`. Needs no
/// lock: the record is only ever replaced whole.
pub fn read_record(dir: &Path) -> Result<ClusterRecord> {
    let path = state_file(dir);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no local cluster recorded at {} (start one with `squall up`)",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
}

/// Replaces the record in `dir` atomically (a temporary file renamed over
/// it), so a reader sees the old record or the new one, never half of one.
/// Call it holding the [`RecordLock`].
pub(crate) fn write_record(dir: &Path, record: &ClusterRecord) -> Result<()> {
    let path = state_file(dir);
    let tmp = dir.join(format!("cluster.json.{}.tmp", std::process::id()));
    std::fs::write(&tmp, serde_json::to_string_pretty(record)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))
}

/// An exclusive lock on the record of the cluster in one state directory
/// (`flock` of `cluster.lock`), held until dropped. `up`, `down`,
/// `squall scale` and a monitor each read, change and write the record
/// under it, so no change is lost and none starts a process that `down`
/// will not find. The lock file itself stays: removing it would let two
/// processes lock two different files.
pub(crate) struct RecordLock {
    _file: std::fs::File,
}

impl RecordLock {
    /// Waits for the lock of the state directory `dir`, creating it.
    pub(crate) fn acquire(dir: &Path) -> Result<RecordLock> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("cluster.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        loop {
            // SAFETY: flock on a descriptor this function owns; no memory
            // is shared with the call.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(RecordLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err).with_context(|| format!("locking {}", path.display()));
            }
        }
    }
}
