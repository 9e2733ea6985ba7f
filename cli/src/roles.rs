//! `squall kvs` and `squall route`: one storage node, one router, each a
//! process whose threads are role state machines behind ZeroMQ drivers.
//!
//! Both run until SIGTERM or SIGINT. A router then stops. A storage node
//! given SIGTERM first departs gracefully (see [`leave`]): its keys go to
//! their next owners, then it stops; given SIGINT it stops at once (what
//! `squall down` sends, as the whole cluster is going away).

use crate::config::SquallConfig;
use anna::kvs::departure::{Departure, DepartureConfig};
use anna::kvs::StorageWorker;
use anna::protocol::{Address, NodeId, NodeInfo};
use anna::role::{Driver, Role};
use anna::router::Router;
use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use squall_transport::direct::DirectServer;
use squall_transport::{Shutdown, TransportError, ZmqDriver};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, PartialEq, Args, Serialize)]
pub struct KvsArgs {
    /// This node's id, stable across restarts.
    #[arg(long)]
    pub(crate) id: u64,
    /// Worker threads (default: `cluster.threads` of the config, 0 = cores).
    #[arg(long)]
    pub(crate) threads: Option<u16>,
    /// Host to bind and be reached at.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) host: String,
    /// Port of thread 0; thread t listens at PORT + t.
    #[arg(long)]
    pub(crate) port: u16,
    /// A router to join through (repeat for several).
    #[arg(long = "router", required = true)]
    pub(crate) routers: Vec<String>,
    /// Keep the node's keys on disk in this directory (created if
    /// missing), and load what it holds before serving: a node restarted
    /// with the same id and directory keeps its keys. Without it, keys
    /// live in memory only. `squall up` gives each node one under its
    /// state directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Port of thread 0's direct endpoint, where clients' requests come
    /// straight over TCP and are answered on their connection; thread t at
    /// PORT + t (default: free ports, announced with the node).
    #[arg(long, value_name = "PORT", conflicts_with = "no_direct")]
    pub(crate) direct_port: Option<u16>,
    /// Serve no direct endpoint: clients reach the threads over ZeroMQ
    /// only.
    #[arg(long)]
    pub(crate) no_direct: bool,
}

impl KvsArgs {
    /// The `squall kvs ...` arguments that parse to these (see
    /// [`crate::argv`]).
    pub(crate) fn to_args(&self) -> Result<Vec<String>> {
        crate::argv::render("kvs", self)
    }
}

#[derive(Debug, PartialEq, Args, Serialize)]
pub struct RouteArgs {
    /// Host to bind and be reached at.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) host: String,
    /// Port to listen at.
    #[arg(long)]
    pub(crate) port: u16,
    /// Another router to share the cluster state with (repeat).
    #[arg(long = "peer")]
    pub(crate) peers: Vec<String>,
}

impl RouteArgs {
    /// The `squall route ...` arguments that parse to these (see
    /// [`crate::argv`]).
    pub(crate) fn to_args(&self) -> Result<Vec<String>> {
        crate::argv::render("route", self)
    }
}

pub(crate) fn spawn_driver<R: Role + Send + 'static>(
    ctx: &zmq::Context,
    address: &Address,
    role: R,
    name: String,
) -> Result<(Shutdown, JoinHandle<Result<(), TransportError>>)> {
    spawn_driver_also(ctx, address, &[], role, &name)
}

/// Like [`spawn_driver`], the role also receiving at each of `also`.
pub(crate) fn spawn_driver_also<R: Role + Send + 'static>(
    ctx: &zmq::Context,
    address: &Address,
    also: &[Address],
    role: R,
    name: &str,
) -> Result<(Shutdown, JoinHandle<Result<(), TransportError>>)> {
    let name = name.to_string();
    let mut driver =
        ZmqDriver::bind(ctx, address, role).with_context(|| format!("starting {name}"))?;
    for a in also {
        driver
            .bind_also(a)
            .with_context(|| format!("{name}: binding {a}"))?;
    }
    spawn(driver, name)
}

