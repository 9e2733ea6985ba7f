//! `squall monitor`: gathers the statistics of both tiers, runs the
//! autoscaling policies and carries out their decisions.
//!
//! Three threads: the [`Monitor`] role under a ZeroMQ driver (statistics,
//! policies, every decision carried out as messages); the [`Actuator`]
//! role under its own driver on an `inproc://` socket, which scales
//! through a provider (the local processes of `squall up`, Kubernetes; with
//! `--provider none`, no actuator: decisions are logged only) when the
//! monitor sends it `Message::Scale`, and has the provider repair the
//! cluster every half second, so a storage node taking 20 s to hand its
//! keys over never stalls the statistics; and, unless `--metrics off`, a
//! small HTTP server (`dashboard.rs`) answering `GET /metrics` with the
//! Prometheus text the role sends it every period, `GET /` with the
//! dashboard and `GET /api/cluster` with its JSON.

use crate::config::SquallConfig;
use crate::roles::{signals, spawn_driver, stop_drivers, wait_for_signal};
use crate::status::sayln;
use anna::lattice::WriterId;
use anna::protocol::monitor::MonitorStatus;
use anna::protocol::{Address, Message};
use anna::role::{Input, Outbox, Role};
use anna::time::Time;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use squall_monitor::{KubernetesProvider, Monitor, NodeKind, Outlets, Provider};
use std::path::Path;
use std::time::Duration;

/// Where the monitor's scaling decisions go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
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

#[derive(Debug, PartialEq, Args, Serialize)]
pub struct MonitorArgs {
    /// Host to bind and be reached at.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) host: String,
    /// Port to listen at (for `squall status`).
    #[arg(long)]
    pub(crate) port: u16,
    /// Serve Prometheus metrics (`/metrics`) and the dashboard (`/`,
    /// `/api/cluster`) at this address (`HOST:PORT`), or `off`.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub(crate) metrics: String,
    /// A router to ask for the cluster state (repeat).
    #[arg(long = "router", required = true)]
    pub(crate) routers: Vec<String>,
    /// A scheduler to ask for the compute tier's status (repeat).
    #[arg(long = "scheduler")]
    pub(crate) schedulers: Vec<String>,
    /// Where scaling decisions go.
    #[arg(long, value_enum, default_value = "local")]
    pub(crate) provider: ProviderKind,
    /// Never fewer storage nodes than this (raises `monitor.storage.min_nodes`;
    /// `up` passes the count it started).
    #[arg(long)]
    pub(crate) min_storage_nodes: Option<u32>,
    /// Never fewer compute nodes than this (raises
    /// `monitor.compute.min_nodes`; `up` passes the count it started).
    #[arg(long)]
    pub(crate) min_compute_nodes: Option<u32>,
}

impl MonitorArgs {
    /// The `squall monitor ...` arguments that parse to these (see
    /// [`crate::argv`]).
    pub(crate) fn to_args(&self) -> Result<Vec<String>> {
        crate::argv::render("monitor", self)
    }
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
    let ctx = zmq::Context::new();
    let mut outlets = Outlets::default();
    if args.metrics != "off" {
        let page = Address(format!(
            "inproc://squall-monitor-metrics-{}",
            std::process::id()
        ));
        crate::dashboard::serve(&ctx, &args.metrics, &page)?;
        outlets.metrics = Some(page);
    }
    let mut drivers = Vec::new();
    if let Some(provider) = provider {
        let at = Address(format!(
            "inproc://squall-monitor-actuator-{}",
            std::process::id()
        ));
        drivers.push(spawn_driver(
            &ctx,
            &at,
            Actuator::new(provider),
            "actuator".into(),
        )?);
        outlets.actuator = Some(at);
    }
    let me = Address(format!("tcp://{}:{}", args.host, args.port));
    let role = Monitor::new(
        with_floors(args, config),
        me.clone(),
        routers,
        schedulers,
        outlets,
        config.client.clone(),
        WriterId(squall_transport::clock::fresh_id(me.as_str())),
    );
    let mut signals = signals()?;
    drivers.push(spawn_driver(&ctx, &me, role, "monitor".into())?);
    tracing::info!(
        address = %me,
        metrics = %args.metrics,
        provider = ?args.provider,
        period_ms = config.monitor.period.as_millis() as u64,
        "monitor up"
    );
    wait_for_signal(&mut signals, "monitor");
    stop_drivers("monitor", drivers)
}

