//! The local cluster of `squall up` as a monitor [`Provider`]
//! ([`LocalProvider`]), and `squall scale`, which drives it by hand.
//!
//! The provider keeps no state of its own: the cluster is its record,
//! `STATE_DIR/cluster.json`, so `squall scale` and a running monitor can
//! both drive the same cluster. Every change is a read-modify-write of the
//! record under its lock, written whole ([`crate::record::RecordLock`],
//! [`crate::record::write_record`]). A process stays in the record until
//! it has exited, so `squall down` stops whatever a scale started, or left
//! half-stopped.
//!
//! Nodes start as `up` started the first ones: through the same functions
//! ([`start_storage_node`], [`start_compute_node`]) and with the launch
//! settings `up` recorded (config file, log filter, ports, threads,
//! executors, virtualenv). A new storage node takes the lowest free id and
//! joins through the routers. The node removed is the most recently
//! started one; a storage node departs gracefully (SIGTERM: it hands its
//! keys to the remaining owners, tells the routers, then exits), one node
//! at a time so that no node hands keys to another that is leaving too. A
//! compute node is a cache and its executors, started and stopped
//! together. Routers and schedulers are not scaled.

use crate::config::SquallConfig;
use crate::launch::{python_env, start_compute_node, start_storage_node, warn_if_no_venv, Launch};
use crate::process::{alive, signal, wait_exit};
use crate::record::{
    read_record, write_record, ClusterRecord, LaunchSettings, ProcessRecord, RecordLock, Restart,
    MAX_RESTARTS, RESTART_WINDOW,
};
use crate::status::{query_compute, query_status};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use squall_monitor::{Action, NodeKind, Provider, ProviderError, Replicas};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long past `storage.leave_timeout` a departing storage node may take
/// to exit (it answers "not mine" for up to 2 s, then stops its threads).
const LEAVE_MARGIN: Duration = Duration::from_secs(10);

/// How long a compute node's process may take to exit after SIGTERM
/// before it is killed (it has no state to hand over).
const COMPUTE_EXIT: Duration = Duration::from_secs(10);

/// Storage nodes take 20 ports each from `base_port + 100`; the compute
/// nodes' ports start at `base_port + 400`.
const MAX_STORAGE_NODES: u32 = 15;

/// Starts and stops the storage and compute nodes of the local cluster
/// recorded in `STATE_DIR/cluster.json`.
///
/// `scale` holds the record's lock while it works, so calls from several
/// processes run one after the other. It returns once the processes are
/// started (not yet serving) or have exited; removing storage nodes takes
/// at most `storage.leave_timeout` + 10 s per node (then the node is
/// killed and `scale` answers [`ProviderError::Timeout`]), compute nodes
/// about 25 s each (then they are killed: they hold nothing to hand over).
/// `replicas` reads the record without the lock: desired is the recorded
/// nodes not asked to stop, observed the recorded nodes whose processes
/// run (for compute, the cache and every executor).
///
/// A process it starts is its child; once it exited, the next `replicas`
/// or `scale` reaps it ([`crate::process::alive`]), so a long-lived
/// monitor that polls leaves no zombies behind.
pub struct LocalProvider {
    dir: PathBuf,
    exe: PathBuf,
    /// How to launch when the record does not say (a record written
    /// before `up` recorded its launch settings); otherwise the record's
    /// settings win, so added nodes always match the first ones.
    fallback: LaunchSettings,
    leave_timeout: Duration,
}

impl LocalProvider {
    /// The provider of the cluster in `config.cluster.state_dir`. The
    /// config file and log filter are used only for a cluster whose record
    /// does not name its own.
    pub fn new(
        config: &SquallConfig,
        config_path: Option<PathBuf>,
        log_filter: String,
    ) -> Result<LocalProvider> {
        let c = &config.cluster;
        let (insecure, key_file) = crate::keys::for_children();
        Ok(LocalProvider {
            dir: c.state_dir.clone(),
            exe: std::env::current_exe()?,
            fallback: LaunchSettings {
                config: config_path,
                log_filter,
                host: c.host.clone(),
                base_port: c.base_port,
                threads: c.threads().max(1),
                executors: c.executors.max(1),
                venv: python_env(),
                insecure,
                key_file,
            },
            leave_timeout: config.storage.leave_timeout,
        })
    }

