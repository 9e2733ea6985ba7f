//! Asking a running cluster what it sees: one question to one component
//! ([`ask`]: a router's or a storage thread's [`query`], a scheduler's
//! [`query_compute`]), waiting at start-up until the cluster answers
//! ([`wait_ready`], [`wait_compute_ready`]), and `squall status`, which
//! prints the recorded processes and what the routers, storage threads,
//! schedulers and the monitor report; with `--watch`, again every interval
//! until Ctrl-C, headed by each tier's throughput since the last frame
//! (from the differences of the components' cumulative counters).

use crate::config::SquallConfig;
use crate::process::alive;
use crate::record::{read_record, state_file, ClusterRecord};
use anna::client::ClientConfig;
use anna::cluster::{ClusterState, MemberStatus};
use anna::protocol::compute::ComputeStatus;
use anna::protocol::{Address, Message, RequestId};
use anyhow::{bail, Result};
use squall_transport::Client;
use squall_transport::{Receiver, Sender};
use std::time::{Duration, Instant};

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
pub(crate) fn ask<T>(
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
pub(crate) fn wait_compute_ready(
    record: &ClusterRecord,
    executors: usize,
    limit: Duration,
) -> Result<()> {
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
pub(crate) fn wait_ready(
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

/// Cumulative counters one frame of `squall status` read, for the next
/// frame's rates.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    /// Gets, puts and deletes, summed over the storage threads.
    kvs_ops: u64,
    /// Calls completed, summed over the executors (each counted once,
    /// however many schedulers report it).
    calls: u64,
}

/// `squall status`: prints what the cluster reports, once.
pub fn status(config: &SquallConfig, routers: &[Address]) -> Result<()> {
    report(config, routers).map(|_| ())
}

/// `squall status --watch`: clears the terminal and prints the status
/// every `interval` until interrupted, each frame headed by the KVS
/// operations and calls a second since the frame before. A frame whose
/// routers do not answer is printed all the same, and the watch goes on.
pub fn watch(config: &SquallConfig, routers: &[Address], interval: Duration) -> Result<()> {
    let mut last: Option<(Instant, Totals)> = None;
    for frame in 1u64.. {
        let started = Instant::now();
        // Clear the screen and home the cursor, then one header line.
        print!("\x1b[2J\x1b[H");
        println!(
            "squall status --watch: frame {frame}, every {:.1} s (Ctrl-C to stop)",
            interval.as_secs_f64()
        );
        let mut out = Vec::new();
        let totals = capture(&mut out, || report(config, routers));
        let rates = match (&last, &totals) {
            (Some((at, before)), Ok(now)) => {
                let secs = started.duration_since(*at).as_secs_f64().max(1e-3);
                let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
                format!(
                    "throughput: KVS {:.1} ops/s, functions {:.1} calls/s",
                    rate(now.kvs_ops, before.kvs_ops),
                    rate(now.calls, before.calls)
                )
            }
            (None, Ok(_)) => "throughput: KVS - ops/s, functions - calls/s (next frame)".into(),
            (_, Err(e)) => format!("throughput: unknown ({e:#})"),
        };
        println!("{rates}");
        print!("{}", String::from_utf8_lossy(&out));
        use std::io::Write;
        std::io::stdout().flush()?;
        if let Ok(t) = totals {
            last = Some((started, t));
        }
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
    Ok(())
}

/// `println!` for the status: see [`say`].
macro_rules! sayln {
    ($($t:tt)*) => {
        $crate::status::say(format_args!($($t)*))
    };
}
pub(crate) use sayln;

thread_local! {
    /// Where [`say`] writes: stdout, or a frame being assembled.
    static FRAME: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with what it [`say`]s written to `out` instead of stdout, so
/// a watch frame's rates can be printed above it.
fn capture<T>(out: &mut Vec<u8>, f: impl FnOnce() -> T) -> T {
    FRAME.with(|b| *b.borrow_mut() = Some(Vec::new()));
    let result = f();
    *out = FRAME.with(|b| b.borrow_mut().take()).unwrap_or_default();
    result
}

/// Prints one line of the status: to stdout, or to the frame [`capture`]
/// assembles.
pub(crate) fn say(line: std::fmt::Arguments) {
    FRAME.with(|b| match b.borrow_mut().as_mut() {
        Some(buf) => {
            use std::io::Write;
            let _ = writeln!(buf, "{line}");
        }
        None => println!("{line}"),
    });
}

/// Prints the status once; returns the counters read.
fn report(config: &SquallConfig, routers: &[Address]) -> Result<Totals> {
    let mut totals = Totals::default();
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
        sayln!(
            "processes (from {}):",
            state_file(&config.cluster.state_dir).display()
        );
        for (kind, p) in record.labelled() {
            let what = match kind {
                "storage" => format!("node {}", p.id),
                "cache" => format!("cache {}", p.id),
                // `executor-N-E`: executor E of compute node N.
                "executor" => match p.name.strip_prefix("executor-") {
                    Some(n_e) if !n_e.is_empty() => format!("executor {}", n_e.replace('-', ".")),
                    _ => format!("executor {}", p.id),
                },
                _ => kind.to_string(),
            };
            let state = match (alive(p.pid), p.stopping) {
                (true, false) => "running",
                (true, true) => "stopping",
                (false, _) => "NOT RUNNING",
            };
            sayln!(
                "  {what:<12} pid {:<7} {state:<12} {}",
                p.pid,
                p.addresses.join(" ")
            );
        }
    }
    let mut answered = false;
    for r in &routers {
        match query(r, Duration::from_secs(2)) {
            Ok(status) => {
                answered = true;
                let state = &status.cluster;
                sayln!(
                    "router {r}: ring version {}, frames dropped: malformed {} \
                     unauthenticated {} refused {}",
                    state.ring_version(),
                    status.counter("malformed"),
                    status.counter("unauthenticated"),
                    status.counter("refused")
                );
                for (id, rec) in state.members() {
                    let status = match &rec.status {
                        MemberStatus::Up(info) => match info.direct.first() {
                            Some(first) => format!(
                                "up, {} thread(s), direct endpoints from {first}",
                                info.threads.len()
                            ),
                            None => {
                                format!("up, {} thread(s), no direct endpoints", info.threads.len())
                            }
                        },
                        MemberStatus::Departed => "departed".to_string(),
                    };
                    sayln!(
                        "  node {:<4} incarnation {:<3} {status}",
                        id.0,
                        rec.incarnation
                    );
                }
            }
            Err(e) => sayln!("router {r}: {e:#}"),
        }
    }
    if let Some(record) = &record {
        sayln!("storage threads:");
        for node in &record.nodes {
            for a in &node.addresses {
                match query(&Address(a.clone()), Duration::from_secs(1)) {
                    Ok(s) => {
                        totals.kvs_ops +=
                            s.counter("gets") + s.counter("puts") + s.counter("deletes");
                        sayln!(
                            "  {a:<24} keys {:<8} gets {:<10} puts {:<10} direct {:<10} \
                             malformed {} unauthenticated {} refused {}",
                            s.counter("keys"),
                            s.counter("gets"),
                            s.counter("puts"),
                            s.counter("direct"),
                            s.counter("malformed"),
                            s.counter("unauthenticated"),
                            s.counter("refused")
                        );
                        // Shared memory only where a reader on this
                        // machine got a value in a file.
                        if s.counter("shared_written") + s.counter("shared_failures") > 0 {
                            sayln!(
                                "  {:<24} shared memory: {} keys, {} bytes in files now; {} files written, {} failures",
                                "",
                                s.counter("shared_keys"),
                                s.counter("shared_bytes"),
                                s.counter("shared_written"),
                                s.counter("shared_failures")
                            );
                        }
                        // Tiers only where a memory budget sent keys to disk.
                        if s.counter("disk_keys") + s.counter("demoted") > 0 {
                            let hits = s.counter("memory_hits") + s.counter("disk_hits");
                            let rate = |n: u64| 100.0 * n as f64 / hits.max(1) as f64;
                            sayln!(
                                "  {:<24} memory {} keys, {} bytes ({:.1}% of reads) \
                                 | disk only {} keys, {} bytes ({:.1}%) | demoted {} promoted {}",
                                "",
                                s.counter("memory_keys"),
                                s.counter("memory_bytes"),
                                rate(s.counter("memory_hits")),
                                s.counter("disk_keys"),
                                s.counter("disk_bytes"),
                                rate(s.counter("disk_hits")),
                                s.counter("demoted"),
                                s.counter("promoted"),
                            );
                        }
                    }
                    Err(e) => sayln!("  {a:<24} {e:#}"),
                }
            }
        }
    }
    if let Some(record) = &record {
        let mut calls = std::collections::BTreeMap::new();
        for s in record.scheduler_addresses() {
            match query_compute(&s, Duration::from_secs(2)) {
                Ok(status) => {
                    for e in &status.executors {
                        let n: u64 = e.calls.iter().map(|(_, n)| n).sum();
                        calls.insert(e.executor.clone(), n);
                    }
                    sayln!(
                        "scheduler {s}: {} call(s) in flight, {} queued",
                        status.in_flight,
                        status.queued
                    );
                    for e in &status.executors {
                        sayln!(
                            "  executor {:<24} {:<10} busy {:>5.1}% queue {:<4} warm [{}]",
                            e.executor.as_str(),
                            e.node,
                            f64::from(e.busy_permille) / 10.0,
                            e.queue,
                            e.warm.join(", ")
                        );
                    }
                    for c in &status.caches {
                        sayln!(
                            "  cache    {:<24} {:<10} keys {:<6} hits {:<8} misses {}",
                            c.cache.as_str(),
                            c.node,
                            c.keys.len(),
                            c.hits,
                            c.misses
                        );
                    }
                    for t in &status.calls.triggers {
                        sayln!(
                            "  trigger  {:<24} {} on {} {:?}: runs {} (failed {}, retried {}) backlog {} dropped {}",
                            t.name,
                            t.function,
                            t.on,
                            t.prefix,
                            t.runs,
                            t.failures,
                            t.retries,
                            t.backlog,
                            t.dropped
                        );
                    }
                }
                Err(e) => sayln!("scheduler {s}: {e:#}"),
            }
        }
        totals.calls = calls.values().sum();
        for m in record.monitor_addresses() {
            crate::monitor::print_status(&m);
        }
    }
    if !answered {
        bail!("no router answered");
    }
    Ok(totals)
}