/// Runs `driver` on a thread of its own, named `name`.
fn spawn<R: Role + Send + 'static>(
    mut driver: ZmqDriver<R>,
    name: String,
) -> Result<(Shutdown, JoinHandle<Result<(), TransportError>>)> {
    let stop = driver.shutdown_handle();
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || driver.run())
        .context("spawning a thread")?;
    Ok((stop, thread))
}

pub(crate) type Drivers = Vec<(Shutdown, JoinHandle<Result<(), TransportError>>)>;

pub(crate) fn signals() -> Result<Signals> {
    Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")
}

/// Blocks until SIGTERM or SIGINT; returns which.
pub(crate) fn wait_for_signal(signals: &mut Signals, what: &str) -> i32 {
    let sig = signals.forever().next().unwrap_or(SIGINT);
    tracing::info!(signal = sig, "{what} stopping");
    sig
}

/// Stops every driver and joins its thread.
pub(crate) fn stop_drivers(what: &str, drivers: Drivers) -> Result<()> {
    for (stop, _) in &drivers {
        stop.stop()?;
    }
    for (_, thread) in drivers {
        match thread.join() {
            Ok(r) => r?,
            Err(_) => anyhow::bail!("a {what} thread panicked"),
        }
    }
    tracing::info!("{what} stopped");
    Ok(())
}

/// A graceful departure: the [`Departure`] role (every thread hands its
/// keys to the owners they will have without this node, then the routers
/// are told the node departs, and it lingers while they answer "not mine"),
/// driven at an inproc address of this process until it finishes. A second
/// signal cuts it short; `leave_timeout` ends the handoff (the role's own).
fn leave(
    ctx: &zmq::Context,
    node: &NodeInfo,
    routers: &[Address],
    config: &SquallConfig,
    signals: &mut Signals,
) -> Result<()> {
    let me = Address(format!("inproc://squall-leave-{}", node.id.0));
    let departure_config = DepartureConfig {
        leave_timeout: config.storage.leave_timeout,
        linger: config
            .router_config()
            .broadcast_period
            .min(Duration::from_secs(2)),
        ..DepartureConfig::default()
    };
    let departure = Departure::new(node.clone(), routers.to_vec(), me.clone(), departure_config);
    let mut driver = ZmqDriver::bind(ctx, &me, departure).context("starting the departure")?;
    while !driver.role().finished() {
        if signals.pending().next().is_some() {
            tracing::warn!("second signal: stopping without finishing the handoff");
            return Ok(());
        }
        // Wake at least every 100 ms to notice a second signal.
        driver.step(Duration::from_millis(100))?;
    }
    tracing::info!(outcome = ?driver.role().outcome(), "departed");
    Ok(())
}

