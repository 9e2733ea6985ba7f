//! `squall up` and `squall down`: a local cluster of real processes on
//! this machine.
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
//! is left behind.
//!
//! This file only wires: the record is `record.rs`, the processes are
//! started by `launch.rs` (the same functions the local provider in
//! `local.rs` uses to add nodes later), stopped by `process.rs`, and
//! waited for and asked about (`squall status`) by `status.rs`.

use crate::config::SquallConfig;
use crate::launch::{
    python_env, start_compute_node, start_gateway, start_monitor, start_routers, start_schedulers,
    start_storage_node, warn_if_no_venv, Launch,
};
use crate::process::{alive, stop_processes};
use crate::record::{
    read_record, state_file, write_record, ClusterRecord, LaunchSettings, RecordLock,
};
use crate::status::{wait_compute_ready, wait_ready};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::Path;
use std::time::Duration;

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
    /// Start no HTTP gateway (it is started with the compute tier).
    #[arg(long)]
    no_gateway: bool,
    /// Start no monitor (statistics, /metrics and autoscaling), whatever
    /// `monitor.enabled` says.
    #[arg(long)]
    no_monitor: bool,
}

/// Stops every process of `record`: SIGINT (stop now, no handoff: the
/// whole cluster is going away), then SIGKILL after `grace`.
fn stop_all(record: &ClusterRecord, grace: Duration) -> usize {
    let pids: Vec<u32> = record.processes().map(|p| p.pid).collect();
    stop_processes(&pids, libc::SIGINT, grace)
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
    let (insecure, key_file) = crate::keys::for_children();
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
        insecure,
        key_file,
    };
    let (threads, executors) = (settings.threads, settings.executors);
    let exe = std::env::current_exe().context("locating the squall binary")?;
    let launch = Launch::new(exe, dir, settings.clone(), false)?;

    let mut record = ClusterRecord {
        launch: Some(settings),
        ..ClusterRecord::default()
    };
    let result = (|| -> Result<()> {
        let router_addrs = start_routers(&launch, routers, &mut record)?;
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
            if !args.no_gateway {
                start_gateway(&launch, &router_addrs, &mut record)?;
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
    for g in &record.gateways {
        println!(
            "  gateway: {}   (POST /functions/NAME, /dags/NAME; GET/PUT /keys/KEY; /openapi.json)",
            g.addresses.first().map_or("", String::as_str)
        );
    }
    println!(
        "  record: {}   logs: {}",
        state_file(dir).display(),
        dir.join("logs").display()
    );
    // The hint works as printed: with the state directory this `up` was
    // given, where it is not the default one.
    let state = if dir == &crate::config::LocalCluster::default().state_dir {
        String::new()
    } else {
        format!(" --state-dir {}", dir.display())
    };
    println!("  try:    squall{state} kv put hello world && squall{state} kv get hello");
    Ok(())
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