    fn workload(&self, kind: NodeKind) -> String {
        format!("local {kind} nodes in {}", self.dir.display())
    }

    fn failed(&self, kind: NodeKind, action: Action, e: anyhow::Error) -> ProviderError {
        ProviderError::Failed {
            workload: self.workload(kind),
            action,
            source: e.into(),
        }
    }

    fn invalid(&self, kind: NodeKind, replicas: u32, why: &'static str) -> ProviderError {
        ProviderError::InvalidCount {
            workload: self.workload(kind),
            replicas,
            why,
        }
    }

    /// The storage nodes' own `storage.leave_timeout`: from the config file
    /// they were started with, if it still reads, else ours.
    fn leave_timeout(&self, record: &ClusterRecord) -> Duration {
        record
            .launch
            .as_ref()
            .and_then(|l| l.config.as_deref())
            .and_then(|path| SquallConfig::load(Some(path)).ok())
            .map_or(self.leave_timeout, |c| c.storage.leave_timeout)
    }

    fn launch(&self, record: &ClusterRecord) -> Result<Launch> {
        let settings = record
            .launch
            .clone()
            .unwrap_or_else(|| self.fallback.clone());
        Launch::new(self.exe.clone(), &self.dir, settings, true)
    }

    /// Starts or stops storage nodes until `replicas` are not stopping.
    fn scale_storage(
        &self,
        record: &mut ClusterRecord,
        replicas: u32,
    ) -> Result<(), ProviderError> {
        let kind = NodeKind::Storage;
        let fail = |e| self.failed(kind, Action::Scale(replicas), e);
        let launch = self.launch(record).map_err(fail)?;
        let routers = record.router_addresses();
        loop {
            let active: Vec<usize> = active(&record.nodes).collect();
            if count(active.len()) < replicas {
                let id = lowest_free_id(&record.nodes, 1);
                let node = start_storage_node(&launch, id, &routers).map_err(fail)?;
                tracing::info!(
                    kind = %kind,
                    id,
                    pid = node.pid,
                    ports = ?ports(&node),
                    log = %node.log.display(),
                    "started"
                );
                record.nodes.push(node);
                write_record(&self.dir, record).map_err(fail)?;
            } else if let Some(&i) = active.last().filter(|_| count(active.len()) > replicas) {
                self.stop_storage_node(record, i, replicas)?;
            } else {
                return Ok(());
            }
        }
    }

    /// Asks storage node `record.nodes[i]` to leave, waits for it to exit
    /// and removes it from the record.
    fn stop_storage_node(
        &self,
        record: &mut ClusterRecord,
        i: usize,
        replicas: u32,
    ) -> Result<(), ProviderError> {
        let kind = NodeKind::Storage;
        let fail = |e| self.failed(kind, Action::Scale(replicas), e);
        record.nodes[i].stopping = true;
        write_record(&self.dir, record).map_err(fail)?;
        let node = record.nodes[i].clone();
        tracing::info!(
            kind = %kind,
            id = node.id,
            pid = node.pid,
            ports = ?ports(&node),
            "asking to leave (SIGTERM)"
        );
        let started = Instant::now();
        signal(node.pid, libc::SIGTERM);
        let limit = self.leave_timeout(record) + LEAVE_MARGIN;
        let exited = wait_exit(&[node.pid], limit);
        if !exited {
            tracing::warn!(
                kind = %kind,
                id = node.id,
                pid = node.pid,
                "did not exit within {limit:?}; killing it"
            );
            signal(node.pid, libc::SIGKILL);
            wait_exit(&[node.pid], Duration::from_secs(2));
        }
        record.nodes.retain(|n| n.pid != node.pid);
        write_record(&self.dir, record).map_err(fail)?;
        if !exited {
            return Err(ProviderError::Timeout {
                workload: self.workload(kind),
                action: Action::Scale(replicas),
                after: limit,
            });
        }
        tracing::info!(
            kind = %kind,
            id = node.id,
            pid = node.pid,
            ms = started.elapsed().as_millis() as u64,
            "stopped after handing its keys over"
        );
        Ok(())
    }