pub fn run_kvs(args: &KvsArgs, config: &SquallConfig) -> Result<()> {
    let threads = args.threads.unwrap_or_else(|| config.cluster.threads());
    let mut direct = Vec::new();
    if !args.no_direct {
        for t in 0..threads {
            let port = args
                .direct_port
                .map_or("*".to_string(), |p| (p + t).to_string());
            let at = Address(format!("tcp://{}:{port}", args.host));
            let server = DirectServer::bind(&at)
                .with_context(|| format!("binding thread {t}'s direct endpoint {at}"))?;
            direct.push(server);
        }
    }
    let node = NodeInfo {
        id: NodeId(args.id),
        threads: (0..threads)
            .map(|t| Address(format!("tcp://{}:{}", args.host, args.port + t)))
            .collect(),
        boot: squall_transport::clock::fresh_id("boot"),
        direct: direct.iter().map(|d| d.address().clone()).collect(),
    };
    let routers: Vec<Address> = args.routers.iter().map(|r| Address(r.clone())).collect();
    let ctx = zmq::Context::new();
    // One ZeroMQ I/O thread per worker: a single one carries every frame
    // of every worker and becomes the bottleneck.
    ctx.set_io_threads(i32::from(threads.max(1)))
        .context("setting ZeroMQ I/O threads")?;
    let disk = match &args.data_dir {
        Some(dir) => Some(squall_disk::Disk::open(dir)?),
        None => None,
    };
    let mut drivers = Vec::new();
    for t in 0..threads {
        let mut worker = StorageWorker::new(
            config.storage.clone(),
            node.clone(),
            u32::from(t),
            routers.clone(),
        );
        if let Some(disk) = &disk {
            worker = load_keys(worker, disk, u32::from(t), u32::from(threads))?;
        }
        let name = format!("kvs-{}-{t}", args.id);
        worker = share_values(worker, &config.storage.shared_dir, &name);
        let address = node.threads[usize::from(t)].clone();
        let mut driver =
            ZmqDriver::bind(&ctx, &address, worker).with_context(|| format!("starting {name}"))?;
        if !direct.is_empty() {
            driver.serve_direct(direct.remove(0));
        }
        drivers.push(spawn(driver, name)?);
    }
    tracing::info!(
        node = args.id,
        threads,
        first = %node.threads[0],
        direct = %node.direct.first().map_or("none", |a| a.as_str()),
        "storage node serving"
    );
    let mut signals = signals()?;
    if wait_for_signal(&mut signals, "storage node") == SIGTERM {
        leave(&ctx, &node, &routers, config, &mut signals)?;
    }
    stop_drivers("storage node", drivers)
}

/// `worker` answering readers on this machine's large values in files of
/// `dir` (a `tmpfs`; `[storage] shared_dir`), one directory per thread
/// (`name`), if it can make one; unchanged if `dir` is empty or cannot be
/// used (every value then goes in the frame).
fn share_values(worker: StorageWorker, dir: &str, name: &str) -> StorageWorker {
    if dir.is_empty() {
        return worker;
    }
    let Some(identity) = squall_transport::shared::identity(Path::new(dir)) else {
        tracing::warn!(%dir, "storage: cannot name the shared memory; every value goes in the frame");
        return worker;
    };
    match crate::shared_memory::SharedDir::create(Path::new(dir), name) {
        Ok(files) => {
            tracing::info!(dir = %files.path().display(), "storage: large values go to readers on this machine in shared memory");
            worker.with_shared_memory(Box::new(files), identity)
        }
        Err(error) => {
            tracing::warn!(%dir, %error, "storage: no directory for values in shared memory; every value goes in the frame");
            worker
        }
    }
}

/// `worker` keeping its keys in `disk`, with the keys it holds there
/// loaded (before it serves).
fn load_keys(
    worker: StorageWorker,
    disk: &squall_disk::Disk,
    thread: u32,
    threads: u32,
) -> Result<StorageWorker> {
    let started = Instant::now();
    let store = disk.thread_store(thread, threads)?;
    let (worker, skipped) = worker
        .with_store(Box::new(store))
        .with_context(|| format!("loading the keys kept in {}", disk.dir().display()))?;
    let shard = worker.shard();
    let bytes: usize = (shard.iter())
        .map(|(k, s)| k.len() + s.approx_bytes())
        .sum();
    tracing::info!(
        thread,
        keys = shard.len(),
        bytes,
        skipped,
        ms = started.elapsed().as_millis() as u64,
        dir = %disk.dir().display(),
        "loaded the keys kept on disk"
    );
    Ok(worker)
}

pub fn run_router(args: &RouteArgs, config: &SquallConfig) -> Result<()> {
    let me = Address(format!("tcp://{}:{}", args.host, args.port));
    let peers = args.peers.iter().map(|p| Address(p.clone())).collect();
    let ctx = zmq::Context::new();
    let router = Router::new(config.router_config(), me.clone(), peers);
    let driver = spawn_driver(&ctx, &me, router, "router".to_string())?;
    tracing::info!(address = %me, "router serving");
    let mut signals = signals()?;
    wait_for_signal(&mut signals, "router");
    stop_drivers("router", vec![driver])
}
