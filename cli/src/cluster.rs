//! `squall up`, `squall down`, `squall status`: a local cluster of real
//! processes on this machine, and the functions that start its nodes.
//!
//! `up` starts the routers, storage nodes, schedulers and compute nodes (a
//! cache and its executors each) as child processes of this same binary
//! (`squall route`, `squall kvs`, `squall scheduler`, `squall cache`,
//! `squall executor`) and a monitor (`squall monitor`, unless
//! `--no-monitor` or `monitor.enabled = false`), each logging to
//! `STATE_DIR/logs/`, records them in `STATE_DIR/cluster.json`, and returns
//! once the cluster answers a real put and get and the schedulers see every
//! executor. If anything fails on the way
//! it stops what it started. `down` stops every recorded process (SIGINT,
//! then SIGKILL after a grace period) and removes the record, so no process
//! is left behind. `status` asks the routers, storage threads, schedulers
//! and the monitor what they see.
//!
//! Storage and compute nodes start through [`start_storage_node`] and
//! [`start_compute_node`], the same for `up` and for the local provider
//! (`local.rs`, behind `squall scale` and the monitor), which adds and
//! removes nodes later. So that those start like the first ones, the record
//! keeps how `up` launched them ([`LaunchSettings`]: config file, log
//! filter, ports, threads, executors, virtualenv). Both may change the
//! record at once, so every change is made under [`RecordLock`] and
//! written whole ([`write_record`]).
//!
//! Ports: routers at `base`, `base + 1`, ...; schedulers at `base + 50 + s`;
//! storage node `i` (from 1) at `base + 100 + 20 * (i - 1) + t` for thread
//! `t`; compute node `n` (from 0) has its cache at `base + 400 + 20 * n` and
//! its executor `e` at that `+ 1 + e`; the monitor at `base + 60`, its
//! `/metrics` at `base + 61`.

use crate::config::SquallConfig;
use anna::client::{Client, ClientConfig};
use anna::cluster::{ClusterState, MemberStatus};
use anna::protocol::compute::ComputeStatus;
use anna::protocol::{Address, Message, RequestId};
use anna::transport::{Receiver, Sender};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// What [`Launch::restart`] did.
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
    fn labelled(&self) -> impl Iterator<Item = (&'static str, &ProcessRecord)> {
        let tag = |what: &'static str| move |p| (what, p);
        self.routers
            .iter()
            .map(tag("router"))
            .chain(self.nodes.iter().map(tag("storage")))
            .chain(self.schedulers.iter().map(tag("scheduler")))
            .chain(self.caches.iter().map(tag("cache")))
            .chain(self.executors.iter().map(tag("executor")))
            .chain(self.monitors.iter().map(tag("monitor")))
    }

    /// The monitor addresses.
    pub fn monitor_addresses(&self) -> Vec<Address> {
        self.monitors
            .iter()
            .filter_map(|m| m.addresses.first().map(|a| Address(a.clone())))
            .collect()
    }

    fn processes(&self) -> impl Iterator<Item = &ProcessRecord> {
        self.labelled().map(|(_, p)| p)
    }
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Router processes (default: `cluster.routers`).
    #[arg(long)]
    routers: Option<u16>,
    /// Storage node processes (default: `cluster.nodes`).
    #[arg(long)]
    nodes: Option<u16>,
    /// Worker threads per node (default: `cluster.threads`, 0 = cores).
    #[arg(long)]
    threads: Option<u16>,
    /// Scheduler processes (default: `cluster.schedulers`).
    #[arg(long)]
    schedulers: Option<u16>,
    /// Compute nodes, a cache and its executors each (default:
    /// `cluster.compute_nodes`; 0 starts the storage tier only).
    #[arg(long)]
    compute_nodes: Option<u16>,
    /// Executor processes per compute node (default: `cluster.executors`).
    #[arg(long)]
    executors: Option<u16>,
    /// First port (default: `cluster.base_port`).
    #[arg(long)]
    base_port: Option<u16>,
    /// How long to wait for the cluster to answer, in seconds.
    #[arg(long, default_value_t = 30)]
    wait: u64,
    /// Start no monitor (statistics, /metrics and autoscaling), whatever
    /// `monitor.enabled` says.
    #[arg(long)]
    no_monitor: bool,
}

