//! `squall kvs` and `squall route`: one storage node, one router, each a
//! process whose threads are role state machines behind ZeroMQ drivers.
//!
//! Both run until SIGTERM or SIGINT. A router then stops. A storage node
//! given SIGTERM first departs gracefully (see [`leave`]): its keys go to
//! their next owners, then it stops; given SIGINT it stops at once (what
//! `squall down` sends, as the whole cluster is going away).

use crate::config::SquallConfig;
use anna::kvs::StorageWorker;
use anna::protocol::{Address, Membership, Message, NodeId, NodeInfo};
use anna::role::{Driver, Role};
use anna::router::Router;
use anna::transport::{Receiver, Sender, Shutdown, TransportError, ZmqDriver};
use anyhow::{Context, Result};
use clap::Args;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::collections::BTreeMap;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

/// A graceful departure: every thread hands its keys to the owners they
/// will have without this node (`Leave` / `Left`), then the routers are told
/// the node departs, and it keeps answering ("not mine") for a moment so
/// clients re-route. A second signal, or `leave_timeout`, cuts it short.
fn leave(
    ctx: &zmq::Context,
    node: &NodeInfo,
    routers: &[Address],
    config: &SquallConfig,
    signals: &mut Signals,
) -> Result<()> {
    let mut rx = Receiver::bind(
        ctx,
        &Address(format!("inproc://squall-leave-{}", node.id.0)),
    )?;
    let mut tx = Sender::new(ctx);
    let started = Instant::now();
    let mut left: BTreeMap<u32, u64> = BTreeMap::new();
    let mut asked = None::<Instant>;
    while left.len() < node.threads.len() {
        if signals.pending().next().is_some() {
            tracing::warn!("second signal: stopping without finishing the handoff");
            return Ok(());
        }
        if started.elapsed() > config.storage.leave_timeout {
            tracing::warn!(handed_over = left.len(), "leave timeout: departing anyway");
            break;
        }
        if asked.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
            for (t, addr) in node.threads.iter().enumerate() {
                if !left.contains_key(&(t as u32)) {
                    let msg = Message::Membership(Membership::Leave {
                        node: node.id,
                        reply_to: rx.address().clone(),
                    });
                    tx.send(addr, &msg)?;
                }
            }
            asked = Some(Instant::now());
        }
        if let Some(Message::Membership(Membership::Left {
            thread,
            incarnation,
            ..
        })) = rx.recv(Some(Duration::from_millis(100)))?
        {
            left.insert(thread, incarnation);
        }
    }
    tracing::info!(
        ms = started.elapsed().as_millis() as u64,
        "keys handed over"
    );
    if let Some(&incarnation) = left.values().find(|&&i| i > 0) {
        for r in routers {
            let msg = Message::Membership(Membership::Depart {
                node: node.id,
                incarnation,
            });
            tx.send(r, &msg)?;
        }
        // Answer "not mine" while the departure reaches everyone.
        std::thread::sleep(
            config
                .router_config()
                .broadcast_period
                .min(Duration::from_secs(2)),
        );
    }
    Ok(())
}

pub fn run_kvs(args: &KvsArgs, config: &SquallConfig) -> Result<()> {
    let threads = args.threads.unwrap_or_else(|| config.cluster.threads());
    let node = NodeInfo {
        id: NodeId(args.id),
        threads: (0..threads)
            .map(|t| Address(format!("tcp://{}:{}", args.host, args.port + t)))
            .collect(),
        boot: anna::time::fresh_id("boot"),
    };
    let routers: Vec<Address> = args.routers.iter().map(|r| Address(r.clone())).collect();
    let ctx = zmq::Context::new();
    // One ZeroMQ I/O thread per worker: a single one carries every frame
    // of every worker and becomes the bottleneck.
    ctx.set_io_threads(i32::from(threads.max(1)))
        .context("setting ZeroMQ I/O threads")?;
    let mut drivers = Vec::new();
    for t in 0..threads {
        let worker = StorageWorker::new(
            config.storage.clone(),
            node.clone(),
            u32::from(t),
            routers.clone(),
        );
        let address = node.threads[usize::from(t)].clone();
        drivers.push(spawn_driver(
            &ctx,
            &address,
            worker,
            format!("kvs-{}-{t}", args.id),
        )?);
    }
    tracing::info!(
        node = args.id,
        threads,
        first = %node.threads[0],
        "storage node serving"
    );
    let mut signals = signals()?;
    if wait_for_signal(&mut signals, "storage node") == SIGTERM {
        leave(&ctx, &node, &routers, config, &mut signals)?;
    }
    stop_drivers("storage node", drivers)
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