    /// Starts or stops compute nodes until `replicas` are not stopping.
    fn scale_compute(
        &self,
        record: &mut ClusterRecord,
        replicas: u32,
    ) -> Result<(), ProviderError> {
        let kind = NodeKind::Compute;
        let fail = |e| self.failed(kind, Action::Scale(replicas), e);
        let launch = self.launch(record).map_err(fail)?;
        let routers = record.router_addresses();
        let schedulers = record.scheduler_addresses();
        loop {
            let active: Vec<usize> = active(&record.caches).collect();
            if count(active.len()) < replicas {
                if schedulers.is_empty() {
                    return Err(self.invalid(
                        kind,
                        replicas,
                        "the local cluster has no scheduler (start it with --compute-nodes 1 or more)",
                    ));
                }
                warn_if_no_venv(launch.settings());
                let n = lowest_free_id(&record.caches, 0);
                let node = start_compute_node(&launch, n, &routers, &schedulers).map_err(fail)?;
                tracing::info!(
                    kind = %kind,
                    id = n,
                    pid = node.cache.pid,
                    executors = ?node.executors.iter().map(|e| e.pid).collect::<Vec<_>>(),
                    ports = ?ports(&node.cache),
                    log = %node.cache.log.display(),
                    "started a cache and {} executor(s)",
                    node.executors.len()
                );
                record.caches.push(node.cache);
                record.executors.extend(node.executors);
                write_record(&self.dir, record).map_err(fail)?;
            } else if let Some(&i) = active.last().filter(|_| count(active.len()) > replicas) {
                self.stop_compute_node(record, i).map_err(fail)?;
            } else {
                return Ok(());
            }
        }
    }

    /// Stops compute node `record.caches[i]`: its executors, then its
    /// cache (SIGTERM; SIGKILL after [`COMPUTE_EXIT`]), and removes them
    /// from the record.
    fn stop_compute_node(&self, record: &mut ClusterRecord, i: usize) -> Result<()> {
        let n = record.caches[i].id;
        record.caches[i].stopping = true;
        for e in record.executors.iter_mut().filter(|e| e.id == n) {
            e.stopping = true;
        }
        write_record(&self.dir, record)?;
        let executors: Vec<u32> = record
            .executors
            .iter()
            .filter(|e| e.id == n)
            .map(|e| e.pid)
            .collect();
        let cache = record.caches[i].pid;
        tracing::info!(
            kind = %NodeKind::Compute,
            id = n,
            pid = cache,
            ?executors,
            "stopping (SIGTERM)"
        );
        for pids in [executors.as_slice(), &[cache]] {
            for &pid in pids {
                signal(pid, libc::SIGTERM);
            }
            if !wait_exit(pids, COMPUTE_EXIT) {
                tracing::warn!(
                    kind = %NodeKind::Compute,
                    id = n,
                    ?pids,
                    "did not exit within {COMPUTE_EXIT:?}; killing"
                );
                for &pid in pids {
                    signal(pid, libc::SIGKILL);
                }
                wait_exit(pids, Duration::from_secs(2));
            }
        }
        record.caches.retain(|c| c.id != n);
        record.executors.retain(|e| e.id != n);
        write_record(&self.dir, record)?;
        tracing::info!(kind = %NodeKind::Compute, id = n, pid = cache, "stopped");
        Ok(())
    }
}