fn state_file(dir: &Path) -> PathBuf {
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

/// Whether `pid` is running. An exited process whose parent has not reaped
/// it yet (a zombie) still answers signal 0, so: it is reaped here if it is
/// our child (the monitor starts nodes and outlives them), and otherwise
/// its state is read from `/proc` (an init process may reap late).
pub(crate) fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: waitpid with WNOHANG and a null status pointer only reaps
    // `pid` if it is our exited child; for any other pid it fails.
    unsafe {
        libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
    }
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        return !matches!(state, Some('Z' | 'X') | None);
    }
    // SAFETY: kill with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

pub(crate) fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: sending a signal has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Waits up to `limit` for every one of `pids` to exit; true if they did.
pub(crate) fn wait_exit(pids: &[u32], limit: Duration) -> bool {
    let started = Instant::now();
    while pids.iter().any(|&p| alive(p)) {
        if started.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Stops `pids`: `sig`, then SIGKILL for those still running after
/// `grace`. Returns how many were running.
pub(crate) fn stop_processes(pids: &[u32], sig: libc::c_int, grace: Duration) -> usize {
    let pids: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    for &pid in &pids {
        signal(pid, sig);
    }
    wait_exit(&pids, grace);
    for &pid in pids.iter().filter(|&&p| alive(p)) {
        tracing::warn!(pid, signal = sig, "process ignored the signal; killing it");
        signal(pid, libc::SIGKILL);
    }
    pids.len()
}

/// Stops every process of `record`: SIGINT (stop now, no handoff: the
/// whole cluster is going away), then SIGKILL after `grace`.
fn stop_all(record: &ClusterRecord, grace: Duration) -> usize {
    let pids: Vec<u32> = record.processes().map(|p| p.pid).collect();
    stop_processes(&pids, libc::SIGINT, grace)
}

/// What starting a process of the local cluster needs: the binary, how
/// `up` launched the others, and where logs and sockets go.
pub(crate) struct Launch {
    exe: PathBuf,
    settings: LaunchSettings,
    logs: PathBuf,
    /// The state directory, absolute: caches' `ipc://` sockets live there.
    sockets: PathBuf,
    /// Name a log `NAME-2.log` (and so on) rather than overwrite
    /// `NAME.log`: a node started later must not erase the log of an
    /// earlier one that had its id.
    keep_logs: bool,
}

impl Launch {
    /// Launching into the state directory `dir` (its `logs/` created).
    pub(crate) fn new(
        exe: PathBuf,
        dir: &Path,
        settings: LaunchSettings,
        keep_logs: bool,
    ) -> Result<Launch> {
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let sockets = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        Ok(Launch {
            exe,
            settings,
            logs,
            sockets,
            keep_logs,
        })
    }

    pub(crate) fn settings(&self) -> &LaunchSettings {
        &self.settings
    }

    fn log_file(&self, name: &str) -> PathBuf {
        let first = self.logs.join(format!("{name}.log"));
        if !self.keep_logs || !first.exists() {
            return first;
        }
        (2..)
            .map(|k| self.logs.join(format!("{name}-{k}.log")))
            .find(|p| !p.exists())
            .unwrap_or(first)
    }

    fn spawn(&self, name: &str, args: &[String]) -> Result<(u32, PathBuf)> {
        let log = self.log_file(name);
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(&self.exe);
        if let Some(c) = &self.settings.config {
            cmd.arg("--config").arg(c);
        }
        cmd.arg("--log").arg(&self.settings.log_filter);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({})", self.exe.display()))?;
        tracing::debug!(name, pid = child.id(), log = %log.display(), "process started");
        Ok((child.id(), log))
    }

    /// Starts process `name` with `args`, recorded with its `addresses`
    /// and `id`.
    fn start(
        &self,
        name: &str,
        args: Vec<String>,
        addresses: Vec<String>,
        id: u64,
    ) -> Result<ProcessRecord> {
        let (pid, log) = self.spawn(name, &args)?;
        Ok(ProcessRecord {
            pid,
            addresses,
            id,
            log,
            stopping: false,
            name: name.to_string(),
            args,
            restarts: 0,
            recent_restarts: Vec::new(),
        })
    }

    /// Starts `process` again as it was first started (same arguments, so
    /// the same addresses and id; a new log) at `now_ms`, unless its record
    /// does not say how or it was started again too often lately.
    pub(crate) fn restart(&self, process: &mut ProcessRecord, now_ms: u64) -> Result<Restart> {
        if process.args.is_empty() {
            return Ok(Restart::Unknown);
        }
        let window = RESTART_WINDOW.as_millis() as u64;
        process
            .recent_restarts
            .retain(|&at| now_ms.saturating_sub(at) < window);
        if process.recent_restarts.len() >= MAX_RESTARTS {
            return Ok(Restart::TooOften);
        }
        let (pid, log) = self.spawn(&process.name, &process.args)?;
        process.pid = pid;
        process.log = log;
        process.restarts += 1;
        process.recent_restarts.push(now_ms);
        Ok(Restart::Started)
    }

    fn tcp(&self, port: u16) -> String {
        format!("tcp://{}:{port}", self.settings.host)
    }
}

/// `base + offset`, refused beyond the last port.
fn port(base: u16, offset: u64) -> Result<u16> {
    u64::from(base)
        .checked_add(offset)
        .and_then(|p| u16::try_from(p).ok())
        .with_context(|| format!("port {base} + {offset} is beyond 65535"))
}

/// The first port of storage node `id` (from 1); thread `t` is at `+ t`.
pub(crate) fn storage_port(base: u16, id: u64) -> Result<u16> {
    port(base, 100 + 20 * id.saturating_sub(1))
}

/// The port of compute node `n`'s cache; its executor `e` is at `+ 1 + e`.
pub(crate) fn compute_port(base: u16, n: u64) -> Result<u16> {
    port(base, 400 + 20 * n)
}

fn router_args(routers: &[Address]) -> Vec<String> {
    routers
        .iter()
        .flat_map(|r| ["--router".to_string(), r.0.clone()])
        .collect()
}

fn scheduler_args(schedulers: &[Address]) -> Vec<String> {
    schedulers
        .iter()
        .flat_map(|s| ["--scheduler".to_string(), s.0.clone()])
        .collect()
}

/// Starts storage node `id` (from 1): `squall kvs` with the recorded
/// threads at [`storage_port`], joining through `routers`.
pub(crate) fn start_storage_node(
    launch: &Launch,
    id: u64,
    routers: &[Address],
) -> Result<ProcessRecord> {
    let s = &launch.settings;
    let first = storage_port(s.base_port, id)?;
    let last = port(first, u64::from(s.threads.saturating_sub(1)))?;
    let mut a = vec![
        "kvs".into(),
        "--id".into(),
        id.to_string(),
        "--threads".into(),
        s.threads.to_string(),
        "--host".into(),
        s.host.clone(),
        "--port".into(),
        first.to_string(),
    ];
    a.extend(router_args(routers));
    let addresses = (first..=last).map(|p| launch.tcp(p)).collect();
    launch.start(&format!("node-{id}"), a, addresses, id)
}

/// One compute node's processes.
pub(crate) struct ComputeNode {
    pub cache: ProcessRecord,
    pub executors: Vec<ProcessRecord>,
}

/// Starts compute node `n` (from 0): its cache at [`compute_port`], then
/// the recorded number of executors reading through it, all reporting to
/// `schedulers`. If one fails to start, those already started are stopped.
pub(crate) fn start_compute_node(
    launch: &Launch,
    n: u64,
    routers: &[Address],
    schedulers: &[Address],
) -> Result<ComputeNode> {
    let s = &launch.settings;
    let node = format!("compute-{n}");
    let cache_port = compute_port(s.base_port, n)?;
    let ipc = format!(
        "ipc://{}",
        launch.sockets.join(format!("cache-{n}.sock")).display()
    );
    let mut a = vec![
        "cache".into(),
        "--node".into(),
        node.clone(),
        "--host".into(),
        s.host.clone(),
        "--port".into(),
        cache_port.to_string(),
        "--ipc".into(),
        ipc.clone(),
    ];
    a.extend(router_args(routers));
    a.extend(scheduler_args(schedulers));
    let cache = launch.start(
        &format!("cache-{n}"),
        a,
        vec![launch.tcp(cache_port), ipc.clone()],
        n,
    )?;
    let mut started = ComputeNode {
        cache,
        executors: Vec::new(),
    };
    for e in 0..s.executors {
        let spawned = port(cache_port, 1 + u64::from(e)).and_then(|port| {
            let mut a = vec![
                "executor".into(),
                "--node".into(),
                node.clone(),
                "--host".into(),
                s.host.clone(),
                "--port".into(),
                port.to_string(),
                "--cache".into(),
                ipc.clone(),
            ];
            a.extend(scheduler_args(schedulers));
            if let Some(venv) = &s.venv {
                a.extend(["--venv".into(), venv.display().to_string()]);
            }
            launch.start(&format!("executor-{n}-{e}"), a, vec![launch.tcp(port)], n)
        });
        match spawned {
            Ok(p) => started.executors.push(p),
            Err(err) => {
                let pids: Vec<u32> = std::iter::once(&started.cache)
                    .chain(&started.executors)
                    .map(|p| p.pid)
                    .collect();
                stop_processes(&pids, libc::SIGINT, Duration::from_secs(2));
                return Err(err);
            }
        }
    }
    Ok(started)
}

/// The virtualenv whose site-packages executors import from (cloudpickle,
/// the `squall` package): `$VIRTUAL_ENV`, else `./.venv`, else the `.venv`
/// of the source tree this binary was built from.
pub(crate) fn python_env() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("VIRTUAL_ENV").map(PathBuf::from),
        Some(PathBuf::from(".venv")),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("bin/python").exists())
        .and_then(|p| p.canonicalize().ok())
}

