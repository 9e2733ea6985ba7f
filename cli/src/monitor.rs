//! `squall monitor`: gathers the statistics of both tiers, runs the
//! autoscaling policies and carries out their decisions.
//!
//! Three threads: the [`Monitor`] role under a ZeroMQ driver (statistics,
//! policies, `Prewarm`s, `MonitorStatusRequest`s); the actuator, which
//! carries out the role's other decisions one at a time — scaling through a
//! provider (the local processes of `squall up`, Kubernetes, or none:
//! decide and log only) and writing or deleting replication overrides with
//! a KVS client — so a storage node taking 20 s to hand its keys over never
//! stalls the statistics; and, unless `--metrics off`, a small HTTP server
//! answering `GET /metrics` with the Prometheus text the role renders every
//! period.

use crate::config::SquallConfig;
use crate::roles::{signals, spawn_driver, stop_drivers, wait_for_signal};
use anna::client::Client;
use anna::cluster::replication_key;
use anna::protocol::monitor::MonitorStatus;
use anna::protocol::{Address, Message};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use squall_monitor::policy::Action;
use squall_monitor::{KubernetesProvider, Monitor, NodeKind, Provider};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// Where the monitor's scaling decisions go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProviderKind {
    /// The processes of the local cluster `squall up` started (its record in
    /// the state directory).
    Local,
    /// The workloads of deploy/k8s, through the Kubernetes API
    /// (`[monitor.kubernetes]`; kubeconfig or the pod's service account).
    Kubernetes,
    /// None: decide and log, change nothing.
    None,
}

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Host to bind and be reached at.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen at (for `squall status`).
    #[arg(long)]
    port: u16,
    /// Serve Prometheus metrics at this address (`HOST:PORT`), or `off`.
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics: String,
    /// A router to ask for the cluster state (repeat).
    #[arg(long = "router", required = true)]
    routers: Vec<String>,
    /// A scheduler to ask for the compute tier's status (repeat).
    #[arg(long = "scheduler")]
    schedulers: Vec<String>,
    /// Where scaling decisions go.
    #[arg(long, value_enum, default_value = "local")]
    provider: ProviderKind,
    /// Never fewer storage nodes than this (raises `monitor.storage.min_nodes`;
    /// `up` passes the count it started).
    #[arg(long)]
    min_storage_nodes: Option<u32>,
    /// Never fewer compute nodes than this (raises
    /// `monitor.compute.min_nodes`; `up` passes the count it started).
    #[arg(long)]
    min_compute_nodes: Option<u32>,
}

/// The `[monitor]` settings with the floors given on the command line.
fn with_floors(args: &MonitorArgs, config: &SquallConfig) -> squall_monitor::MonitorConfig {
    let mut m = config.monitor.clone();
    for (tier, floor) in [
        (&mut m.storage, args.min_storage_nodes),
        (&mut m.compute, args.min_compute_nodes),
    ] {
        if let Some(floor) = floor {
            tier.min_nodes = tier.min_nodes.max(floor);
            tier.max_nodes = tier.max_nodes.max(tier.min_nodes);
        }
    }
    m
}

type BoxedProvider = Box<dyn Provider + Send>;

fn provider(
    kind: ProviderKind,
    config: &SquallConfig,
    config_path: Option<&Path>,
    log_filter: &str,
) -> Result<Option<BoxedProvider>> {
    Ok(match kind {
        ProviderKind::Local => Some(Box::new(crate::local::LocalProvider::new(
            config,
            config_path.map(Path::to_path_buf),
            log_filter.to_string(),
        )?)),
        ProviderKind::Kubernetes => Some(Box::new(
            KubernetesProvider::connect(config.monitor.kubernetes.clone())
                .context("connecting to the Kubernetes API")?,
        )),
        ProviderKind::None => None,
    })
}

