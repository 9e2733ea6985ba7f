//! Asking a running cluster what it sees: one question to one component
//! ([`ask`]: a router's or a storage thread's [`query`], a scheduler's
//! [`query_compute`]), waiting at start-up until the cluster answers
//! ([`wait_ready`], [`wait_compute_ready`]), and `squall status`, which
//! prints the recorded processes and what the routers, storage threads,
//! schedulers and the monitor report.

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
            println!(
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
                println!(
                    "router {r}: ring version {}, frames dropped: malformed {} \
                     unauthenticated {} refused {}",
                    state.ring_version(),
                    status.counter("malformed"),
                    status.counter("unauthenticated"),
                    status.counter("refused")
                );
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
                    Ok(s) => {
                        println!(
                            "  {a:<24} keys {:<8} gets {:<10} puts {:<10} malformed {} \
                             unauthenticated {} refused {}",
                            s.counter("keys"),
                            s.counter("gets"),
                            s.counter("puts"),
                            s.counter("malformed"),
                            s.counter("unauthenticated"),
                            s.counter("refused")
                        );
                        // Tiers only where a memory budget sent keys to disk.
                        if s.counter("disk_keys") + s.counter("demoted") > 0 {
                            let hits = s.counter("memory_hits") + s.counter("disk_hits");
                            let rate = |n: u64| 100.0 * n as f64 / hits.max(1) as f64;
                            println!(
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
        for m in record.monitor_addresses() {
            crate::monitor::print_status(&m);
        }
    }
    if !answered {
        bail!("no router answered");
    }
    Ok(())
}
