//! `squall`: the one binary of Squall.
//!
//! Every role and every person's tool is a subcommand: `up`, `down` and
//! `status` run a local cluster of real processes; `kv` reads and writes
//! keys; `scale` adds and removes nodes of the local cluster; `kvs`,
//! `route`, `scheduler`, `cache`, `executor` and `monitor` are what the
//! launcher (or a Kubernetes pod) runs; `ping` measures the messaging layer.
//!
//! # Layout
//!
//! - `main.rs`: argument parsing, logging, config loading.
//! - `config.rs`: the config file (`deploy/squall.toml` documents it).
//! - `roles.rs`: `squall kvs` and `squall route`.
//! - `compute.rs`: `squall scheduler`, `squall cache`, `squall executor`.
//! - `argv.rs`: a role's parsed flags rendered back to its command line.
//! - `cluster.rs`: `squall up`, `down` (wiring only).
//! - `record.rs`: the cluster record, `STATE_DIR/cluster.json`, and its lock.
//! - `launch.rs`: starting the local cluster's processes, the port layout.
//! - `process.rs`: signalling, waiting for and stopping processes by pid.
//! - `status.rs`: asking components what they see; `squall status`.
//! - `local.rs`: the local cluster as a monitor provider; `squall scale`.
//! - `kv.rs`: `squall kv`.
//! - `pickle.rs`: Python pickles of plain values read without Python, for
//!   `squall kv get`.
//! - `monitor.rs`: `squall monitor` (statistics, policies, /metrics).
//! - `dashboard.rs`: the monitor's HTTP endpoint: `/metrics`, the
//!   dashboard (`dashboard.html`) and its JSON.
//! - `ping.rs`: `squall ping`.

mod argv;
mod cluster;
mod compute;
mod config;
mod dashboard;
mod gateway;
mod keys;
mod kv;
mod launch;
mod local;
mod logs;
mod monitor;
mod pickle;
mod ping;
mod process;
mod record;
mod roles;
mod shared_memory;
mod status;

use anna::protocol::Address;
use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// A positive number of seconds, at most a day.
fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x <= 86_400.0 => Ok(x),
        _ => Err(format!("{s:?} is not a number of seconds in (0, 86400]")),
    }
}

/// Squall: stateful functions next to a coordination-free lattice KVS.
#[derive(Debug, Parser)]
#[command(name = "squall", version, about, long_about = None)]
struct Cli {
    /// Log filter (tracing's env-filter syntax), e.g. `info` or `anna=debug`.
    #[arg(long, global = true, env = "SQUALL_LOG", default_value = "info")]
    log: String,

    /// Config file (TOML; every setting documented in deploy/squall.toml).
    #[arg(long, global = true, env = "SQUALL_CONFIG")]
    config: Option<PathBuf>,

    /// Where the local cluster's record and logs live (overrides
    /// `cluster.state_dir`).
    #[arg(long, global = true, env = "SQUALL_STATE_DIR")]
    state_dir: Option<PathBuf>,

    /// Key file: the cluster's secret for roles and local tools
    /// (default STATE_DIR/keys/cluster.key), a client's key for `kv`
    /// (default STATE_DIR/keys/client.key). `squall up` writes both.
    #[arg(long, global = true, env = "SQUALL_KEY_FILE")]
    key_file: Option<PathBuf>,

    /// Send and accept open frames: no authentication (every process of
    /// the cluster must agree; `squall up --insecure` starts them so).
    #[arg(long, global = true, env = "SQUALL_INSECURE")]
    insecure: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local cluster (routers and storage nodes as processes) and
    /// wait until it answers.
    Up(cluster::UpArgs),
    /// Stop the local cluster started by `up`; no process is left behind.
    Down,
    /// Show the local cluster's processes and what the routers see.
    Status {
        /// Ask this router instead of the local cluster's (repeat).
        #[arg(long = "router")]
        routers: Vec<String>,
        /// Show it again every interval until Ctrl-C, with each tier's
        /// throughput since the last frame.
        #[arg(long)]
        watch: bool,
        /// Seconds between frames of `--watch`.
        #[arg(long, default_value_t = 2.0, requires = "watch", value_parser = positive_seconds)]
        interval: f64,
    },
    /// Read and write keys: `squall kv get KEY`, `put KEY VALUE` (`put KEY
    /// -` reads the value from stdin, `--file PATH` from a file), `del KEY`.
    Kv {
        /// Router to use instead of the local cluster's (repeat).
        #[arg(long = "router", global = true)]
        routers: Vec<String>,
        #[command(flatten)]
        args: kv::KvArgs,
    },
    /// Run one storage node (what `up` starts).
    Kvs(roles::KvsArgs),
    /// Run one router (what `up` starts).
    Route(roles::RouteArgs),
    /// Run one scheduler: places calls and DAGs on executors (what `up`
    /// starts).
    Scheduler(compute::SchedulerArgs),
    /// Run one compute node's cache: a lattice replica of the keys its
    /// executors read (what `up` starts).
    Cache(compute::CacheArgs),
    /// Run one executor: Python functions in an embedded interpreter (what
    /// `up` starts).
    Executor(compute::ExecutorArgs),
    /// Add or remove storage or compute nodes of the local cluster
    /// (`squall scale storage 3`) and wait until the cluster sees them.
    Scale(local::ScaleArgs),
    /// Run the monitor: gathers both tiers' statistics, serves /metrics,
    /// and scales storage and compute nodes by the `[monitor]` policies
    /// (what `up` starts).
    Monitor(monitor::MonitorArgs),
    /// Measure protocol round trips over ZeroMQ: to a responder started in
    /// this process, or to any Squall component with `--to`.
    Ping(ping::PingArgs),
    /// Write the cluster's secret and a key per `[security.clients]` client
    /// into STATE_DIR/keys (what `up` does; keys already there are kept),
    /// and list them: for a cluster `up` does not start (Kubernetes:
    /// `kubectl create secret generic squall-keys
    /// --from-file=STATE_DIR/keys/cluster.key`).
    Keys,
    /// Serve HTTP: calls of functions and DAGs, last-writer-wins keys,
    /// `/openapi.json` (what `up` starts; authenticated with client keys).
    Gateway(gateway::GatewayArgs),
    /// Print what functions printed (stdout, stderr, `logging`), tagged
    /// with their calls, from the local cluster's logs; `-f` follows.
    Logs(logs::LogsArgs),
}

