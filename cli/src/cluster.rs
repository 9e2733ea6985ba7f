//! `squall up`, `squall down`, `squall status`: a local cluster of real
//! processes on this machine.
//!
//! `up` starts the routers, storage nodes, schedulers and compute nodes (a
//! cache and its executors each) as child processes of this same binary
//! (`squall route`, `squall kvs`, `squall scheduler`, `squall cache`,
//! `squall executor`), each logging to
//! `STATE_DIR/logs/`, records them in `STATE_DIR/cluster.json`, and returns
//! once the cluster answers a real put and get and the schedulers see every
//! executor. If anything fails on the way
//! it stops what it started. `down` stops every recorded process (SIGINT,
//! then SIGKILL after a grace period) and removes the record, so no process
//! is left behind. `status` asks the routers what they see.

use crate::config::SquallConfig;
use anna::client::{Client, ClientConfig};
use anna::cluster::{ClusterState, MemberStatus};
use anna::protocol::compute::ComputeStatus;
use anna::protocol::{Address, Message, RequestId};
use anna::transport::{Receiver, Sender};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What `squall up` started, as recorded in `cluster.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClusterRecord {
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
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("cluster.json")
}

/// Reads the record of the cluster `squall up` started in `dir`.
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

fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: sending a signal has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Stops every process of `record`: SIGINT (stop now, no handoff: the
/// whole cluster is going away), then SIGKILL after `grace`.
fn stop_all(record: &ClusterRecord, grace: Duration) -> usize {
    let pids: Vec<u32> = record
        .processes()
        .map(|p| p.pid)
        .filter(|&p| alive(p))
        .collect();
    for &pid in &pids {
        signal(pid, libc::SIGINT);
    }
    let started = Instant::now();
    while started.elapsed() < grace && pids.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &pid in pids.iter().filter(|&&p| alive(p)) {
        tracing::warn!(pid, "process ignored SIGINT; killing it");
        signal(pid, libc::SIGKILL);
    }
    pids.len()
}

struct Launch<'a> {
    exe: PathBuf,
    config_path: Option<&'a Path>,
    log_filter: &'a str,
    logs: PathBuf,
}

impl Launch<'_> {
    fn spawn(&self, name: &str, args: &[String]) -> Result<(u32, PathBuf)> {
        let log = self.logs.join(format!("{name}.log"));
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(&self.exe);
        if let Some(c) = self.config_path {
            cmd.arg("--config").arg(c);
        }
        cmd.arg("--log").arg(self.log_filter);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({})", self.exe.display()))?;
        Ok((child.id(), log))
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
    let threads = args.threads.unwrap_or_else(|| c.threads()).max(1);
    let base = args.base_port.unwrap_or(c.base_port);
    let compute_nodes = args.compute_nodes.unwrap_or(c.compute_nodes);
    let executors = args.executors.unwrap_or(c.executors).max(1);
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let launch = Launch {
        exe: std::env::current_exe().context("locating the squall binary")?,
        config_path,
        log_filter,
        logs,
    };

    let router_addr = |i: u16| format!("tcp://{}:{}", c.host, base + i);
    let mut record = ClusterRecord::default();
    let result = (|| -> Result<()> {
        for i in 0..routers {
            let mut a = vec![
                "route".into(),
                "--host".into(),
                c.host.clone(),
                "--port".into(),
                (base + i).to_string(),
            ];
            for j in (0..routers).filter(|&j| j != i) {
                a.extend(["--peer".into(), router_addr(j)]);
            }
            let (pid, log) = launch.spawn(&format!("router-{i}"), &a)?;
            record.routers.push(ProcessRecord {
                pid,
                addresses: vec![router_addr(i)],
                id: 0,
                log,
            });
        }
        for n in 0..nodes {
            let id = u64::from(n) + 1;
            let port = base + 100 + 20 * n;
            let mut a = vec![
                "kvs".into(),
                "--id".into(),
                id.to_string(),
                "--threads".into(),
                threads.to_string(),
                "--host".into(),
                c.host.clone(),
                "--port".into(),
                port.to_string(),
            ];
            for i in 0..routers {
                a.extend(["--router".into(), router_addr(i)]);
            }
            let (pid, log) = launch.spawn(&format!("node-{id}"), &a)?;
            record.nodes.push(ProcessRecord {
                pid,
                addresses: (0..threads)
                    .map(|t| format!("tcp://{}:{}", c.host, port + t))
                    .collect(),
                id,
                log,
            });
        }
        let compute = Compute {
            schedulers: if compute_nodes > 0 {
                args.schedulers.unwrap_or(c.schedulers).max(1)
            } else {
                0
            },
            nodes: compute_nodes,
            executors,
        };
        start_compute(&launch, c, base, &compute, routers, &mut record, dir)?;
        std::fs::write(state_file(dir), serde_json::to_string_pretty(&record)?)
            .context("writing the cluster record")?;
        let limit = Duration::from_secs(args.wait);
        wait_ready(&record, usize::from(nodes), &config.client, limit)?;
        wait_compute_ready(
            &record,
            usize::from(compute.nodes * compute.executors),
            limit,
        )
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
    println!(
        "  record: {}   logs: {}",
        state_file(dir).display(),
        dir.join("logs").display()
    );
    println!("  try:    squall kv put hello world && squall kv get hello");
    Ok(())
}

/// How much of the compute tier `up` starts.
struct Compute {
    schedulers: u16,
    nodes: u16,
    executors: u16,
}

/// The virtualenv whose site-packages executors import from (cloudpickle,
/// the `squall` package): `$VIRTUAL_ENV`, else `./.venv`, else the `.venv`
/// of the source tree this binary was built from.
fn python_env() -> Option<PathBuf> {
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

/// Starts the schedulers, then each compute node's cache and executors.
fn start_compute(
    launch: &Launch,
    c: &crate::config::LocalCluster,
    base: u16,
    compute: &Compute,
    routers: u16,
    record: &mut ClusterRecord,
    dir: &Path,
) -> Result<()> {
    if compute.nodes == 0 {
        return Ok(());
    }
    let tcp = |port: u16| format!("tcp://{}:{port}", c.host);
    let router_args: Vec<String> = (0..routers)
        .flat_map(|i| ["--router".to_string(), tcp(base + i)])
        .collect();
    for s in 0..compute.schedulers {
        let port = base + 50 + s;
        let mut a = vec![
            "scheduler".into(),
            "--host".into(),
            c.host.clone(),
            "--port".into(),
            port.to_string(),
        ];
        a.extend(router_args.iter().cloned());
        let (pid, log) = launch.spawn(&format!("scheduler-{s}"), &a)?;
        record.schedulers.push(ProcessRecord {
            pid,
            addresses: vec![tcp(port)],
            id: 0,
            log,
        });
    }
    let scheduler_args: Vec<String> = record
        .scheduler_addresses()
        .into_iter()
        .flat_map(|a| ["--scheduler".to_string(), a.0])
        .collect();
    let sockets = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let venv = python_env();
    if venv.is_none() {
        tracing::warn!(
            "no Python virtualenv found ($VIRTUAL_ENV, ./.venv): executors use the \
             interpreter's own site-packages; run `make setup` to create .venv"
        );
    }
    for n in 0..compute.nodes {
        let node = format!("compute-{n}");
        let port = base + 400 + 20 * n;
        let ipc = format!(
            "ipc://{}",
            sockets.join(format!("cache-{n}.sock")).display()
        );
        let mut a = vec![
            "cache".into(),
            "--node".into(),
            node.clone(),
            "--host".into(),
            c.host.clone(),
            "--port".into(),
            port.to_string(),
            "--ipc".into(),
            ipc.clone(),
        ];
        a.extend(router_args.iter().cloned());
        a.extend(scheduler_args.iter().cloned());
        let (pid, log) = launch.spawn(&format!("cache-{n}"), &a)?;
        record.caches.push(ProcessRecord {
            pid,
            addresses: vec![tcp(port), ipc.clone()],
            id: u64::from(n),
            log,
        });
        for e in 0..compute.executors {
            let port = port + 1 + e;
            let mut a = vec![
                "executor".into(),
                "--node".into(),
                node.clone(),
                "--host".into(),
                c.host.clone(),
                "--port".into(),
                port.to_string(),
                "--cache".into(),
                ipc.clone(),
            ];
            a.extend(scheduler_args.iter().cloned());
            if let Some(venv) = &venv {
                a.extend(["--venv".into(), venv.display().to_string()]);
            }
            let (pid, log) = launch.spawn(&format!("executor-{n}-{e}"), &a)?;
            record.executors.push(ProcessRecord {
                pid,
                addresses: vec![tcp(port)],
                id: u64::from(n),
                log,
            });
        }
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
fn ask<T>(
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
            let state = if alive(p.pid) {
                "running"
            } else {
                "NOT RUNNING"
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
    }
    if !answered {
        bail!("no router answered");
    }
    Ok(())
}