impl Provider for LocalProvider {
    fn scale(&self, kind: NodeKind, replicas: u32) -> Result<Replicas, ProviderError> {
        let fail = |e| self.failed(kind, Action::Scale(replicas), e);
        if kind == NodeKind::Storage && replicas == 0 {
            return Err(self.invalid(
                kind,
                replicas,
                "a local cluster keeps at least one storage node",
            ));
        }
        if kind == NodeKind::Storage && replicas > MAX_STORAGE_NODES {
            return Err(self.invalid(
                kind,
                replicas,
                "at most 15 storage nodes fit the local port layout (20 ports each from base_port + 100; compute nodes from + 400)",
            ));
        }
        // No cluster: say so before the lock creates a state directory.
        read_record(&self.dir).map_err(fail)?;
        let _lock = RecordLock::acquire(&self.dir).map_err(fail)?;
        let mut record = read_record(&self.dir).map_err(fail)?;
        if forget_exited_stopping(&mut record) {
            write_record(&self.dir, &record).map_err(fail)?;
        }
        match kind {
            NodeKind::Storage => self.scale_storage(&mut record, replicas)?,
            NodeKind::Compute => self.scale_compute(&mut record, replicas)?,
            NodeKind::Router | NodeKind::Scheduler => {
                if counts(&record, kind).desired != replicas {
                    return Err(self.invalid(
                        kind,
                        replicas,
                        "the local provider scales storage and compute nodes only",
                    ));
                }
            }
        }
        Ok(counts(&record, kind))
    }

    fn repair(&self) -> Result<Vec<String>, ProviderError> {
        let fail = |e| self.failed(NodeKind::Storage, Action::Read, e);
        // Nothing recorded: nothing to repair (the cluster is down).
        if read_record(&self.dir).is_err() {
            return Ok(Vec::new());
        }
        let _lock = RecordLock::acquire(&self.dir).map_err(fail)?;
        let Ok(mut record) = read_record(&self.dir) else {
            return Ok(Vec::new());
        };
        let launch = self.launch(&record).map_err(fail)?;
        let now_ms = squall_transport::clock::now().as_millis();
        let mut restarted = Vec::new();
        let tiers = [
            ("router", &mut record.routers),
            ("storage node", &mut record.nodes),
            ("scheduler", &mut record.schedulers),
            ("cache", &mut record.caches),
            ("executor", &mut record.executors),
        ];
        for (what, processes) in tiers {
            for p in processes.iter_mut() {
                if p.stopping || alive(p.pid) {
                    continue;
                }
                let died = p.pid;
                match launch.restart(p, now_ms) {
                    Ok(Restart::Started) => {
                        let line = format!(
                            "{what} {} (pid {died}) died: started again as pid {} (restart {}), log {}",
                            p.name,
                            p.pid,
                            p.restarts,
                            p.log.display()
                        );
                        tracing::warn!("{line}");
                        if p.recent_restarts.len() == MAX_RESTARTS {
                            tracing::warn!(
                                what,
                                name = %p.name,
                                "started again {MAX_RESTARTS} times within {} s: the next start waits until the oldest is that old",
                                RESTART_WINDOW.as_secs()
                            );
                        }
                        restarted.push(line);
                    }
                    Ok(Restart::Unknown | Restart::TooOften) => {}
                    Err(e) => {
                        tracing::warn!(what, pid = died, error = %e, "starting a dead process again failed")
                    }
                }
            }
        }
        if !restarted.is_empty() {
            write_record(&self.dir, &record).map_err(fail)?;
        }
        Ok(restarted)
    }

    fn replicas(&self, kind: NodeKind) -> Result<Replicas, ProviderError> {
        let record = read_record(&self.dir).map_err(|e| self.failed(kind, Action::Read, e))?;
        Ok(counts(&record, kind))
    }
}

/// Indices of the processes not asked to stop.
fn active(list: &[ProcessRecord]) -> impl Iterator<Item = usize> + '_ {
    list.iter()
        .enumerate()
        .filter(|(_, p)| !p.stopping)
        .map(|(i, _)| i)
}