fn routers_of(given: &[String], config: &config::SquallConfig) -> Result<Vec<Address>> {
    if !given.is_empty() {
        return Ok(given.iter().map(|r| Address(r.clone())).collect());
    }
    let record = record::read_record(&config.cluster.state_dir)?;
    Ok(record.router_addresses())
}

fn run(cli: &Cli) -> Result<ExitCode> {
    let mut config = config::SquallConfig::load(cli.config.as_deref())?;
    squall_transport::set_max_message_bytes(config.limits.max_message_bytes);
    if let Some(dir) = &cli.state_dir {
        config.cluster.state_dir = dir.clone();
    }
    let who = match &cli.command {
        Command::Kv { .. } => keys::Who::Client,
        Command::Up(_)
        | Command::Down
        | Command::Status { .. }
        | Command::Scale(_)
        | Command::Keys
        | Command::Logs(_)
        | Command::Ping(_) => keys::Who::Tool,
        Command::Kvs(args) => keys::Who::Node(args.id),
        Command::Route(_)
        | Command::Scheduler(_)
        | Command::Cache(_)
        | Command::Monitor(_)
        | Command::Gateway(_) => keys::Who::Member,
        Command::Executor(_) => keys::Who::Executor,
    };
    if let Command::Kv { args, .. } = &cli.command {
        kv::check(args)?;
    }
    if matches!(cli.command, Command::Up(_)) && !cli.insecure && !config.security.insecure {
        keys::ensure_keys(&config.cluster.state_dir, &config)?;
    }
    keys::install(cli.key_file.as_deref(), cli.insecure, &config, who)?;
    match &cli.command {
        Command::Up(args) => cluster::up(args, &config, cli.config.as_deref(), &cli.log)?,
        Command::Down => cluster::down(&config)?,
        Command::Status {
            routers,
            watch,
            interval,
        } => {
            let routers: Vec<Address> = routers.iter().map(|r| Address(r.clone())).collect();
            if *watch {
                status::watch(&config, &routers, Duration::from_secs_f64(*interval))?
            } else {
                status::status(&config, &routers)?
            }
        }
        Command::Kv { routers, args } => {
            let routers = routers_of(routers, &config)?;
            if !kv::run(args, routers, &config.client)? {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Kvs(args) => roles::run_kvs(args, &config)?,
        Command::Route(args) => roles::run_router(args, &config)?,
        Command::Scheduler(args) => compute::run_scheduler(args, &config)?,
        Command::Cache(args) => compute::run_cache(args, &config)?,
        Command::Executor(args) => compute::run_executor(args, &config)?,
        Command::Scale(args) => local::run_scale(args, &config)?,
        Command::Monitor(args) => {
            monitor::run_monitor(args, &config, cli.config.as_deref(), &cli.log)?
        }
        Command::Ping(args) => ping::run(args)?,
        Command::Keys => keys::write_and_list(&config)?,
        Command::Logs(args) => logs::run(args, &config.cluster.state_dir)?,
        Command::Gateway(args) => gateway::run_gateway(args, &config.client)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes a closed stdout or stderr (`squall status | head`) end the process
/// as it ends other Unix tools: killed by `SIGPIPE`, silently, instead of
/// `println!`'s panic.
///
/// The process keeps ignoring `SIGPIPE` (Rust's default) rather than
/// restoring its default action up front: libzmq writes to its TCP
/// sockets without `MSG_NOSIGNAL` on Linux, so with the default action a
/// peer that went away while a message was on its way would kill any role,
/// and a `kv` command, without a word. Only a failed print of our own
/// output turns into the signal.
fn die_quietly_on_closed_output() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload_as_str().unwrap_or_default();
        let printing = message.starts_with("failed printing to stdout")
            || message.starts_with("failed printing to stderr");
        let broken_pipe = std::io::Error::from_raw_os_error(libc::EPIPE).to_string();
        if printing && message.ends_with(&broken_pipe) {
            // SAFETY: restoring a signal's default action and raising it
            // touch no memory of ours.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                libc::raise(libc::SIGPIPE);
            }
            // Only reached with SIGPIPE blocked in this thread: exit as a
            // shell reports a process killed by it.
            std::process::exit(128 + libc::SIGPIPE);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    die_quietly_on_closed_output();
    squall_transport::heap::keep_large_buffers();
    let cli = Cli::parse();
    // A storage node's disk store logs through `log`: its journal's
    // recovery (a torn or corrupt tail cut at the last good batch) is
    // always worth a line.
    // Its LSM tree's per-level recovery lines are not.
    let journal = "fjall::journal::reader=debug"
        .parse()
        .expect("a valid directive");
    let levels = "lsm_tree=warn".parse().expect("a valid directive");
    let filter = tracing_subscriber::EnvFilter::new(&cli.log)
        .add_directive(journal)
        .add_directive(levels);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("squall: {e:#}");
            ExitCode::FAILURE
        }
    }
}
