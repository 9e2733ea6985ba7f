//! Measurements of a Squall cluster as a whole, beyond request load:
//! how long a write takes to reach every replica by gossip, how much CPU
//! an idle cluster uses (empty, and holding one large value: anti-entropy
//! must not re-send it over and over), and its resident memory.
//!
//! Convergence: a client writes a fresh last-writer-wins value to one
//! replica (acknowledged by that replica alone), then reads the key at every
//! owner thread directly, again and again, until all of them return it; the
//! time from the acknowledgement to the last owner answering with it is one
//! sample.

use crate::backend::{BackendError, Result};
use crate::cpu::{process_cpu_seconds, resident_bytes};
use anna::client::ClientConfig;
use anna::cluster::Placement;
use anna::lattice::LatticeValue;
use anna::protocol::{Address, KeyOp, KvsRequest, Message, Outcome, RequestId};
use squall_transport::Client;
use squall_transport::{Receiver, Sender};
use std::time::{Duration, Instant};

fn io(e: impl std::fmt::Display) -> BackendError {
    BackendError::Protocol(e.to_string())
}

/// The cluster state and default replication a router reports.
fn placement(rx: &mut Receiver, tx: &mut Sender, router: &Address) -> Result<Placement> {
    let id = RequestId(u64::MAX);
    let ask = Message::StatusRequest {
        id,
        reply_to: rx.address().clone(),
    };
    tx.send(router, &ask).map_err(io)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Some(Message::StatusReply {
            id: got,
            cluster,
            replication,
            ..
        }) = rx.recv(Some(left)).map_err(io)?
        {
            if got == id {
                return Ok(Placement::new(&cluster, replication));
            }
        }
    }
    Err(BackendError::Timeout(Duration::from_secs(5)))
}

/// Whether the owner at `to` returns `expected` for `key` now.
fn holds(
    rx: &mut Receiver,
    tx: &mut Sender,
    to: &Address,
    key: &str,
    expected: &[u8],
    id: RequestId,
    wait: Duration,
) -> Result<bool> {
    let req = Message::KvsRequest(KvsRequest {
        id,
        reply_to: rx.address().clone(),
        ops: vec![KeyOp::Get {
            key: key.to_string(),
        }],
        ack: Default::default(),
        shared_memory: None,
    });
    tx.send(to, &req).map_err(io)?;
    let deadline = Instant::now() + wait;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Some(Message::KvsResponse(r)) = rx.recv(Some(left)).map_err(io)? {
            if r.id != id {
                continue;
            }
            return Ok(matches!(
                r.results.first().map(|k| &k.outcome),
                Some(Outcome::Value(LatticeValue::Lww(l))) if l.value() == expected
            ));
        }
    }
    Err(BackendError::Timeout(wait))
}

/// `samples` convergence times, in ascending order.
pub fn convergence(routers: &[Address], samples: usize) -> Result<Vec<Duration>> {
    let mut client = Client::connect(routers.to_vec(), ClientConfig::default())
        .map_err(|e| BackendError::Setup(e.to_string()))?;
    let ctx = zmq::Context::new();
    let mut rx = Receiver::bind(&ctx, &Address::from("tcp://127.0.0.1:*")).map_err(io)?;
    let mut tx = Sender::new(&ctx);
    let placement = placement(&mut rx, &mut tx, &routers[0])?;
    let mut times = Vec::with_capacity(samples);
    let mut next_id = 0u64;
    for i in 0..samples {
        let key = format!("convergence:{i}");
        let value = format!("v{i}").into_bytes();
        let owners = placement.owners(&key);
        client
            .put_lww(&key, value.clone())
            .map_err(|e| BackendError::Server(e.to_string()))?;
        let acked = Instant::now();
        let mut pending: Vec<Address> = owners;
        while !pending.is_empty() {
            let mut still = Vec::new();
            for owner in pending {
                next_id += 1;
                let id = RequestId(next_id);
                if !holds(
                    &mut rx,
                    &mut tx,
                    &owner,
                    &key,
                    &value,
                    id,
                    Duration::from_secs(2),
                )? {
                    still.push(owner);
                }
            }
            pending = still;
            if acked.elapsed() > Duration::from_secs(30) {
                return Err(BackendError::Timeout(Duration::from_secs(30)));
            }
        }
        times.push(acked.elapsed());
    }
    times.sort_unstable();
    Ok(times)
}