/// How often the actuator asks the provider for its counts (the local
/// provider also reaps the processes it started).
const PROVIDER_POLL: Duration = Duration::from_secs(5);

/// How often the actuator has the provider start again what died: a
/// crashed process is back within about this long plus its start.
const REPAIR_POLL: Duration = Duration::from_millis(500);

/// Carries out the monitor's `Message::Scale` through the provider, one at
/// a time, on a driver thread of its own (a storage node taking 20 s to
/// hand its keys over stalls only this); between them it has the provider
/// repair the cluster every [`REPAIR_POLL`] and read its counts every
/// [`PROVIDER_POLL`].
struct Actuator {
    provider: BoxedProvider,
    next_repair: Time,
    next_poll: Time,
}

impl Actuator {
    fn new(provider: BoxedProvider) -> Self {
        Actuator {
            provider,
            next_repair: Time::default(),
            next_poll: Time::default(),
        }
    }
}

impl Role for Actuator {
    fn step(&mut self, now: Time, input: Input, _out: &mut Outbox) {
        match input {
            Input::Message(Message::Scale { kind, replicas }) => {
                match self.provider.scale(kind, replicas) {
                    Ok(r) => tracing::info!(
                        %kind,
                        desired = r.desired,
                        observed = r.observed,
                        "scaled"
                    ),
                    Err(error) => tracing::warn!(%kind, replicas, %error, "scaling failed"),
                }
            }
            Input::Message(other) => {
                tracing::debug!(kind = other.kind(), "actuator ignored a message")
            }
            Input::Tick => {
                if now >= self.next_repair {
                    self.next_repair = now + REPAIR_POLL;
                    if let Err(error) = self.provider.repair() {
                        tracing::warn!(%error, "repairing the cluster failed");
                    }
                }
                if now >= self.next_poll {
                    self.next_poll = now + PROVIDER_POLL;
                    for kind in [NodeKind::Storage, NodeKind::Compute] {
                        if let Err(error) = self.provider.replicas(kind) {
                            tracing::debug!(%kind, %error, "reading the provider's counts failed");
                        }
                    }
                }
            }
        }
    }

    fn next_tick(&self) -> Option<Time> {
        Some(self.next_repair.min(self.next_poll))
    }
}

/// Asks a monitor what it sees and has decided.
pub fn query_monitor(to: &Address, timeout: Duration) -> Result<MonitorStatus> {
    crate::status::ask(
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
            sayln!("monitor {to}: {e:#}");
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
    sayln!("monitor {to}: {}", tiers.join(", "));
    for r in &status.storage {
        let hottest = r
            .hot_keys
            .first()
            .map(|(k, n)| format!("  hottest {k:?} ({n})"))
            .unwrap_or_default();
        let secs = f64::from(r.epoch_ms.max(1)) / 1000.0;
        sayln!(
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
        sayln!(
            "  cache {:<10} hit rate {:>5.1}% ({} hits, {} misses)",
            c.node,
            100.0 * c.hits as f64 / reads,
            c.hits,
            c.misses
        );
    }
    for (key, global, local) in &status.raised {
        sayln!("  hot key {key:?}: replication raised to {global}/{local} (global/local)");
    }
    if status.events.is_empty() {
        sayln!("  no decisions yet");
    } else {
        sayln!("  recent decisions:");
        for e in status.events.iter().rev().take(10) {
            sayln!(
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