/// Warns, when starting executors, that they have no virtualenv.
pub(crate) fn warn_if_no_venv(settings: &LaunchSettings) {
    if settings.venv.is_none() {
        tracing::warn!(
            "no Python virtualenv found ($VIRTUAL_ENV, ./.venv): executors use the \
             interpreter's own site-packages; run `make setup` to create .venv"
        );
    }
}

pub fn up(
    args: &UpArgs,
    config: &SquallConfig,
    config_path: Option<&Path>,
    log_filter: &str,
) -> Result<()> {
    let c = &config.cluster;
    let dir = &c.state_dir;
    let _lock = RecordLock::acquire(dir)?;
    if let Ok(existing) = read_record(dir) {
        if existing.processes().any(|p| alive(p.pid)) {
            bail!(
                "a local cluster is already running (recorded in {}); run `squall down` first",
                state_file(dir).display()
            );
        }
    }
    let routers = args.routers.unwrap_or(c.routers).max(1);
    let nodes = args.nodes.unwrap_or(c.nodes);
    let compute_nodes = args.compute_nodes.unwrap_or(c.compute_nodes);
    let settings = LaunchSettings {
        config: config_path
            .map(std::path::absolute)
            .transpose()
            .context("resolving the config file's path")?,
        log_filter: log_filter.to_string(),
        host: c.host.clone(),
        base_port: args.base_port.unwrap_or(c.base_port),
        threads: args.threads.unwrap_or_else(|| c.threads()).max(1),
        executors: args.executors.unwrap_or(c.executors).max(1),
        venv: python_env(),
    };
    let (threads, executors, base) = (settings.threads, settings.executors, settings.base_port);
    let exe = std::env::current_exe().context("locating the squall binary")?;
    let launch = Launch::new(exe, dir, settings.clone(), false)?;

    let mut record = ClusterRecord {
        launch: Some(settings),
        ..ClusterRecord::default()
    };
    let result = (|| -> Result<()> {
        let router_ports: Vec<u16> = (0..routers)
            .map(|i| port(base, u64::from(i)))
            .collect::<Result<_>>()?;
        let router_addrs: Vec<Address> = router_ports
            .iter()
            .map(|&p| Address(launch.tcp(p)))
            .collect();
        for (i, (me, p)) in router_addrs.iter().zip(&router_ports).enumerate() {
            let mut a = vec![
                "route".into(),
                "--host".into(),
                c.host.clone(),
                "--port".into(),
                p.to_string(),
            ];
            for peer in router_addrs.iter().filter(|&p| p != me) {
                a.extend(["--peer".into(), peer.0.clone()]);
            }
            let router = launch.start(&format!("router-{i}"), a, vec![me.0.clone()], 0)?;
            record.routers.push(router);
        }
        for n in 0..nodes {
            let node = start_storage_node(&launch, u64::from(n) + 1, &router_addrs)?;
            record.nodes.push(node);
        }
        if compute_nodes > 0 {
            let schedulers = args.schedulers.unwrap_or(c.schedulers).max(1);
            start_schedulers(&launch, schedulers, &router_addrs, &mut record)?;
            warn_if_no_venv(launch.settings());
            let scheduler_addrs = record.scheduler_addresses();
            for n in 0..compute_nodes {
                let node =
                    start_compute_node(&launch, u64::from(n), &router_addrs, &scheduler_addrs)?;
                record.caches.push(node.cache);
                record.executors.extend(node.executors);
            }
        }
        if config.monitor.enabled && !args.no_monitor {
            start_monitor(
                &launch,
                dir,
                &router_addrs,
                (nodes, compute_nodes),
                &mut record,
            )?;
        }
        write_record(dir, &record).context("writing the cluster record")?;
        let limit = Duration::from_secs(args.wait);
        wait_ready(&record, usize::from(nodes), &config.client, limit)?;
        wait_compute_ready(&record, usize::from(compute_nodes * executors), limit)
    })();
    if let Err(e) = result {
        stop_all(&record, Duration::from_secs(2));
        let _ = std::fs::remove_file(state_file(dir));
        return Err(e.context(format!(
            "the local cluster did not start; its logs are in {}",
            dir.join("logs").display()
        )));
    }
    println!(
        "squall: local cluster up: {routers} router(s) at {}, {nodes} storage node(s) x {threads} thread(s)",
        record.router_addresses().iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
    );
    if compute_nodes > 0 {
        println!(
            "  compute: {} scheduler(s) at {}, {compute_nodes} compute node(s) x {executors} executor(s)",
            record.schedulers.len(),
            record.scheduler_addresses().iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    for m in &record.monitors {
        println!(
            "  monitor: {}   metrics: {}",
            m.addresses.first().map_or("", String::as_str),
            m.addresses.get(1).map_or("", String::as_str)
        );
    }
    println!(
        "  record: {}   logs: {}",
        state_file(dir).display(),
        dir.join("logs").display()
    );
    println!("  try:    squall kv put hello world && squall kv get hello");
    Ok(())
}

/// Starts the monitor at `base + 60`, its metrics at `base + 61`, scaling
/// this local cluster (the local provider), never below the `(storage,
/// compute)` nodes `up` started.
fn start_monitor(
    launch: &Launch,
    state_dir: &Path,
    routers: &[Address],
    floors: (u16, u16),
    record: &mut ClusterRecord,
) -> Result<()> {
    let port = port(launch.settings.base_port, 60)?;
    let metrics = format!(
        "{}:{}",
        launch.settings.host,
        self::port(launch.settings.base_port, 61)?
    );
    // The provider finds the cluster through its record: the same state
    // directory, whatever the monitor's working directory.
    let state_dir = std::path::absolute(state_dir).context("resolving the state directory")?;
    let mut a = vec![
        "--state-dir".into(),
        state_dir.display().to_string(),
        "monitor".into(),
        "--host".into(),
        launch.settings.host.clone(),
        "--port".into(),
        port.to_string(),
        "--metrics".into(),
        metrics.clone(),
        "--provider".into(),
        "local".into(),
        "--min-storage-nodes".into(),
        floors.0.max(1).to_string(),
        "--min-compute-nodes".into(),
        floors.1.max(1).to_string(),
    ];
    a.extend(router_args(routers));
    a.extend(scheduler_args(&record.scheduler_addresses()));
    let monitor = launch.start(
        "monitor",
        a,
        vec![launch.tcp(port), format!("http://{metrics}/metrics")],
        0,
    )?;
    record.monitors.push(monitor);
    Ok(())
}

/// Starts `count` schedulers at `base + 50 + s`.
fn start_schedulers(
    launch: &Launch,
    count: u16,
    routers: &[Address],
    record: &mut ClusterRecord,
) -> Result<()> {
    for s in 0..count {
        let port = port(launch.settings.base_port, 50 + u64::from(s))?;
        let mut a = vec![
            "scheduler".into(),
            "--host".into(),
            launch.settings.host.clone(),
            "--port".into(),
            port.to_string(),
        ];
        a.extend(router_args(routers));
        let scheduler = launch.start(&format!("scheduler-{s}"), a, vec![launch.tcp(port)], 0)?;
        record.schedulers.push(scheduler);
    }
    Ok(())
}

/// Asks a scheduler what it knows of the compute tier.
pub fn query_compute(to: &Address, timeout: Duration) -> Result<ComputeStatus> {
    ask(
        to,
        timeout,
        |id, reply_to| Message::ComputeStatusRequest { id, reply_to },
        |msg| match msg {
            Message::ComputeStatusReply { id, status } => Some((id, status)),
            _ => None,
        },
    )
}

/// Sends one question to `to` (built from a request id and a reply-to
/// address) and waits up to `timeout` for the answer `answer` recognises
/// with that id.
pub(crate) fn ask<T>(
    to: &Address,
    timeout: Duration,
    question: impl FnOnce(RequestId, Address) -> Message,
    answer: impl Fn(Message) -> Option<(RequestId, T)>,
) -> Result<T> {
    let ctx = zmq::Context::new();
    let mut rx = Receiver::bind(&ctx, &Address::from("tcp://127.0.0.1:*"))?;
    let mut tx = Sender::new(&ctx);
    let id = RequestId(1);
    tx.send(to, &question(id, rx.address().clone()))?;
    let deadline = Instant::now() + timeout;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Some((got, value)) = rx.recv(Some(left))?.and_then(&answer) {
            if got == id {
                return Ok(value);
            }
        }
    }
    bail!("no answer from {to} within {timeout:?}")
}

/// Waits until every scheduler has heard from `executors` executors.
fn wait_compute_ready(record: &ClusterRecord, executors: usize, limit: Duration) -> Result<()> {
    let started = Instant::now();
    for s in record.scheduler_addresses() {
        loop {
            if let Some(p) = record.processes().find(|p| !alive(p.pid)) {
                bail!(
                    "process {} exited during start-up; see {}",
                    p.pid,
                    p.log.display()
                );
            }
            match query_compute(&s, Duration::from_millis(500)) {
                Ok(status) if status.executors.len() >= executors => break,
                _ => {}
            }
            if started.elapsed() > limit {
                bail!("scheduler {s} did not see {executors} executor(s) within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Waits until every router sees `nodes` live nodes and a put and a get
/// of a probe key succeed through the client.
fn wait_ready(
    record: &ClusterRecord,
    nodes: usize,
    client: &ClientConfig,
    limit: Duration,
) -> Result<()> {
    let started = Instant::now();
    let routers = record.router_addresses();
    loop {
        for p in record.processes() {
            if !alive(p.pid) {
                bail!(
                    "process {} exited during start-up; see {}",
                    p.pid,
                    p.log.display()
                );
            }
        }
        let mut ready = true;
        for r in &routers {
            match query_status(r, Duration::from_millis(500)) {
                Ok(state) if state.live_nodes().count() >= nodes => {}
                _ => ready = false,
            }
        }
        if ready {
            let mut c = Client::connect(routers.clone(), client.clone())?;
            let probe = "__squall/probe";
            if c.put_lww(probe, b"ready".to_vec()).is_ok() && c.get(probe).is_ok() {
                return Ok(());
            }
        }
        if started.elapsed() > limit {
            bail!("the cluster did not answer within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What one component reported: the cluster it sees and its counters.
pub struct Status {
    pub cluster: ClusterState,
    pub counters: Vec<(String, u64)>,
}

impl Status {
    /// One counter, zero if absent.
    pub fn counter(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    }
}

/// Asks one component what cluster it sees.
pub fn query_status(to: &Address, timeout: Duration) -> Result<ClusterState> {
    Ok(query(to, timeout)?.cluster)
}

/// Asks one component what cluster it sees and what it has counted.
pub fn query(to: &Address, timeout: Duration) -> Result<Status> {
    ask(
        to,
        timeout,
        |id, reply_to| Message::StatusRequest { id, reply_to },
        |msg| match msg {
            Message::StatusReply {
                id,
                cluster,
                counters,
                ..
            } => Some((id, Status { cluster, counters })),
            _ => None,
        },
    )
}

pub fn down(config: &SquallConfig) -> Result<()> {
    let dir = &config.cluster.state_dir;
    // No cluster: say so before the lock creates a state directory.
    read_record(dir)?;
    let _lock = RecordLock::acquire(dir)?;
    let record = read_record(dir)?;
    let stopped = stop_all(&record, Duration::from_secs(5));
    std::fs::remove_file(state_file(dir)).context("removing the cluster record")?;
    println!("squall: local cluster down ({stopped} process(es) stopped)");
    Ok(())
}

pub fn status(config: &SquallConfig, routers: &[Address]) -> Result<()> {
    let record = read_record(&config.cluster.state_dir).ok();
    let routers: Vec<Address> = if routers.is_empty() {
        record
            .as_ref()
            .map(ClusterRecord::router_addresses)
            .unwrap_or_default()
    } else {
        routers.to_vec()
    };
    if routers.is_empty() {
        bail!("no router to ask: start a cluster with `squall up`, or pass --router ADDRESS");
    }
    if let Some(record) = &record {
        println!(
            "processes (from {}):",
            state_file(&config.cluster.state_dir).display()
        );
        for (kind, p) in record.labelled() {
            let what = match kind {
                "storage" => format!("node {}", p.id),
                "cache" | "executor" => format!("{kind} {}", p.id),
                _ => kind.to_string(),
            };
            let state = match (alive(p.pid), p.stopping) {
                (true, false) => "running",
                (true, true) => "stopping",
                (false, _) => "NOT RUNNING",
            };
            println!(
                "  {what:<10} pid {:<7} {state:<12} {}",
                p.pid,
                p.addresses.join(" ")
            );
        }
    }
    let mut answered = false;
    for r in &routers {
        match query_status(r, Duration::from_secs(2)) {
            Ok(state) => {
                answered = true;
                println!("router {r}: ring version {}", state.ring_version());
                for (id, rec) in state.members() {
                    let status = match &rec.status {
                        MemberStatus::Up(info) => format!("up, {} thread(s)", info.threads.len()),
                        MemberStatus::Departed => "departed".to_string(),
                    };
                    println!(
                        "  node {:<4} incarnation {:<3} {status}",
                        id.0, rec.incarnation
                    );
                }
            }
            Err(e) => println!("router {r}: {e:#}"),
        }
    }
    if let Some(record) = &record {
        println!("storage threads:");
        for node in &record.nodes {
            for a in &node.addresses {
                match query(&Address(a.clone()), Duration::from_secs(1)) {
                    Ok(s) => println!(
                        "  {a:<24} keys {:<8} gets {:<10} puts {:<10} malformed {}",
                        s.counter("keys"),
                        s.counter("gets"),
                        s.counter("puts"),
                        s.counter("malformed")
                    ),
                    Err(e) => println!("  {a:<24} {e:#}"),
                }
            }
        }
    }
    if let Some(record) = &record {
        for s in record.scheduler_addresses() {
            match query_compute(&s, Duration::from_secs(2)) {
                Ok(status) => {
                    println!(
                        "scheduler {s}: {} call(s) in flight, {} queued",
                        status.in_flight, status.queued
                    );
                    for e in &status.executors {
                        println!(
                            "  executor {:<24} {:<10} busy {:>5.1}% queue {:<4} warm [{}]",
                            e.executor.as_str(),
                            e.node,
                            f64::from(e.busy_permille) / 10.0,
                            e.queue,
                            e.warm.join(", ")
                        );
                    }
                    for c in &status.caches {
                        println!(
                            "  cache    {:<24} {:<10} keys {:<6} hits {:<8} misses {}",
                            c.cache.as_str(),
                            c.node,
                            c.keys.len(),
                            c.hits,
                            c.misses
                        );
                    }
                }
                Err(e) => println!("scheduler {s}: {e:#}"),
            }
        }
        for m in record.monitor_addresses() {
            crate::monitor::print_status(&m);
        }
    }
    if !answered {
        bail!("no router answered");
    }
    Ok(())
}
