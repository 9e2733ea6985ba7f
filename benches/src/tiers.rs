//! `squall-bench tiers`: the read latency of a key in a storage node's
//! memory tier against one on disk only, beside a Redis GET of the same
//! value size in the same run.
//!
//! One node of one thread with `[storage] memory_bytes` set far below the
//! data written: `--keys` values of `--value-size` bytes go in, the node's
//! flushes demote what does not fit, and the node's own counters
//! (`disk_keys`, `disk_hits`, `promoted`) confirm where each read landed.
//! Memory-tier reads are repeated reads of a small set of keys (the first
//! pass brings them into memory and is not measured); disk-tier reads are
//! first reads of keys written long before and never read since, each of
//! which the node reads from fjall and promotes. Every value read is
//! checked.

use crate::backend::{BackendError, Result};
use crate::redis::{Persistence, RedisConnection, RedisServer};
use crate::runner::new_histogram;
use crate::squall::SquallFactory;
use anna::client::ClientConfig;
use anna::lattice::{LatticeValue, Lww, Timestamp, WriterId};
use anna::protocol::{Address, Message, RequestId};
use hdrhistogram::Histogram;
use squall_transport::{Client, Receiver, Sender};
use std::time::{Duration, Instant};

/// What one run measures.
#[derive(Clone, Debug)]
pub struct TierRun {
    pub keys: usize,
    pub value_size: usize,
    /// The node's `[storage] memory_bytes`.
    pub memory_bytes: usize,
    /// Reads measured per tier.
    pub reads: usize,
}

/// One row: a tier's read latency, µs.
pub struct Row {
    pub what: String,
    pub reads: u64,
    pub p50: u64,
    pub p99: u64,
    pub mean: f64,
}

fn row(what: &str, h: &Histogram<u64>) -> Row {
    Row {
        what: what.to_string(),
        reads: h.len(),
        p50: h.value_at_quantile(0.5),
        p99: h.value_at_quantile(0.99),
        mean: h.mean(),
    }
}

fn key(i: usize) -> String {
    format!("tier/{i:08}")
}

fn value(i: usize, size: usize) -> Vec<u8> {
    let mut v = vec![(i % 251) as u8; size];
    v[..8.min(size)].copy_from_slice(&i.to_le_bytes()[..8.min(size)]);
    v
}

fn lww(i: usize, size: usize) -> LatticeValue {
    let ts = Timestamp {
        wall_ms: 1_700_000_000_000 + i as u64,
        logical: 0,
        writer: WriterId(9),
    };
    LatticeValue::Lww(Lww::new(ts, value(i, size)))
}

/// The named counters storage thread `to` reports.
fn counters(to: &Address) -> Result<Vec<(String, u64)>> {
    let ctx = zmq::Context::new();
    let setup = |e: squall_transport::TransportError| BackendError::Setup(e.to_string());
    let mut rx = Receiver::bind(&ctx, &Address::from("tcp://127.0.0.1:*")).map_err(setup)?;
    let mut tx = Sender::new(&ctx);
    let ask = Message::StatusRequest {
        id: RequestId(1),
        reply_to: rx.address().clone(),
    };
    tx.send(to, &ask).map_err(setup)?;
    let deadline = Instant::now() + Duration::from_secs(2);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Some(Message::StatusReply { counters, .. }) = rx.recv(Some(left)).map_err(setup)? {
            return Ok(counters);
        }
    }
    Err(BackendError::Setup(format!(
        "{to} did not answer a status request"
    )))
}

fn counter(all: &[(String, u64)], name: &str) -> u64 {
    all.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v)
}

/// Reads `key` through `client`, checks it is value `i`, returns µs.
fn timed_get(client: &mut Client, i: usize, size: usize) -> Result<u64> {
    let started = Instant::now();
    let got = client
        .get(&key(i))
        .map_err(|e| BackendError::Setup(e.to_string()))?;
    let micros = started.elapsed().as_micros() as u64;
    match got {
        Some(LatticeValue::Lww(l)) if l.value() == value(i, size) => Ok(micros.max(1)),
        other => Err(BackendError::Setup(format!(
            "{} read back wrong: {other:?}",
            key(i)
        ))),
    }
}

