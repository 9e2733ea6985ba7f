//! `squall kvs` and `squall route`: one storage node, one router, each a
//! process whose threads are role state machines behind ZeroMQ drivers.
//!
//! Both run until SIGTERM or SIGINT, then stop their drivers and exit 0.

use crate::config::SquallConfig;
use anna::kvs::StorageWorker;
use anna::protocol::{Address, NodeId, NodeInfo};
use anna::role::{Driver, Role};
use anna::router::Router;
use anna::transport::{Shutdown, TransportError, ZmqDriver};
use anyhow::{Context, Result};
use clap::Args;
use std::thread::JoinHandle;

#[derive(Debug, Args)]
pub struct KvsArgs {
    /// This node's id, stable across restarts.
    #[arg(long)]
    id: u64,
    /// Worker threads (default: `cluster.threads` of the config, 0 = cores).
    #[arg(long)]
    threads: Option<u16>,
    /// Host to bind and be reached at.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port of thread 0; thread t listens at PORT + t.
    #[arg(long)]
    port: u16,
    /// A router to join through (repeat for several).
    #[arg(long = "router", required = true)]
    routers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RouteArgs {
    /// Host to bind and be reached at.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen at.
    #[arg(long)]
    port: u16,
    /// Another router to share the cluster state with (repeat).
    #[arg(long = "peer")]
    peers: Vec<String>,
}

/// A fresh number per process start, telling restarts apart.
fn boot_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    anna::ring::stable_hash(format!("{}/{nanos}", std::process::id()).as_bytes())
}

fn spawn_driver<R: Role + Send + 'static>(
    ctx: &zmq::Context,
    address: &Address,
    role: R,
    name: String,
) -> Result<(Shutdown, JoinHandle<Result<(), TransportError>>)> {
    let mut driver =
        ZmqDriver::bind(ctx, address, role).with_context(|| format!("starting {name}"))?;
    let stop = driver.shutdown_handle();
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || driver.run())
        .context("spawning a thread")?;
    Ok((stop, thread))
}

/// Blocks until SIGTERM or SIGINT, then stops every driver and joins it.
fn serve_until_signalled(
    what: &str,
    drivers: Vec<(Shutdown, JoinHandle<Result<(), TransportError>>)>,
) -> Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("installing signal handlers")?;
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "{what} stopping");
    }
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

pub fn run_kvs(args: &KvsArgs, config: &SquallConfig) -> Result<()> {
    let threads = args.threads.unwrap_or_else(|| config.cluster.threads());
    let node = NodeInfo {
        id: NodeId(args.id),
        threads: (0..threads)
            .map(|t| Address(format!("tcp://{}:{}", args.host, args.port + t)))
            .collect(),
        boot: boot_id(),
    };
    let routers: Vec<Address> = args.routers.iter().map(|r| Address(r.clone())).collect();
    let ctx = zmq::Context::new();
    let mut drivers = Vec::new();
    for t in 0..threads {
        let worker = StorageWorker::new(
            config.storage.clone(),
            node.clone(),
            u32::from(t),
            routers.clone(),
        );
        let address = node.threads[usize::from(t)].clone();
        drivers.push(spawn_driver(&ctx, &address, worker, format!("kvs-{}-{t}", args.id))?);
    }
    tracing::info!(
        node = args.id,
        threads,
        first = %node.threads[0],
        "storage node serving"
    );
    serve_until_signalled("storage node", drivers)
}

pub fn run_router(args: &RouteArgs, config: &SquallConfig) -> Result<()> {
    let me = Address(format!("tcp://{}:{}", args.host, args.port));
    let peers = args.peers.iter().map(|p| Address(p.clone())).collect();
    let ctx = zmq::Context::new();
    let router = Router::new(config.router_config(), me.clone(), peers);
    let driver = spawn_driver(&ctx, &me, router, "router".to_string())?;
    tracing::info!(address = %me, "router serving");
    serve_until_signalled("router", vec![driver])
}