pub fn run_monitor(
    args: &MonitorArgs,
    config: &SquallConfig,
    config_path: Option<&Path>,
    log_filter: &str,
) -> Result<()> {
    let routers: Vec<Address> = args.routers.iter().map(|r| Address(r.clone())).collect();
    let schedulers: Vec<Address> = args.schedulers.iter().map(|s| Address(s.clone())).collect();
    let provider = provider(args.provider, config, config_path, log_filter)?;
    let metrics = Arc::new(Mutex::new(String::new()));
    if args.metrics != "off" {
        serve_metrics(&args.metrics, metrics.clone())?;
    }
    let (actions, decided) = mpsc::channel();
    let client_config = config.client.clone();
    let actuator_routers = routers.clone();
    std::thread::Builder::new()
        .name("actuator".into())
        .spawn(move || actuate(decided, provider, actuator_routers, client_config))
        .context("spawning the actuator")?;

    let ctx = zmq::Context::new();
    let me = Address(format!("tcp://{}:{}", args.host, args.port));
    let role = Monitor::new(
        with_floors(args, config),
        me.clone(),
        routers,
        schedulers,
        actions,
        metrics,
    );
    let mut signals = signals()?;
    let driver = spawn_driver(&ctx, &me, role, "monitor".into())?;
    tracing::info!(
        address = %me,
        metrics = %args.metrics,
        provider = ?args.provider,
        period_ms = config.monitor.period.as_millis() as u64,
        "monitor up"
    );
    wait_for_signal(&mut signals, "monitor");
    stop_drivers("monitor", vec![driver])
}

/// How often the actuator asks the provider for its counts when no
/// decision comes (the local provider also reaps the processes it started).
const PROVIDER_POLL: Duration = Duration::from_secs(5);

/// How often the actuator has the provider start again what died: a
/// crashed process is back within about this long plus its start.
const REPAIR_POLL: Duration = Duration::from_millis(500);

/// Carries out decisions one at a time until the role is gone.
fn actuate(
    decided: mpsc::Receiver<Action>,
    provider: Option<BoxedProvider>,
    routers: Vec<Address>,
    client_config: anna::client::ClientConfig,
) {
    let mut client: Option<Client> = None;
    let mut next_poll = std::time::Instant::now() + PROVIDER_POLL;
    loop {
        let action = match decided.recv_timeout(REPAIR_POLL) {
            Ok(a) => a,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let Some(p) = &provider else { continue };
                if let Err(error) = p.repair() {
                    tracing::warn!(%error, "repairing the cluster failed");
                }
                if std::time::Instant::now() >= next_poll {
                    next_poll = std::time::Instant::now() + PROVIDER_POLL;
                    for kind in [NodeKind::Storage, NodeKind::Compute] {
                        if let Err(error) = p.replicas(kind) {
                            tracing::debug!(%kind, %error, "reading the provider's counts failed");
                        }
                    }
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        match action {
            Action::Scale { kind, replicas } => match &provider {
                None => tracing::info!(%kind, replicas, "no provider: not scaling"),
                Some(p) => match p.scale(kind, replicas) {
                    Ok(r) => tracing::info!(
                        %kind,
                        desired = r.desired,
                        observed = r.observed,
                        "scaled"
                    ),
                    Err(error) => tracing::warn!(%kind, replicas, %error, "scaling failed"),
                },
            },
            Action::Prewarm { .. } => {} // sent by the role itself
            other => {
                if client.is_none() {
                    match Client::connect(routers.clone(), client_config.clone()) {
                        Ok(c) => client = Some(c),
                        Err(error) => {
                            tracing::warn!(%error, "monitor: no KVS client; decision dropped");
                            continue;
                        }
                    }
                }
                let Some(c) = client.as_mut() else { continue };
                let result = match &other {
                    Action::SetReplication { key, factor } => c.set_replication(key, *factor),
                    Action::ResetReplication { key } => c.delete(&replication_key(key)),
                    _ => Ok(()),
                };
                match result {
                    Ok(()) => tracing::info!(?other, "replication changed"),
                    Err(error) => tracing::warn!(?other, %error, "changing replication failed"),
                }
            }
        }
    }
}

/// Serves `GET /metrics` at `address` from a thread of its own.
fn serve_metrics(address: &str, page: Arc<Mutex<String>>) -> Result<()> {
    let listener = TcpListener::bind(address)
        .with_context(|| format!("binding the metrics endpoint at {address}"))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(error) = answer(stream, &page) {
                    tracing::debug!(%error, "metrics request failed");
                }
            }
        })
        .context("spawning the metrics server")?;
    Ok(())
}

