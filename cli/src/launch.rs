//! Starting the processes of a local cluster: [`Launch`] (the binary, the
//! recorded [`LaunchSettings`], where logs and sockets go; it also starts a
//! dead process again from its record), the port layout, and one function
//! per role (routers, storage nodes, schedulers, compute nodes, the
//! monitor), shared by `squall up` and the local provider (`local.rs`).
//! Each role's command line is its parsed-arguments struct (`KvsArgs`,
//! `CacheArgs`, ...) rendered back (`to_args`, see `argv.rs`), so its
//! flags are written only where they are parsed.
//!
//! Ports: routers at `base`, `base + 1`, ...; schedulers at `base + 50 + s`;
//! storage node `i` (from 1) at `base + 100 + 20 * (i - 1) + t` for thread
//! `t` (its direct endpoint at `+ 10 + t` with up to 10 threads, free ports
//! beyond); compute node `n` (from 0) has its cache at `base + 400 + 20 * n` and
//! its executor `e` at that `+ 1 + e`; the monitor at `base + 60`, its
//! `/metrics` at `base + 61`; the HTTP gateway at `base + 62`.

use crate::compute::{CacheArgs, ExecutorArgs, SchedulerArgs};
use crate::gateway::GatewayArgs;
use crate::monitor::{MonitorArgs, ProviderKind};
use crate::process::stop_processes;
use crate::record::{
    ClusterRecord, LaunchSettings, ProcessRecord, Restart, MAX_RESTARTS, RESTART_WINDOW,
};
use crate::roles::{KvsArgs, RouteArgs};
use anna::protocol::Address;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// What starting a process of the local cluster needs: the binary, how
/// `up` launched the others, and where logs and sockets go.
pub(crate) struct Launch {
    exe: PathBuf,
    settings: LaunchSettings,
    logs: PathBuf,
    /// The state directory, absolute: caches' `ipc://` sockets and the
    /// storage nodes' data directories live there.
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