/// The lowest id from `first` up that no recorded process has (one still
/// stopping included: its ports are still taken).
fn lowest_free_id(list: &[ProcessRecord], first: u64) -> u64 {
    (first..)
        .find(|id| list.iter().all(|p| p.id != *id))
        .unwrap_or(first)
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn ports(p: &ProcessRecord) -> Vec<&str> {
    p.addresses
        .iter()
        .map(|a| a.rsplit(':').next().unwrap_or(a))
        .collect()
}

/// Drops the processes a scale asked to stop and that are gone (one that
/// was interrupted). True if the record changed.
fn forget_exited_stopping(record: &mut ClusterRecord) -> bool {
    let before = record.nodes.len() + record.caches.len() + record.executors.len();
    for list in [&mut record.nodes, &mut record.caches, &mut record.executors] {
        list.retain(|p| !p.stopping || alive(p.pid));
    }
    before != record.nodes.len() + record.caches.len() + record.executors.len()
}

/// The desired and observed counts of `kind` in `record`.
fn counts(record: &ClusterRecord, kind: NodeKind) -> Replicas {
    let plain = |list: &[ProcessRecord]| Replicas {
        desired: count(active(list).count()),
        observed: count(list.iter().filter(|p| alive(p.pid)).count()),
    };
    match kind {
        NodeKind::Storage => plain(&record.nodes),
        NodeKind::Router => plain(&record.routers),
        NodeKind::Scheduler => plain(&record.schedulers),
        NodeKind::Compute => Replicas {
            desired: count(active(&record.caches).count()),
            observed: count(
                record
                    .caches
                    .iter()
                    .filter(|c| {
                        alive(c.pid)
                            && record
                                .executors
                                .iter()
                                .filter(|e| e.id == c.id)
                                .all(|e| alive(e.pid))
                    })
                    .count(),
            ),
        },
    }
}

/// The kinds of node `squall scale` names.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    Storage,
    Compute,
    Router,
    Scheduler,
}

impl From<Kind> for NodeKind {
    fn from(k: Kind) -> NodeKind {
        match k {
            Kind::Storage => NodeKind::Storage,
            Kind::Compute => NodeKind::Compute,
            Kind::Router => NodeKind::Router,
            Kind::Scheduler => NodeKind::Scheduler,
        }
    }
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// What to scale (the local cluster scales storage and compute nodes).
    #[arg(value_enum)]
    kind: Kind,
    /// How many nodes of that kind to run.
    replicas: u32,
    /// How long to wait for the change to be visible, in seconds.
    #[arg(long, default_value_t = 30)]
    wait: u64,
}

/// `squall scale KIND N`: scales through the [`LocalProvider`], then waits
/// until the routers (storage) or the schedulers (compute) see the change.
pub fn run_scale(args: &ScaleArgs, config: &SquallConfig) -> Result<()> {
    let dir = &config.cluster.state_dir;
    let provider = LocalProvider::new(config, None, "info".to_string())?;
    let kind = NodeKind::from(args.kind);
    let n = args.replicas;
    provider.scale(kind, n)?;
    let limit = Duration::from_secs(args.wait);
    let seen = match kind {
        NodeKind::Storage => {
            wait_visible(dir, kind, n, limit, |record| {
                record.router_addresses().iter().all(|r| {
                    query_status(r, Duration::from_millis(500))
                        .is_ok_and(|state| count(state.live_nodes().count()) == n)
                })
            })
            .context(format!("waiting for the routers to list {n} node(s) up"))?;
            format!("every router lists {n} up")
        }
        NodeKind::Compute => {
            let executors = wait_visible(dir, kind, n, limit, |record| {
                let want = active(&record.executors).count();
                record.scheduler_addresses().iter().all(|s| {
                    query_compute(s, Duration::from_millis(500))
                        .is_ok_and(|status| status.executors.len() == want)
                })
            })
            .context("waiting for the schedulers to see every executor")
            .map(|record| active(&record.executors).count())?;
            format!("every scheduler sees {executors} executor(s)")
        }
        NodeKind::Router | NodeKind::Scheduler => "unchanged".to_string(),
    };
    let now = provider.replicas(kind)?;
    println!(
        "squall: {} {kind} node(s), {} running; {seen}",
        now.desired, now.observed
    );
    Ok(())
}