/// The Squall rows (memory tier, disk tier) and the node's counters
/// after them, then the Redis row.
pub fn run(run: &TierRun, redis_server: &str, base_port: u16) -> Result<(Vec<Row>, String)> {
    let extra = format!("memory_bytes = {}\n", run.memory_bytes);
    let factory = SquallFactory::start_logging(1, 1, 1, base_port, &extra, "warn")?;
    let routers = factory.routers().to_vec();
    let mut client = Client::connect(routers, ClientConfig::default())
        .map_err(|e| BackendError::Setup(e.to_string()))?;
    for i in 0..run.keys {
        client
            .put(&key(i), lww(i, run.value_size))
            .map_err(|e| BackendError::Setup(e.to_string()))?;
    }
    let thread = (factory.node_threads().into_iter().next())
        .ok_or_else(|| BackendError::Setup("the node has no thread".into()))?;
    // Flushes every 100 ms demote what is over the budget.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = counters(&thread)?;
        if counter(&c, "disk_keys") as usize >= run.keys / 2 {
            break;
        }
        if Instant::now() > deadline {
            return Err(BackendError::Setup(format!(
                "keys did not leave memory: {c:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = counters(&thread)?;

    // Memory tier: a small set read once (promoted), then read again.
    let hot: Vec<usize> = (0..run.reads.min(200)).map(|j| j * 7 % run.keys).collect();
    for &i in &hot {
        timed_get(&mut client, i, run.value_size)?;
    }
    let mut memory = new_histogram();
    while memory.len() < run.reads as u64 {
        for &i in &hot {
            let _ = memory.record(timed_get(&mut client, i, run.value_size)?);
        }
    }
    let mid = counters(&thread)?;
    // Disk tier: first reads of keys not read since they were written,
    // spread over the whole key space.
    let mut disk = new_histogram();
    let step = (run.keys / run.reads.max(1)).max(1);
    let cold = (0..run.keys).step_by(step).map(|i| (i + 3) % run.keys);
    for i in cold.filter(|i| !hot.contains(i)).take(run.reads) {
        let _ = disk.record(timed_get(&mut client, i, run.value_size)?);
    }
    let after = counters(&thread)?;
    let where_read = format!(
        "node counters: {} keys on disk only after writing; memory-tier pass: {} memory hits, {} disk hits; \
         disk-tier pass: {} memory hits, {} disk hits ({} promoted)",
        counter(&before, "disk_keys"),
        counter(&mid, "memory_hits") - counter(&before, "memory_hits"),
        counter(&mid, "disk_hits") - counter(&before, "disk_hits"),
        counter(&after, "memory_hits") - counter(&mid, "memory_hits"),
        counter(&after, "disk_hits") - counter(&mid, "disk_hits"),
        counter(&after, "promoted") - counter(&mid, "promoted"),
    );
    drop(client);
    drop(factory);

    // The peer: Redis GETs of values of the same size (all in memory).
    let redis = RedisServer::start_with(redis_server, Persistence::None, None)?;
    let mut conn = RedisConnection::connect(redis.addr(), Duration::from_secs(5))?;
    let payload = vec![7u8; run.value_size];
    for i in 0..run.reads {
        conn.request(&[b"SET", key(i).as_bytes(), &payload])?;
    }
    let mut peer = new_histogram();
    for i in (0..run.reads).cycle().take(run.reads) {
        let started = Instant::now();
        conn.request(&[b"GET", key(i).as_bytes()])?;
        let _ = peer.record((started.elapsed().as_micros() as u64).max(1));
    }
    redis.shut_down()?;

    let rows = vec![
        row("squall, memory tier", &memory),
        row("squall, disk tier (read and promoted)", &disk),
        row("redis GET (memory)", &peer),
    ];
    Ok((rows, where_read))
}

/// The rows as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| read | reads | p50 µs | p99 µs | mean µs |\n| --- | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} |\n",
            r.what, r.reads, r.p50, r.p99, r.mean
        ));
    }
    out
}
