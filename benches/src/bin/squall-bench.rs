//! `squall-bench`: Squall's benchmarks against its peers, side by side.
//!
//! `squall-bench kvs` runs one closed-loop key-value workload against each
//! backend in turn and prints one table; `--matrix` runs the standard
//! matrix (uniform and Zipf 0.99, 50% and 95% reads, at `--clients` and at
//! one request in flight). Every backend is started before the first run
//! and stopped when the command ends, on success or error. Backends are
//! measured in alternating rounds (`--rounds`), so interference from other
//! processes falls on all of them alike. `--durable` compares writes that
//! survive a crash: Squall at `Ack::Durable` beside Redis with its
//! append-only file synced before each reply, and Squall's periodic flush
//! beside Redis's once-a-second sync.
//!
//! `squall-bench recovery` measures how long a restarted store takes to
//! serve the keys it kept on disk (Squall after a clean stop and after
//! SIGKILL, Redis with an append-only file).
//!
//! `squall-bench autoscale` measures how the monitor reacts to a load
//! spike (storage nodes, then compute nodes) and writes a CSV and an SVG
//! per tier; `squall-bench plot` redraws such a CSV.

use anna::protocol::Ack;
use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use squall_benches::recovery::{self, StopKind};
use squall_benches::redis::{Persistence, RedisFactory};
use squall_benches::squall::{FrameSecurity, SquallFactory};
use squall_benches::zmq_floor::{TcpFloorFactory, ZmqFloorFactory};
use squall_benches::{
    run_interleaved_pooled, table, BackendFactory, ConnectionPool, Report, Stop, Workload,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Squall's benchmarks, each measured beside its peers in the same run.
#[derive(Debug, Parser)]
#[command(name = "squall-bench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Key-value throughput and latency: closed-loop clients against each
    /// backend in turn, one table.
    Kvs(KvsArgs),
    /// A Squall cluster as a whole: gossip convergence time (a write
    /// acknowledged by one replica, until every replica returns it), CPU of
    /// the idle cluster, resident memory.
    Cluster(ClusterArgs),
    /// Autoscaling: a load spike against a local cluster whose monitor may
    /// add one node; reaction times, throughput and p99 around the change,
    /// a CSV and an SVG plot per tier.
    Autoscale(AutoscaleArgs),
    /// Recovery time: a one-node Squall cluster given `--keys` keys,
    /// stopped (`squall down`) or killed (SIGKILL), started again; the
    /// time until it serves every key, beside Redis restarting on an
    /// append-only file of the same keys.
    Recovery(RecoveryArgs),
    /// Tiers: the read latency of a key in a storage node's memory tier
    /// against one on disk only (`[storage] memory_bytes` far below the
    /// data), beside a Redis GET of the same value size.
    Tiers(TiersArgs),
    /// Draws a CSV written by `autoscale` as an SVG: a throughput line and
    /// a node-count step line over time, p99 below, phases and decisions
    /// marked.
    Plot(PlotArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Tier {
    Storage,
    Compute,
    Both,
}

#[derive(Debug, clap::Args)]
struct AutoscaleArgs {
    /// Which tier to scale.
    #[arg(long, value_enum, default_value = "both")]
    tier: Tier,
    /// Where the CSV and SVG files go.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    out: PathBuf,
    /// Seconds of light load before the spike.
    #[arg(long, default_value_t = 10.0)]
    light_secs: f64,
    /// Seconds of the spike (the burst, for compute).
    #[arg(long, default_value_t = 35.0)]
    spike_secs: f64,
    /// At most this many seconds of light load after the spike; the run
    /// ends 5 s after the added node is gone.
    #[arg(long, default_value_t = 60.0)]
    settle_secs: f64,
    /// Storage: closed-loop clients during the spike (1 otherwise).
    #[arg(long, default_value_t = 16)]
    spike_clients: usize,
    /// Storage: distinct keys, preloaded.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Storage: bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Storage: fraction of requests that are reads.
    #[arg(long, default_value_t = 0.9)]
    reads: f64,
    /// Storage: keys per request (a multi-key get or put above 1).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Storage: the monitor's busy_high, thousandths.
    #[arg(long, default_value_t = 500)]
    storage_busy_high: u16,
    /// Storage: the monitor's busy_low, thousandths.
    #[arg(long, default_value_t = 300)]
    storage_busy_low: u16,
    /// Compute: calls a second in the light phases.
    #[arg(long, default_value_t = 4.0)]
    light_rate: f64,
    /// Compute: calls a second in the burst.
    #[arg(long, default_value_t = 50.0)]
    burst_rate: f64,
    /// Compute: how long each call sleeps, ms.
    #[arg(long, default_value_t = 30)]
    sleep_ms: u32,
    /// Compute: executors per compute node.
    #[arg(long, default_value_t = 1)]
    executors: u16,
    /// Compute: the monitor's busy_high, thousandths.
    #[arg(long, default_value_t = 700)]
    compute_busy_high: u16,
    /// Compute: the monitor's busy_low, thousandths.
    #[arg(long, default_value_t = 250)]
    compute_busy_low: u16,
    /// Compute: the Python with the `squall` package (registers the
    /// function).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python"))]
    python: PathBuf,
    /// First port of the storage run's cluster; the compute run's is 1000
    /// above.
    #[arg(long, default_value_t = 19_100)]
    base_port: u16,
    /// Keep the clusters' state directories (logs) after the run.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, clap::Args)]
struct PlotArgs {
    /// The CSV to draw.
    #[arg(long)]
    csv: PathBuf,
    /// The SVG to write.
    #[arg(long)]
    svg: PathBuf,
    /// The chart's title.
    #[arg(long, default_value = "")]
    title: String,
    /// Column drawn against the left axis [default: the third].
    #[arg(long)]
    left: Option<String>,
    /// Column drawn as a step line against the right axis [default: the
    /// sixth].
    #[arg(long)]
    right: Option<String>,
    /// Column drawn in a lower panel [default: the fourth].
    #[arg(long)]
    lower: Option<String>,
}

#[derive(Debug, clap::Args)]
struct ClusterArgs {
    /// Storage nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Worker threads per node.
    #[arg(long, default_value_t = 1)]
    threads: u16,
    /// Nodes holding each key.
    #[arg(long, default_value_t = 3)]
    replicas: u8,
    /// Convergence samples.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Seconds the idle cluster is watched.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Bytes of the one last-writer-wins value stored for the second idle
    /// figure (anti-entropy must not keep re-sending it); 0 skips it. The
    /// cluster's `[limits]` are raised to hold it.
    #[arg(long, default_value_t = 60_000_000)]
    large_value_bytes: usize,
    /// Seconds the idle cluster holding the large value is watched: long
    /// enough to include its periodic anti-entropy re-sends (at the default
    /// `anti_entropy_bytes`, a 60 MB value on 3 nodes goes out from each
    /// about every 230 s).
    #[arg(long, default_value_t = 240)]
    large_idle_secs: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StopName {
    /// `squall down` (SIGINT: the node's workers flush as they stop);
    /// Redis: SIGTERM.
    Clean,
    /// SIGKILL of the storage process.
    Killed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StoreName {
    Squall,
    Redis,
}

#[derive(Debug, clap::Args)]
struct RecoveryArgs {
    /// Keys written before the restart.
    #[arg(long, default_value_t = 1_000_000)]
    keys: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Worker threads of the Squall node; each value is one cluster.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    squall_threads: Vec<u16>,
    /// How the store is stopped before it starts again.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "clean,killed"
    )]
    stops: Vec<StopName>,
    /// Stores to restart, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "squall,redis"
    )]
    backends: Vec<StoreName>,
    /// Client threads writing the keys.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Keys per multi-key put (Squall) or pipeline (Redis).
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// The redis-server binary: a path, or a name on PATH.
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
}

#[derive(Debug, clap::Args)]
struct TiersArgs {
    /// Keys written.
    #[arg(long, default_value_t = 20_000)]
    keys: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// The node's `[storage] memory_bytes`.
    #[arg(long, default_value_t = 1 << 20)]
    memory_bytes: usize,
    /// Reads measured per tier.
    #[arg(long, default_value_t = 2_000)]
    reads: usize,
    /// The redis-server binary: a path, or a name on PATH.
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum FramesName {
    /// Open frames (`[security] insecure = true`): no authentication.
    Open,
    /// Authenticated frames (the default): a Poly1305 tag per frame.
    Authenticated,
    /// Authenticated and encrypted frames (`[security] encrypt = true`).
    Encrypted,
}

impl FramesName {
    fn mode(self) -> FrameSecurity {
        match self {
            FramesName::Open => FrameSecurity::Open,
            FramesName::Authenticated => FrameSecurity::Authenticated,
            FramesName::Encrypted => FrameSecurity::Encrypted,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum AckName {
    /// Acknowledged once the first replica merged it (in memory); the node
    /// syncs it with its next periodic flush (`flush_period`, 100 ms).
    One,
    /// Acknowledged once the node has synced it (`Ack::Durable`; one fsync
    /// per batch of requests).
    Durable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PersistenceName {
    /// No persistence (`--save '' --appendonly no`).
    None,
    /// Append-only file, synced before each reply (`appendfsync always`).
    Always,
    /// Append-only file, synced once a second (`appendfsync everysec`).
    Everysec,
}

impl PersistenceName {
    fn mode(self) -> Persistence {
        match self {
            PersistenceName::None => Persistence::None,
            PersistenceName::Always => Persistence::AofAlways,
            PersistenceName::Everysec => Persistence::AofEverysec,
        }
    }
}

#[derive(Debug, clap::Args)]
struct KvsArgs {
    /// Backends to run, in order; the `redis` row of a workload is the
    /// baseline of the ratio columns [default:
    /// squall,redis,zmq-floor,tcp-floor; squall,redis with --durable].
    #[arg(long, value_enum, value_delimiter = ',')]
    backends: Vec<BackendName>,
    /// Acknowledgement levels of the Squall backend's puts, each value one
    /// more `squall` backend: `one` (acknowledged from memory; the node
    /// syncs every 100 ms), `durable` (synced before the ack) [default:
    /// one, named plainly; durable,one with --durable].
    #[arg(long, value_enum, value_delimiter = ',')]
    squall_ack: Vec<AckName>,
    /// How the Squall backend's frames are sealed, each value one more
    /// `squall` backend at the default ack: `open` (no authentication),
    /// `authenticated`, `encrypted` (what security costs) [default:
    /// authenticated, named plainly].
    #[arg(long, value_enum, value_delimiter = ',', conflicts_with = "squall_ack")]
    squall_frames: Vec<FramesName>,
    /// Persistence of the Redis backend, each value one more `redis`
    /// backend: `none`, `always` (append-only file synced before each
    /// reply), `everysec` (synced once a second); its files in a fresh
    /// directory under the system temp dir, as Squall's [default: none;
    /// always,everysec with --durable].
    #[arg(long, value_enum, value_delimiter = ',')]
    redis_persistence: Vec<PersistenceName>,
    /// Worker threads of the Squall storage node (repeat the `squall`
    /// backend with --squall-threads 1,2 to see the scaling).
    #[arg(long, value_delimiter = ',', default_value = "2")]
    squall_threads: Vec<u16>,
    /// Client threads (= requests in flight). With --matrix, the concurrent
    /// column; 1 client always runs too.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Distinct keys, all preloaded.
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Zipf exponent of key popularity; 0 is uniform [default: 0].
    #[arg(long)]
    zipf: Option<f64>,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Fraction of requests that are reads, 0 to 1 [default: 0.95].
    #[arg(long)]
    reads: Option<f64>,
    /// Keys per request: each request reads (or writes) this many distinct
    /// keys at once, as Squall's `get_many`/`put_many` and as a Redis
    /// pipeline of that depth. Throughput counts keys, latency requests.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Measured seconds per run [default: 5; 6 with --matrix, ~2 minutes
    /// in all].
    #[arg(long)]
    duration: Option<f64>,
    /// Measure this many requests in all instead of a duration.
    #[arg(long, conflicts_with = "duration")]
    requests: Option<u64>,
    /// Unmeasured seconds before each run.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Split each run into this many rounds, alternating backends (the
    /// order turned by one each round), so a busy machine skews every
    /// backend alike [default: 1; 6 with --matrix].
    #[arg(long)]
    rounds: Option<usize>,
    /// Seed of the clients' key and operation choices.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Run the standard matrix: 100k keys, 100-byte values (unless
    /// --keys/--value-size say otherwise), uniform and Zipf 0.99, 50% and
    /// 95% reads, at --clients and at 1 client.
    #[arg(long, conflicts_with_all = ["zipf", "reads"])]
    matrix: bool,
    /// Durable writes: writes only, uniform keys, at --clients and at 1
    /// client; Squall at ack durable beside Redis with `appendfsync
    /// always`, and Squall at ack one (its node syncing every 100 ms)
    /// beside `appendfsync everysec`, one table for each pair, in 3
    /// alternating rounds.
    #[arg(long, conflicts_with_all = ["zipf", "reads", "matrix"])]
    durable: bool,
    /// The redis-server binary: a path, or a name on PATH.
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendName {
    /// A local Squall cluster (one router, one storage node), started with
    /// the `squall` binary built beside this one.
    Squall,
    /// A private redis-server on a loopback port.
    Redis,
    /// Not a store: one ZeroMQ ping round trip per request.
    ZmqFloor,
    /// Squall with its clients reaching the storage threads over ZeroMQ
    /// only (not their direct endpoints): the path before them.
    SquallZmq,
    /// Not a store: one ping round trip per request over a direct
    /// endpoint's TCP connection.
    TcpFloor,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Kvs(args) => kvs(&args),
        Command::Cluster(args) => cluster(&args),
        Command::Autoscale(args) => autoscale(&args),
        Command::Recovery(args) => recovery(&args),
        Command::Tiers(args) => tiers(&args),
        Command::Plot(args) => plot(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("squall-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn autoscale(a: &AutoscaleArgs) -> Result<()> {
    use squall_benches::autoscale::{compute, storage};
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "squall-bench autoscale: {cores} cores ({}); load average before: {}",
        cpu_model().unwrap_or_else(|| "unknown CPU".into()),
        load_average().unwrap_or_default()
    );
    if matches!(a.tier, Tier::Storage | Tier::Both) {
        storage::run(&storage::StorageArgs {
            light_secs: a.light_secs,
            spike_secs: a.spike_secs,
            settle_secs: a.settle_secs,
            spike_clients: a.spike_clients,
            keys: a.keys,
            value_size: a.value_size,
            reads: a.reads,
            batch: a.batch,
            busy_high: a.storage_busy_high,
            busy_low: a.storage_busy_low,
            base_port: a.base_port,
            out: a.out.clone(),
            keep: a.keep,
        })
        .context("the storage autoscaling run")?;
        println!();
    }
    if matches!(a.tier, Tier::Compute | Tier::Both) {
        compute::run(&compute::ComputeArgs {
            light_secs: a.light_secs,
            burst_secs: a.spike_secs,
            settle_secs: a.settle_secs,
            light_rate: a.light_rate,
            burst_rate: a.burst_rate,
            sleep_ms: a.sleep_ms,
            executors: a.executors,
            busy_high: a.compute_busy_high,
            busy_low: a.compute_busy_low,
            python: a.python.clone(),
            base_port: a.base_port.saturating_add(1000),
            out: a.out.clone(),
            keep: a.keep,
        })
        .context("the compute autoscaling run")?;
    }
    if let Some(load) = load_average() {
        println!("load average after: {load}");
    }
    Ok(())
}

fn tiers(a: &TiersArgs) -> Result<()> {
    anyhow::ensure!(
        a.keys > 2 * a.reads,
        "--keys must be more than twice --reads"
    );
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "squall-bench tiers: {cores} cores ({}); load average before: {}",
        cpu_model().unwrap_or_else(|| "unknown CPU".into()),
        load_average().unwrap_or_default()
    );
    println!(
        "  {} keys of {} bytes into one node of one thread with memory_bytes = {}; {} reads per tier, one at a time",
        a.keys, a.value_size, a.memory_bytes, a.reads
    );
    println!("  redis: {}", redis_version(&a.redis_server));
    let run = squall_benches::tiers::TierRun {
        keys: a.keys,
        value_size: a.value_size,
        memory_bytes: a.memory_bytes,
        reads: a.reads,
    };
    let (rows, where_read) = squall_benches::tiers::run(&run, &a.redis_server, 19_400)?;
    println!();
    println!("{}", squall_benches::tiers::table(&rows));
    println!("{where_read}");
    if let Some(load) = load_average() {
        println!("load average after: {load}");
    }
    Ok(())
}

fn recovery(a: &RecoveryArgs) -> Result<()> {
    anyhow::ensure!(a.keys > 0, "--keys must be at least 1");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "squall-bench recovery: {cores} cores ({}); load average before: {}",
        cpu_model().unwrap_or_else(|| "unknown CPU".into()),
        load_average().unwrap_or_default()
    );
    println!(
        "  {} keys of {} bytes, written by {} clients in batches of {}; files under {}",
        a.keys,
        a.value_size,
        a.writers,
        a.batch,
        std::env::temp_dir().display()
    );
    if a.backends.contains(&StoreName::Redis) {
        println!("  redis: {}", redis_version(&a.redis_server));
    }
    let keys = recovery::Keys {
        count: a.keys,
        value_size: a.value_size,
        writers: a.writers,
        batch: a.batch,
    };
    let stops: Vec<StopKind> = a
        .stops
        .iter()
        .map(|s| match s {
            StopName::Clean => StopKind::Clean,
            StopName::Killed => StopKind::Killed,
        })
        .collect();
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut clusters = 0u16;
    for store in &a.backends {
        match store {
            StoreName::Squall => {
                for &threads in &a.squall_threads {
                    for &stop in &stops {
                        eprintln!(
                            "[{:>5.1} s] squall ({threads}t), {} restart",
                            started.elapsed().as_secs_f64(),
                            stop.label()
                        );
                        let base = 19_700 + 300 * clusters;
                        clusters += 1;
                        rows.push(
                            recovery::squall_restart(threads, stop, &keys, base).with_context(
                                || format!("squall ({threads}t), {}", stop.label()),
                            )?,
                        );
                    }
                }
            }
            StoreName::Redis => {
                for &stop in &stops {
                    eprintln!(
                        "[{:>5.1} s] redis, {} restart",
                        started.elapsed().as_secs_f64(),
                        stop.label()
                    );
                    rows.push(
                        recovery::redis_restart(&a.redis_server, stop, &keys)
                            .with_context(|| format!("redis, {}", stop.label()))?,
                    );
                }
            }
        }
    }
    eprintln!("[{:>5.1} s] done", started.elapsed().as_secs_f64());
    println!();
    println!("{}", recovery::table(&rows));
    for r in rows.iter().filter(|r| r.note.is_some()) {
        println!(
            "{}, {}: {}",
            r.store,
            r.stop.label(),
            r.note.as_deref().unwrap_or("")
        );
    }
    println!(
        "All from the spawn of `squall up` / `redis-server`. first answer: squall, a multi-key \
         get of the last key and 63 more (every thread's) read back through the router; redis, \
         PING (answered once the file is loaded).\nnode serving: the node's log line `storage \
         node serving` (every thread loaded).\nserving every key: squall, the first answer and \
         `squall up` returned (the router sees the node); redis, DBSIZE = keys.\nkeys loaded: \
         squall, summed from the node's log (its `squall up` probe key included); load ms: the \
         node's own figure, threads one after another."
    );
    if let Some(load) = load_average() {
        println!("load average after: {load}");
    }
    Ok(())
}

fn plot(a: &PlotArgs) -> Result<()> {
    let text =
        std::fs::read_to_string(&a.csv).with_context(|| format!("reading {}", a.csv.display()))?;
    let header: Vec<&str> = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .context("the CSV has no header")?
        .split(',')
        .collect();
    let pick = |given: &Option<String>, i: usize| {
        given
            .clone()
            .or_else(|| header.get(i).map(|s| s.to_string()))
            .with_context(|| format!("the CSV has no column {}", i + 1))
    };
    let (left, right, lower) = (pick(&a.left, 2)?, pick(&a.right, 5)?, pick(&a.lower, 3)?);
    let chart = squall_benches::plot::from_csv(&text, &a.title, &left, &right, Some(&lower))
        .map_err(anyhow::Error::msg)?;
    std::fs::write(&a.svg, squall_benches::plot::svg(&chart))
        .with_context(|| format!("writing {}", a.svg.display()))?;
    Ok(())
}

fn cluster(args: &ClusterArgs) -> Result<()> {
    use squall_benches::cluster::{
        convergence, idle_cpu, idle_cpu_each, limits_for_value, resident, store_large_value,
    };
    let limits = if args.large_value_bytes > 0 {
        limits_for_value(args.large_value_bytes)
    } else {
        String::new()
    };
    let factory =
        SquallFactory::start_cluster_with(args.nodes, args.threads, args.replicas, 18_100, &limits)
            .context("starting the Squall cluster")?;
    let pids = factory.server_pids();
    println!(
        "squall-bench cluster: {} node(s) x {} thread(s), {} replica(s) per key, 1 router",
        args.nodes, args.threads, args.replicas
    );
    std::thread::sleep(Duration::from_secs(2));
    let mib = |b: Option<u64>| {
        b.map_or("?".to_string(), |b| {
            format!("{:.1} MiB", b as f64 / 1048576.0)
        })
    };
    println!(
        "  resident memory of all its processes, started: {}",
        mib(resident(&pids))
    );
    let idle = idle_cpu(&pids, Duration::from_secs(args.idle_secs));
    println!(
        "  idle CPU over {} s: {}",
        args.idle_secs,
        idle.map_or("?".to_string(), |c| format!("{:.2}% of a core", c * 100.0))
    );
    let times = convergence(factory.routers(), args.samples)?;
    let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "  gossip convergence over {} writes: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        times.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3,
    );
    println!("  resident memory after: {}", mib(resident(&pids)));
    if args.large_value_bytes == 0 {
        return Ok(());
    }
    let took = store_large_value(factory.routers(), "idle:large", args.large_value_bytes)?;
    println!(
        "  stored one {:.1} MB value on every replica in {:.2} s",
        args.large_value_bytes as f64 / 1e6,
        took.as_secs_f64()
    );
    // Let the write's own gossip settle before watching.
    std::thread::sleep(Duration::from_secs(5));
    let over = Duration::from_secs(args.large_idle_secs);
    let each = idle_cpu_each(&pids, over).context("reading the processes' CPU time")?;
    println!(
        "  idle CPU over {} s holding it: {:.2}% of a core in all",
        args.large_idle_secs,
        each.iter().sum::<f64>() * 100.0
    );
    for (name, cpu) in factory.process_names().iter().zip(&each) {
        println!("    {name}: {:.2}% of a core", cpu * 100.0);
    }
    println!("  resident memory holding it: {}", mib(resident(&pids)));
    Ok(())
}

fn kvs(args: &KvsArgs) -> Result<()> {
    let workloads = workloads(args)?;
    for w in &workloads {
        w.validate().context("invalid workload")?;
    }
    // Started up front so a missing redis-server fails before minutes of
    // runs; dropped (servers stopped) when this function returns.
    let mut factories = Vec::new();
    let mut classes = Vec::new();
    let mut squall_clusters = 0;
    for b in backends(args) {
        for (factory, class) in start(b, args, &mut squall_clusters)? {
            classes.push((factory.name().to_string(), class));
            factories.push(factory);
        }
    }

    print_context(args, &factories);
    let started = Instant::now();
    let rounds = rounds(args);
    let backends: Vec<&dyn BackendFactory> = factories.iter().map(|f| f.as_ref()).collect();
    // One pool for every workload: client connections stay open from the
    // first run to the last (and close before the servers stop).
    let mut pool = ConnectionPool::default();
    let mut reports = Vec::new();
    for w in &workloads {
        eprintln!(
            "[{:>5.1} s] {} | {} clients | {rounds} rounds",
            started.elapsed().as_secs_f64(),
            w.label(),
            w.clients
        );
        for report in run_interleaved_pooled(&mut pool, w, &backends, rounds)? {
            if let Some(e) = &report.first_error {
                eprintln!(
                    "  warning: {}: {} failed requests; first: {e}",
                    report.backend, report.counts.errors
                );
            }
            reports.push(report);
        }
    }
    eprintln!("[{:>5.1} s] done", started.elapsed().as_secs_f64());
    print_tables(args, &reports, &classes);
    if let Some(load) = load_average() {
        println!("load average after the runs: {load}");
    }
    Ok(())
}

/// The backends to run: as given, or the mode's default.
fn backends(args: &KvsArgs) -> Vec<BackendName> {
    if !args.backends.is_empty() {
        args.backends.clone()
    } else if args.durable {
        vec![BackendName::Squall, BackendName::Redis]
    } else {
        vec![
            BackendName::Squall,
            BackendName::Redis,
            BackendName::ZmqFloor,
            BackendName::TcpFloor,
        ]
    }
}

fn squall_acks(args: &KvsArgs) -> Vec<AckName> {
    match (args.squall_ack.is_empty(), args.durable) {
        (false, _) => args.squall_ack.clone(),
        (true, true) => vec![AckName::Durable, AckName::One],
        (true, false) => Vec::new(),
    }
}

fn redis_persistences(args: &KvsArgs) -> Vec<PersistenceName> {
    match (args.redis_persistence.is_empty(), args.durable) {
        (false, _) => args.redis_persistence.clone(),
        (true, true) => vec![PersistenceName::Always, PersistenceName::Everysec],
        (true, false) => vec![PersistenceName::None],
    }
}

/// When a backend's acknowledged writes reach the disk: the table a row
/// belongs in when several Redis persistence modes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// Synced before the acknowledgement.
    Synced,
    /// Synced later, periodically.
    Periodic,
    /// Not kept on disk (Redis without persistence, the ZeroMQ floor).
    Memory,
}

impl Class {
    fn title(self) -> &'static str {
        match self {
            Class::Synced => {
                "synced before the ack (squall ack durable; redis appendonly yes, appendfsync always)"
            }
            Class::Periodic => {
                "acknowledged from memory, synced periodically (squall ack one, its node flushing \
                 every 100 ms; redis appendfsync everysec)"
            }
            Class::Memory => "not kept on disk",
        }
    }
}

fn workloads(args: &KvsArgs) -> Result<Vec<Workload>> {
    let default_secs = if args.matrix { 6.0 } else { 5.0 };
    let stop = match args.requests {
        Some(n) => Stop::Requests(n),
        None => Stop::After(seconds(args.duration.unwrap_or(default_secs))?),
    };
    let base = Workload {
        clients: args.clients,
        keys: args.keys,
        zipf: args.zipf.unwrap_or(0.0),
        value_size: args.value_size,
        read_ratio: args.reads.unwrap_or(0.95),
        batch: args.batch,
        stop,
        warmup: seconds(args.warmup)?,
        preload: true,
        seed: args.seed,
    };
    if args.durable {
        let mut clients = vec![args.clients];
        if args.clients != 1 {
            clients.push(1);
        }
        return Ok(clients
            .into_iter()
            .map(|clients| Workload {
                clients,
                zipf: 0.0,
                read_ratio: 0.0,
                ..base.clone()
            })
            .collect());
    }
    if !args.matrix {
        return Ok(vec![base]);
    }
    let mut cells = Vec::new();
    let mut clients = vec![args.clients];
    if args.clients != 1 {
        clients.push(1);
    }
    for clients in clients {
        for zipf in [0.0, 0.99] {
            for read_ratio in [0.5, 0.95] {
                cells.push(Workload {
                    clients,
                    zipf,
                    read_ratio,
                    ..base.clone()
                });
            }
        }
    }
    Ok(cells)
}

fn rounds(args: &KvsArgs) -> usize {
    let default = if args.matrix {
        6
    } else if args.durable {
        3
    } else {
        1
    };
    args.rounds.unwrap_or(default).max(1)
}

fn seconds(s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("{s} is not a number of seconds"))
}

/// Starts backend `name`: one factory per Squall thread count and
/// acknowledgement level, or per Redis persistence mode, each with its
/// [`Class`]. `squall_clusters` counts the Squall clusters started so far
/// (each takes its own ports).
fn start(
    name: BackendName,
    args: &KvsArgs,
    squall_clusters: &mut u16,
) -> Result<Vec<(Box<dyn BackendFactory>, Class)>> {
    let mut out: Vec<(Box<dyn BackendFactory>, Class)> = Vec::new();
    match name {
        BackendName::Squall if !args.squall_frames.is_empty() => {
            for &threads in &args.squall_threads {
                for frames in &args.squall_frames {
                    let base = 17_100 + 300 * *squall_clusters;
                    *squall_clusters += 1;
                    let factory = SquallFactory::start_sealed(threads, base, frames.mode())
                        .context("starting the Squall cluster")?;
                    out.push((Box::new(factory), Class::Periodic));
                }
            }
        }
        BackendName::SquallZmq => {
            for &threads in &args.squall_threads {
                let base = 17_100 + 300 * *squall_clusters;
                *squall_clusters += 1;
                let factory =
                    SquallFactory::start(threads, base).context("starting the Squall cluster")?;
                out.push((Box::new(factory.over_zmq()), Class::Periodic));
            }
        }
        BackendName::TcpFloor => out.push((
            Box::new(TcpFloorFactory::start().context("starting the tcp-floor responder")?),
            Class::Memory,
        )),
        BackendName::Squall => {
            let acks = squall_acks(args);
            for &threads in &args.squall_threads {
                // No ack given: one plainly named backend at the default.
                let levels: Vec<Option<AckName>> = if acks.is_empty() {
                    vec![None]
                } else {
                    acks.iter().copied().map(Some).collect()
                };
                for ack in levels {
                    let base = 17_100 + 300 * *squall_clusters;
                    *squall_clusters += 1;
                    let factory = SquallFactory::start(threads, base)
                        .context("starting the Squall cluster")?;
                    let (factory, class) = match ack {
                        None => (factory, Class::Periodic),
                        Some(AckName::One) => {
                            (factory.with_put_ack(Ack::FirstReplica), Class::Periodic)
                        }
                        Some(AckName::Durable) => {
                            (factory.with_put_ack(Ack::Durable), Class::Synced)
                        }
                    };
                    out.push((Box::new(factory), class));
                }
            }
        }
        BackendName::Redis => {
            for p in redis_persistences(args) {
                let factory = RedisFactory::start_with(&args.redis_server, p.mode())
                    .context("starting the Redis baseline")?;
                let class = match p {
                    PersistenceName::None => Class::Memory,
                    PersistenceName::Always => Class::Synced,
                    PersistenceName::Everysec => Class::Periodic,
                };
                out.push((Box::new(factory), class));
            }
        }
        BackendName::ZmqFloor => out.push((
            Box::new(ZmqFloorFactory::start().context("starting the zmq-floor responder")?),
            Class::Memory,
        )),
    }
    Ok(out)
}

fn print_context(args: &KvsArgs, factories: &[Box<dyn BackendFactory>]) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let names: Vec<&str> = factories.iter().map(|f| f.name()).collect();
    println!("squall-bench kvs: {}", names.join(", "));
    println!(
        "  machine: {cores} cores ({}), loopback only",
        cpu_model().unwrap_or_else(|| "unknown CPU".into())
    );
    if let Some(load) = load_average() {
        println!("  load average before the runs: {load}");
        let one_minute: f64 = load
            .split_whitespace()
            .next()
            .and_then(|l| l.parse().ok())
            .unwrap_or(0.0);
        if one_minute > cores as f64 / 2.0 {
            eprintln!(
                "warning: load average {one_minute} on {cores} cores: other processes are \
                 busy and will skew these figures"
            );
        }
    }
    if backends(args).contains(&BackendName::Redis) {
        println!("  redis: {}", redis_version(&args.redis_server));
    }
    if args.durable {
        println!(
            "  squall and redis keep their files under {} (squall: STATE_DIR/data/node-1, \
             flush = \"periodic\" every 100 ms; redis: its append-only file)",
            std::env::temp_dir().display()
        );
    }
    let stop = match args.requests {
        Some(n) => format!("{n} requests"),
        None => format!(
            "{} s",
            args.duration.unwrap_or(if args.matrix { 6.0 } else { 5.0 })
        ),
    };
    println!(
        "  {} keys preloaded, {}-byte values, {stop} measured per backend after {} s warm-up, \
         in {} alternating rounds, seed {}",
        args.keys,
        args.value_size,
        args.warmup,
        rounds(args),
        args.seed
    );
    println!();
}

/// One table per client count; with several Redis persistence modes, one
/// per [`Class`] too, each row beside the Redis row of its class.
fn print_tables(args: &KvsArgs, reports: &[Report], classes: &[(String, Class)]) {
    let class_of = |backend: &str| {
        classes
            .iter()
            .find(|(name, _)| name == backend)
            .map_or(Class::Memory, |(_, c)| *c)
    };
    let redis_of = |class: Option<Class>| {
        classes
            .iter()
            .find(|(name, c)| name.starts_with("redis") && class.is_none_or(|k| *c == k))
            .map_or_else(|| "redis".to_string(), |(name, _)| name.clone())
    };
    let split = redis_persistences(args).len() > 1 && backends(args).contains(&BackendName::Redis);
    let mut groups: Vec<(Option<Class>, String)> = Vec::new();
    if split {
        let mut present: Vec<Class> = classes.iter().map(|(_, c)| *c).collect();
        present.sort();
        present.dedup();
        groups.extend(present.into_iter().map(|c| (Some(c), redis_of(Some(c)))));
    } else {
        groups.push((None, redis_of(None)));
    }
    for (class, baseline) in &groups {
        if let Some(c) = class {
            println!("== {} ==", c.title());
        }
        let pick = |single: bool| -> Vec<Report> {
            reports
                .iter()
                .filter(|r| (r.workload.clients == 1) == single)
                .filter(|r| class.is_none_or(|c| class_of(&r.backend) == c))
                .cloned()
                .collect()
        };
        let (concurrent, single) = (pick(false), pick(true));
        if !concurrent.is_empty() {
            println!("{} clients, one request in flight each:", args.clients);
            println!("{}", table(&concurrent, baseline));
        }
        if !single.is_empty() {
            println!("1 client, 1 request in flight:");
            println!("{}", table(&single, baseline));
        }
    }
    println!(
        "other CPU: cores' worth of CPU that other processes (not this benchmark, not the \
         servers it started) used during the run;\nsteal: cores' worth of time the hypervisor \
         did not run our vCPUs (neighbours, and our own wake-ups).\nAbove ~0.1 of either, the \
         row was measured on a busy machine.\nserver MiB: resident memory of the store's \
         processes before and after the measured requests."
    );
    let misses: u64 = reports.iter().map(|r| r.counts.misses).sum();
    if misses > 0 {
        println!("warning: {misses} reads of preloaded keys found nothing (counted in errors)");
    }
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn redis_version(binary: &str) -> String {
    std::process::Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "version unknown".into(), |v| v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_has_every_cell_at_both_client_counts() {
        let cli = Cli::parse_from(["squall-bench", "kvs", "--matrix", "--clients", "8"]);
        let Command::Kvs(args) = cli.command else {
            panic!("parsed as another command")
        };
        let cells = workloads(&args).unwrap();
        assert_eq!(cells.len(), 8);
        assert!(cells
            .iter()
            .all(|w| w.keys == 100_000 && w.value_size == 100));
        assert_eq!(cells.iter().filter(|w| w.clients == 1).count(), 4);
        assert_eq!(cells[0].stop, Stop::After(Duration::from_secs(6)));
        assert!(cells.iter().any(|w| w.zipf == 0.99 && w.read_ratio == 0.5));
    }

    #[test]
    fn autoscale_defaults_to_both_tiers_and_plot_needs_its_files() {
        let cli = Cli::parse_from(["squall-bench", "autoscale"]);
        let Command::Autoscale(args) = cli.command else {
            panic!("parsed as another command")
        };
        assert_eq!(args.tier, Tier::Both);
        assert!(args.out.ends_with("results"));
        assert!(args.storage_busy_low < args.storage_busy_high);
        assert!(Cli::try_parse_from(["squall-bench", "plot", "--csv", "x.csv"]).is_err());
    }

    #[test]
    fn durable_mode_writes_only_at_both_client_counts_against_both_aof_modes() {
        let cli = Cli::parse_from(["squall-bench", "kvs", "--durable"]);
        let Command::Kvs(args) = cli.command else {
            panic!("parsed as another command")
        };
        let cells = workloads(&args).unwrap();
        assert_eq!(cells.len(), 2);
        assert!(cells
            .iter()
            .all(|w| w.read_ratio == 0.0 && w.value_size == 100));
        assert_eq!(cells[0].clients, 16);
        assert_eq!(cells[1].clients, 1);
        assert_eq!(backends(&args), [BackendName::Squall, BackendName::Redis]);
        assert_eq!(squall_acks(&args), [AckName::Durable, AckName::One]);
        assert_eq!(
            redis_persistences(&args),
            [PersistenceName::Always, PersistenceName::Everysec]
        );
        assert_eq!(rounds(&args), 3);
        assert!(Cli::try_parse_from(["squall-bench", "kvs", "--durable", "--matrix"]).is_err());
        assert!(Cli::try_parse_from(["squall-bench", "kvs", "--durable", "--reads", "1"]).is_err());
    }

    #[test]
    fn plain_kvs_keeps_its_backends_and_an_unpersisted_redis() {
        let cli = Cli::parse_from(["squall-bench", "kvs"]);
        let Command::Kvs(args) = cli.command else {
            panic!("parsed as another command")
        };
        assert_eq!(
            backends(&args),
            [
                BackendName::Squall,
                BackendName::Redis,
                BackendName::ZmqFloor,
                BackendName::TcpFloor
            ]
        );
        assert!(squall_acks(&args).is_empty());
        assert_eq!(redis_persistences(&args), [PersistenceName::None]);
        let cli = Cli::parse_from(["squall-bench", "recovery", "--keys", "1000"]);
        let Command::Recovery(r) = cli.command else {
            panic!("parsed as another command")
        };
        assert_eq!(r.keys, 1000);
        assert_eq!(r.squall_threads, [1, 2]);
        assert_eq!(r.stops, [StopName::Clean, StopName::Killed]);
    }

    #[test]
    fn matrix_refuses_its_own_parameters() {
        assert!(Cli::try_parse_from(["squall-bench", "kvs", "--matrix", "--zipf", "1"]).is_err());
        let cli = Cli::try_parse_from(["squall-bench", "kvs", "--backends", "zmq-floor"]).unwrap();
        let Command::Kvs(args) = cli.command else {
            panic!("parsed as another command")
        };
        assert_eq!(args.backends, [BackendName::ZmqFloor]);
    }
}