fn answer(mut stream: TcpStream, page: &Mutex<String>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, kind, body) =
        if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
            let body = page.lock().map(|p| p.clone()).unwrap_or_default();
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
        } else {
            (
                "404 Not Found",
                "text/plain; charset=utf-8",
                "squall monitor: metrics are at GET /metrics\n".to_string(),
            )
        };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// Asks a monitor what it sees and has decided.
pub fn query_monitor(to: &Address, timeout: Duration) -> Result<MonitorStatus> {
    crate::cluster::ask(
        to,
        timeout,
        |id, reply_to| Message::MonitorStatusRequest { id, reply_to },
        |msg| match msg {
            Message::MonitorStatusReply { id, status } => Some((id, *status)),
            _ => None,
        },
    )
}

/// Prints a monitor's view for `squall status`.
pub fn print_status(to: &Address) {
    let status = match query_monitor(to, Duration::from_secs(2)) {
        Ok(s) => s,
        Err(e) => {
            println!("monitor {to}: {e:#}");
            return;
        }
    };
    let tiers: Vec<String> = status
        .replicas
        .iter()
        .map(|(kind, desired, observed)| {
            if desired == observed {
                format!("{observed} {kind} node(s)")
            } else {
                format!("{observed} {kind} node(s) (asked for {desired})")
            }
        })
        .collect();
    println!("monitor {to}: {}", tiers.join(", "));
    for r in &status.storage {
        let hottest = r
            .hot_keys
            .first()
            .map(|(k, n)| format!("  hottest {k:?} ({n})"))
            .unwrap_or_default();
        let secs = f64::from(r.epoch_ms.max(1)) / 1000.0;
        println!(
            "  node {:<3} thread {:<2} busy {:>5.1}%  keys {:<8} bytes {:<10} {:>8.0} accesses/s{hottest}",
            r.node.0,
            r.thread,
            f64::from(r.busy_permille) / 10.0,
            r.keys,
            r.bytes,
            r.accesses as f64 / secs,
        );
    }
    for c in &status.compute.caches {
        let reads = (c.hits + c.misses).max(1) as f64;
        println!(
            "  cache {:<10} hit rate {:>5.1}% ({} hits, {} misses)",
            c.node,
            100.0 * c.hits as f64 / reads,
            c.hits,
            c.misses
        );
    }
    for (key, global, local) in &status.raised {
        println!("  hot key {key:?}: replication raised to {global}/{local} (global/local)");
    }
    if status.events.is_empty() {
        println!("  no decisions yet");
    } else {
        println!("  recent decisions:");
        for e in status.events.iter().rev().take(10) {
            println!(
                "    {} {} {}: {}",
                clock(e.at_ms),
                e.policy,
                e.action,
                e.reason
            );
        }
    }
}

/// `HH:MM:SS` (UTC) of a time in milliseconds since the Unix epoch.
fn clock(at_ms: u64) -> String {
    let s = at_ms / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600 % 24, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: MonitorArgs,
    }

    #[test]
    fn floors_from_up_raise_min_nodes_and_never_lower_them() {
        let cli = Cli::parse_from([
            "monitor",
            "--port",
            "1",
            "--router",
            "tcp://r:1",
            "--min-storage-nodes",
            "6",
            "--min-compute-nodes",
            "0",
        ]);
        let m = with_floors(&cli.args, &SquallConfig::default());
        assert_eq!((m.storage.min_nodes, m.storage.max_nodes), (6, 6));
        let d = SquallConfig::default().monitor.compute;
        assert_eq!(
            (m.compute.min_nodes, m.compute.max_nodes),
            (d.min_nodes, d.max_nodes)
        );
        m.validate().unwrap();
    }
}