    /// Where storage node `id` keeps its keys: `data/node-ID` in the state
    /// directory, the same whenever a node of that id starts (again).
    pub(crate) fn data_dir(&self, id: u64) -> PathBuf {
        self.sockets.join("data").join(format!("node-{id}"))
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
        if self.settings.insecure {
            cmd.arg("--insecure");
        } else if let Some(key) = &self.settings.key_file {
            // The least each role needs: executors, caches, schedulers and
            // storage nodes are not given the secret.
            cmd.arg("--key-file").arg(crate::keys::key_for(args, key)?);
        }
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

/// Addresses as the flags' values.
fn strings(addresses: &[Address]) -> Vec<String> {
    addresses.iter().map(|a| a.0.clone()).collect()
}

/// Starts storage node `id` (from 1): `squall kvs` with the recorded
/// threads at [`storage_port`], joining through `routers`, keeping its
/// keys in [`Launch::data_dir`].
pub(crate) fn start_storage_node(
    launch: &Launch,
    id: u64,
    routers: &[Address],
) -> Result<ProcessRecord> {
    let s = &launch.settings;
    let first = storage_port(s.base_port, id)?;
    let last = port(first, u64::from(s.threads.saturating_sub(1)))?;
    let a = KvsArgs {
        id,
        threads: Some(s.threads),
        host: s.host.clone(),
        port: first,
        routers: strings(routers),
        data_dir: Some(launch.data_dir(id)),
        // Thread t's direct endpoint at first + 10 + t, in the node's
        // block of 20 ports, where the threads leave room.
        direct_port: (s.threads <= 10).then(|| port(first, 10)).transpose()?,
        no_direct: false,
    }
    .to_args()?;
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
    let a = CacheArgs {
        node: node.clone(),
        host: s.host.clone(),
        port: cache_port,
        ipc: ipc.clone(),
        routers: strings(routers),
        schedulers: strings(schedulers),
    }
    .to_args()?;
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
            let a = ExecutorArgs {
                node: node.clone(),
                host: s.host.clone(),
                port,
                cache: ipc.clone(),
                schedulers: strings(schedulers),
                venv: s.venv.clone(),
                python_path: Vec::new(),
                no_supervisor: false,
            }
            .to_args()?;
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

/// Starts the monitor at `base + 60`, its metrics at `base + 61`, scaling
/// this local cluster (the local provider), never below the `(storage,
/// compute)` nodes `up` started.
pub(crate) fn start_monitor(
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
    // `--state-dir` is the binary's own flag (every subcommand takes it),
    // so it goes before the monitor's.
    let mut a = vec!["--state-dir".into(), state_dir.display().to_string()];
    a.extend(
        MonitorArgs {
            host: launch.settings.host.clone(),
            port,
            metrics: metrics.clone(),
            routers: strings(routers),
            schedulers: strings(&record.scheduler_addresses()),
            provider: ProviderKind::Local,
            min_storage_nodes: Some(u32::from(floors.0.max(1))),
            min_compute_nodes: Some(u32::from(floors.1.max(1))),
        }
        .to_args()?,
    );
    let monitor = launch.start(
        "monitor",
        a,
        vec![launch.tcp(port), format!("http://{metrics}/metrics")],
        0,
    )?;
    record.monitors.push(monitor);
    Ok(())
}

/// Starts the HTTP gateway at `base + 62`, sending calls to the cluster's
/// schedulers.
pub(crate) fn start_gateway(
    launch: &Launch,
    routers: &[Address],
    record: &mut ClusterRecord,
) -> Result<()> {
    let listen = format!(
        "{}:{}",
        launch.settings.host,
        port(launch.settings.base_port, 62)?
    );
    let args = GatewayArgs {
        listen: listen.clone(),
        routers: strings(routers),
        schedulers: strings(&record.scheduler_addresses()),
        bind_host: launch.settings.host.clone(),
        connections: 64,
        call_timeout: 60,
    }
    .to_args()?;
    let gateway = launch.start("gateway", args, vec![format!("http://{listen}")], 0)?;
    record.gateways.push(gateway);
    Ok(())
}

/// Starts `count` routers at `base`, `base + 1`, ..., each told of the
/// others; returns their addresses.
pub(crate) fn start_routers(
    launch: &Launch,
    count: u16,
    record: &mut ClusterRecord,
) -> Result<Vec<Address>> {
    let base = launch.settings.base_port;
    let c = &launch.settings;
    let router_ports: Vec<u16> = (0..count)
        .map(|i| port(base, u64::from(i)))
        .collect::<Result<_>>()?;
    let router_addrs: Vec<Address> = router_ports
        .iter()
        .map(|&p| Address(launch.tcp(p)))
        .collect();
    for (i, (me, p)) in router_addrs.iter().zip(&router_ports).enumerate() {
        let a = RouteArgs {
            host: c.host.clone(),
            port: *p,
            peers: router_addrs
                .iter()
                .filter(|&p| p != me)
                .map(|p| p.0.clone())
                .collect(),
        }
        .to_args()?;
        let router = launch.start(&format!("router-{i}"), a, vec![me.0.clone()], 0)?;
        record.routers.push(router);
    }
    Ok(router_addrs)
}

/// Starts `count` schedulers at `base + 50 + s`.
pub(crate) fn start_schedulers(
    launch: &Launch,
    count: u16,
    routers: &[Address],
    record: &mut ClusterRecord,
) -> Result<()> {
    for s in 0..count {
        let port = port(launch.settings.base_port, 50 + u64::from(s))?;
        let a = SchedulerArgs {
            host: launch.settings.host.clone(),
            port,
            routers: strings(routers),
        }
        .to_args()?;
        let scheduler = launch.start(&format!("scheduler-{s}"), a, vec![launch.tcp(port)], 0)?;
        record.schedulers.push(scheduler);
    }
    Ok(())
}