/// Polls the record in `dir` every 100 ms until `visible` says the cluster
/// sees it; returns that record. Fails at once if a process of `kind` has
/// exited or the record no longer holds `replicas` (another scale came
/// after this one), and after `limit`.
fn wait_visible(
    dir: &Path,
    kind: NodeKind,
    replicas: u32,
    limit: Duration,
    visible: impl Fn(&ClusterRecord) -> bool,
) -> Result<ClusterRecord> {
    let deadline = Instant::now() + limit;
    loop {
        let record = read_record(dir)?;
        let desired = counts(&record, kind).desired;
        if desired != replicas {
            bail!(
                "the cluster was scaled to {desired} {kind} node(s) meanwhile \
                 (by another `squall scale`, or the monitor)"
            );
        }
        let processes = match kind {
            NodeKind::Storage => record.nodes.iter().chain(&[]),
            _ => record.caches.iter().chain(&record.executors),
        };
        if let Some(p) = processes.filter(|p| !p.stopping).find(|p| !alive(p.pid)) {
            bail!(
                "{kind} node {}: process {} is not running; see {}",
                p.id,
                p.pid,
                p.log.display()
            );
        }
        if visible(&record) {
            return Ok(record);
        }
        if Instant::now() > deadline {
            bail!("not visible within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::{compute_port, storage_port};

    fn proc(id: u64, stopping: bool) -> ProcessRecord {
        ProcessRecord {
            pid: 0,
            addresses: Vec::new(),
            id,
            log: PathBuf::new(),
            stopping,
            name: String::new(),
            args: Vec::new(),
            restarts: 0,
            recent_restarts: Vec::new(),
        }
    }

    #[test]
    fn a_process_that_keeps_dying_is_started_at_most_five_times_a_minute() {
        let dir = tempfile::tempdir().unwrap();
        let settings = LaunchSettings {
            config: None,
            log_filter: "warn".into(),
            host: "127.0.0.1".into(),
            base_port: 7100,
            threads: 1,
            executors: 1,
            venv: None,
            insecure: true,
            key_file: None,
        };
        let launch = Launch::new(PathBuf::from("/bin/true"), dir.path(), settings, true).unwrap();
        let mut p = ProcessRecord {
            name: "router-0".into(),
            args: vec!["route".into()],
            ..proc(0, false)
        };
        let t0 = 1_000_000_000;
        for k in 0..MAX_RESTARTS as u64 {
            assert_eq!(
                launch.restart(&mut p, t0 + k * 1000).unwrap(),
                Restart::Started
            );
        }
        assert_eq!(p.restarts, 5);
        assert_eq!(
            launch.restart(&mut p, t0 + 10_000).unwrap(),
            Restart::TooOften
        );
        // Once the first start is a window old, one more may go.
        let later = t0 + RESTART_WINDOW.as_millis() as u64;
        assert_eq!(launch.restart(&mut p, later).unwrap(), Restart::Started);
        assert_eq!(launch.restart(&mut p, later).unwrap(), Restart::TooOften);
        // A record that does not say how is left alone.
        let mut old = proc(1, false);
        assert_eq!(launch.restart(&mut old, later).unwrap(), Restart::Unknown);
    }

    #[test]
    fn a_new_node_takes_the_lowest_id_no_recorded_process_has() {
        let list = [proc(1, false), proc(3, false), proc(2, true)];
        assert_eq!(lowest_free_id(&list, 1), 4);
        assert_eq!(lowest_free_id(&list[..2], 1), 2);
        assert_eq!(lowest_free_id(&[], 0), 0);
    }

    #[test]
    fn storage_and_compute_ports_follow_the_documented_layout() {
        assert_eq!(storage_port(7100, 1).unwrap(), 7200);
        assert_eq!(storage_port(7100, 3).unwrap(), 7240);
        assert_eq!(
            storage_port(7100, u64::from(MAX_STORAGE_NODES)).unwrap() + 19,
            compute_port(7100, 0).unwrap() - 1
        );
        assert_eq!(compute_port(7100, 2).unwrap(), 7540);
        assert!(compute_port(65000, 100).is_err());
    }
}