/// CPU the processes `pids` used over `over`, in cores (1.0 = one core).
pub fn idle_cpu(pids: &[u32], over: Duration) -> Option<f64> {
    let before: f64 = pids
        .iter()
        .map(|&p| process_cpu_seconds(p))
        .sum::<Option<f64>>()?;
    std::thread::sleep(over);
    let after: f64 = pids
        .iter()
        .map(|&p| process_cpu_seconds(p))
        .sum::<Option<f64>>()?;
    Some((after - before) / over.as_secs_f64())
}

/// CPU each of the processes `pids` used over `over`, in cores, in the
/// order of `pids`.
pub fn idle_cpu_each(pids: &[u32], over: Duration) -> Option<Vec<f64>> {
    let before: Vec<f64> = pids
        .iter()
        .map(|&p| process_cpu_seconds(p))
        .collect::<Option<_>>()?;
    std::thread::sleep(over);
    let after: Vec<f64> = pids
        .iter()
        .map(|&p| process_cpu_seconds(p))
        .collect::<Option<_>>()?;
    Some(
        after
            .iter()
            .zip(&before)
            .map(|(a, b)| (a - b) / over.as_secs_f64())
            .collect(),
    )
}

/// The `[limits]` section a cluster needs to hold a value of `bytes`
/// (above the default `max_value_bytes` of 32 MiB): frames at the codec's
/// ceiling, values up to 4 KiB below it, and never below `bytes`.
pub fn limits_for_value(bytes: usize) -> String {
    let frame = anna::protocol::MAX_FRAME_BYTES;
    let value = (frame - 4096).max(bytes);
    format!("[limits]\nmax_message_bytes = {frame}\nmax_value_bytes = {value}\n")
}

/// Stores one last-writer-wins value of `bytes` at `key` and waits until
/// every owner returns it; how long that took.
pub fn store_large_value(routers: &[Address], key: &str, bytes: usize) -> Result<Duration> {
    let frame = anna::protocol::MAX_FRAME_BYTES;
    let config = ClientConfig {
        op_timeout: Duration::from_secs(60),
        attempt_timeout: Duration::from_secs(20),
        limits: anna::config::Limits {
            max_message_bytes: frame,
            max_value_bytes: (frame - 4096).max(bytes),
            ..anna::config::Limits::default()
        },
        ..ClientConfig::default()
    };
    let mut client = Client::connect(routers.to_vec(), config)
        .map_err(|e| BackendError::Setup(e.to_string()))?;
    // Not all one byte, so nothing along the way can make it cheap.
    let value: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    let started = Instant::now();
    client
        .put_lww(key, value.clone())
        .map_err(|e| BackendError::Server(e.to_string()))?;
    let ctx = zmq::Context::new();
    let mut rx = Receiver::bind(&ctx, &Address::from("tcp://127.0.0.1:*")).map_err(io)?;
    let mut tx = Sender::new(&ctx);
    let mut pending = placement(&mut rx, &mut tx, &routers[0])?.owners(key);
    let mut id = 0;
    while let Some(owner) = pending.pop() {
        id += 1;
        let wait = Duration::from_secs(20);
        if !holds(&mut rx, &mut tx, &owner, key, &value, RequestId(id), wait)? {
            pending.push(owner);
            std::thread::sleep(Duration::from_millis(200));
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(BackendError::Timeout(Duration::from_secs(120)));
        }
    }
    Ok(started.elapsed())
}

/// Resident memory of `pids`, summed.
pub fn resident(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&p| resident_bytes(p)).sum()
}
