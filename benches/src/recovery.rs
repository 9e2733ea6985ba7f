//! Recovery time: how long a restarted store takes to serve every key it
//! kept on disk, Squall beside Redis.
//!
//! Squall ([`squall_restart`]): a one-node cluster (`squall up`, so the
//! node keeps its keys in fjall under `STATE_DIR/data/node-1`) is given
//! `keys` last-writer-wins values by several clients with multi-key puts;
//! the last batch is put again at `Ack::Durable`, so every worker thread
//! has synced all it holds. Then the node is stopped, cleanly (`squall
//! down`: SIGINT, the workers flush as they stop) or killed (SIGKILL of the
//! storage process, then `squall down` for the router), and `squall up`
//! starts the same cluster on the same data again. Measured from the spawn
//! of `squall up`: until a multi-key get of the last key written and 63
//! more spread over the range (so every worker thread's) returns their
//! values (polled every few milliseconds by fresh clients), until the node
//! logs `storage node serving` (every thread loaded and started; the log's
//! timestamp against the spawn's wall clock), and until `squall up` returns
//! (it waits for the router to see the node and answer a put and a get).
//! The node's log also gives each thread's load (`loaded the keys kept on
//! disk ... keys= ms=`; threads load one after another, each serving once
//! its own keys are loaded). Afterwards a sample of keys is read back.
//!
//! Redis ([`redis_restart`]): a `redis-server` with `appendonly yes`
//! (`appendfsync everysec`) in a directory under the system temp dir gets
//! the same keys by pipelined `SET`s, is stopped (SIGTERM: it syncs its
//! append-only file and exits) or killed (SIGKILL, after 1.5 s so the last
//! `everysec` sync has run), and started again on the same directory;
//! measured until it answers `PING` (it loads the file first), then until
//! `DBSIZE` is `keys`. Redis's own defaults apply otherwise: its automatic
//! rewrite of a large append-only file (past 64 MB) makes the base an RDB
//! snapshot plus an incremental tail, which is what a Redis kept this way
//! loads (a rewrite in progress is let finish before the stop).

use crate::backend::{BackendError, KvBackend, Result};
use crate::redis::{Persistence, RedisConnection, RedisServer};
use crate::squall::SquallFactory;
use anna::client::ClientConfig;
use anna::lattice::{LatticeValue, Lww};
use anna::protocol::{Ack, Address};
use squall_transport::Client;
use std::path::Path;
use std::time::{Duration, Instant};

/// How a store is stopped before it is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopKind {
    /// Squall: `squall down` (SIGINT, workers flush); Redis: SIGTERM.
    Clean,
    /// SIGKILL of the storage process (Squall: then `squall down` for the
    /// router).
    Killed,
}

impl StopKind {
    pub fn label(self) -> &'static str {
        match self {
            StopKind::Clean => "clean",
            StopKind::Killed => "SIGKILL",
        }
    }
}

/// What to write before the restart.
#[derive(Clone, Debug)]
pub struct Keys {
    pub count: usize,
    pub value_size: usize,
    /// Client threads writing (Squall) or pipelining connections (Redis).
    pub writers: usize,
    /// Keys per multi-key put or pipeline.
    pub batch: usize,
}

/// One restart measured.
#[derive(Clone, Debug)]
pub struct Restart {
    /// `squall (1t)`, `redis (aof everysec)`.
    pub store: String,
    pub stop: StopKind,
    pub keys: usize,
    /// Seconds to write the keys.
    pub write_secs: f64,
    /// Bytes of the data directory after the stop.
    pub disk_bytes: u64,
    /// Keys the restarted store reported loading (Squall: its log, summed
    /// over threads; Redis: `DBSIZE`).
    pub loaded: u64,
    /// Squall: the load's ms from the node's log, summed over threads.
    pub load_ms: Option<u64>,
    /// Squall: from the start until the node logged `storage node
    /// serving`.
    pub node_serving: Option<Duration>,
    /// What the store kept on disk, in words (Redis: its files).
    pub note: Option<String>,
    /// From the start of the process (`squall up`, `redis-server`) until
    /// it answered a read: Squall the last key's value, Redis `PING`.
    pub first_answer: Duration,
    /// From the start until it serves every key: Squall `squall up`
    /// returned (the router sees the node) and the last key was read,
    /// Redis `DBSIZE` equal to `keys`.
    pub serving: Duration,
    /// Keys of a sample read back after the restart that held the value
    /// written, out of how many.
    pub sample: (usize, usize),
}

impl Restart {
    /// Seconds per million keys, of [`Restart::serving`].
    pub fn secs_per_million(&self) -> f64 {
        self.serving.as_secs_f64() / (self.keys as f64 / 1e6)
    }
}

fn key(i: usize) -> String {
    format!("recovery:{i:09}")
}

fn value(i: usize, size: usize) -> Vec<u8> {
    let mut v = format!("{i:09}-").into_bytes();
    v.resize(size, b'v');
    v.truncate(size);
    v
}

fn server(e: impl std::fmt::Display) -> BackendError {
    BackendError::Server(e.to_string())
}

/// Bytes of disk the files under `dir` take (allocated blocks: fjall's
/// journal is preallocated sparse, so its length overstates it).
pub fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.blocks() * 512),
            Err(_) => 0,
        })
        .sum()
}

/// Squall: one node of `threads` threads, `keys` written, stopped as
/// `stop` says, started again; see the module's documentation.
pub fn squall_restart(
    threads: u16,
    stop: StopKind,
    keys: &Keys,
    base_port: u16,
) -> Result<Restart> {
    let mut factory =
        SquallFactory::start_logging(1, threads, 1, base_port, "", "warn,squall=info")?;
    let store = format!("squall ({threads}t)");
    let routers = factory.routers().to_vec();
    let written = Instant::now();
    squall_write(&routers, keys)?;
    let write_secs = written.elapsed().as_secs_f64();

    match stop {
        StopKind::Clean => factory.down()?,
        StopKind::Killed => {
            let pid = node_pid(&factory)?;
            // SAFETY: kill(2) on the storage process the factory started.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            wait_gone(pid)?;
            factory.down()?;
        }
    }
    let data = factory.state_dir().join("data");
    let disk_bytes = dir_bytes(&data);
    let log = factory.state_dir().join("logs").join("node-1.log");
    let _ = std::fs::remove_file(&log);

    let mut probe_indices: Vec<usize> = (0..63).map(|j| j * keys.count / 63).collect();
    probe_indices.push(keys.count - 1);
    probe_indices.dedup();
    let probe_keys: Vec<String> = probe_indices.iter().map(|&i| key(i)).collect();
    let probe_refs: Vec<&str> = probe_keys.iter().map(String::as_str).collect();
    let wall = std::time::SystemTime::now();
    let started = Instant::now();
    let mut up = factory
        .up_command()
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let ctx = zmq::Context::new();
    let probe = ClientConfig {
        attempt_timeout: Duration::from_millis(50),
        op_timeout: Duration::from_millis(200),
        ..ClientConfig::default()
    };
    let (mut first_answer, mut up_done) = (None, None);
    while first_answer.is_none() || up_done.is_none() {
        if up_done.is_none() {
            if let Some(status) = up.try_wait()? {
                if !status.success() {
                    return Err(BackendError::Setup(format!(
                        "`squall up` again failed ({status}); see {}",
                        factory.state_dir().display()
                    )));
                }
                up_done = Some(started.elapsed());
            }
        }
        if first_answer.is_none() {
            let bind = Address::from("tcp://127.0.0.1:*");
            let mut c =
                Client::connect_in(&ctx, &bind, routers.clone(), probe.clone()).map_err(server)?;
            if let Ok(values) = c.get_many(&probe_refs) {
                let all = probe_indices.iter().zip(&values).all(|(&i, v)| {
                    matches!(v, Some(LatticeValue::Lww(l))
                        if l.value() == value(i, keys.value_size).as_slice())
                });
                if all {
                    first_answer = Some(started.elapsed());
                }
            }
        }
        if started.elapsed() > Duration::from_secs(600) {
            let _ = up.kill();
            return Err(BackendError::Timeout(Duration::from_secs(600)));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let (first_answer, up_done) = (
        first_answer.unwrap_or_default(),
        up_done.unwrap_or_default(),
    );
    factory.reread_record()?;
    let text = std::fs::read_to_string(&log)?;
    let (loaded, load_ms) = loaded_from_log(&text);
    let node_serving = text
        .lines()
        .find(|l| l.contains("storage node serving"))
        .and_then(|l| since(wall, l));
    let sample = squall_sample(&routers, keys)?;
    Ok(Restart {
        store,
        stop,
        keys: keys.count,
        write_secs,
        disk_bytes,
        loaded,
        load_ms: Some(load_ms),
        node_serving,
        note: None,
        first_answer,
        serving: first_answer.max(up_done),
        sample,
    })
}

/// The storage node's pid from the factory's record.
fn node_pid(factory: &SquallFactory) -> Result<u32> {
    use crate::backend::BackendFactory;
    let pids = factory.server_pids();
    factory
        .process_names()
        .iter()
        .position(|n| n.starts_with("node"))
        .and_then(|i| pids.get(i).copied())
        .ok_or_else(|| BackendError::Setup("no storage node in the cluster record".into()))
}

/// Waits until process `pid` is gone (it is not our child: `squall up`
/// started it and exited).
fn wait_gone(pid: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    // SAFETY: signal 0 only checks whether the process exists.
    while unsafe { libc::kill(pid as i32, 0) } == 0 {
        if Instant::now() > deadline {
            return Err(BackendError::Timeout(Duration::from_secs(10)));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Writes `keys.count` keys through `keys.writers` clients, each a
/// contiguous range in multi-key puts of `keys.batch`; then the last batch
/// again at `Ack::Durable` (every thread syncs what it holds).
fn squall_write(routers: &[Address], keys: &Keys) -> Result<()> {
    let config = ClientConfig {
        op_timeout: Duration::from_secs(30),
        ..ClientConfig::default()
    };
    write_in_parallel(
        keys,
        || Client::connect(routers.to_vec(), config.clone()).map_err(server),
        |c, chunk| put_chunk(c, chunk, keys.value_size),
    )?;
    let durable = ClientConfig {
        put_ack: Ack::Durable,
        ..config
    };
    let mut c = Client::connect(routers.to_vec(), durable).map_err(server)?;
    let from = keys.count.saturating_sub(keys.batch.max(1));
    let last: Vec<usize> = (from..keys.count).collect();
    put_chunk(&mut c, &last, keys.value_size)
}

/// Writes keys `0..keys.count` from `keys.writers` threads, each a
/// contiguous range in chunks of `keys.batch`: `connect` makes a writer's
/// connection, `put` writes one chunk of key indices through it. The same
/// load for Squall and for Redis.
fn write_in_parallel<C>(
    keys: &Keys,
    connect: impl Fn() -> Result<C> + Sync,
    put: impl Fn(&mut C, &[usize]) -> Result<()> + Sync,
) -> Result<()> {
    let writers = keys.writers.max(1);
    let per = keys.count.div_ceil(writers);
    let (connect, put) = (&connect, &put);
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let range = (w * per)..((w + 1) * per).min(keys.count);
                s.spawn(move || -> Result<()> {
                    let mut conn = connect()?;
                    let indices: Vec<usize> = range.collect();
                    for chunk in indices.chunks(keys.batch.max(1)) {
                        put(&mut conn, chunk)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| BackendError::Setup("a writer panicked".into()))??;
        }
        Ok(())
    })
}

fn put_chunk(c: &mut Client, indices: &[usize], size: usize) -> Result<()> {
    let entries = indices
        .iter()
        .map(|&i| {
            let at = c.timestamp();
            (key(i), LatticeValue::Lww(Lww::new(at, value(i, size))))
        })
        .collect();
    c.put_many(entries).map_err(server)
}

/// Reads back every 1,000th key (and the last): how many held their value,
/// of how many read.
fn squall_sample(routers: &[Address], keys: &Keys) -> Result<(usize, usize)> {
    let mut c = Client::connect(routers.to_vec(), ClientConfig::default()).map_err(server)?;
    let mut indices: Vec<usize> = (0..keys.count).step_by(1_000).collect();
    indices.push(keys.count - 1);
    let names: Vec<String> = indices.iter().map(|&i| key(i)).collect();
    let mut good = 0;
    for (chunk_i, chunk_n) in indices.chunks(500).zip(names.chunks(500)) {
        let refs: Vec<&str> = chunk_n.iter().map(String::as_str).collect();
        let got = c.get_many(&refs).map_err(server)?;
        good += chunk_i
            .iter()
            .zip(got)
            .filter(|(&i, v)| {
                matches!(v, Some(LatticeValue::Lww(l)) if l.value() == value(i, keys.value_size).as_slice())
            })
            .count();
    }
    Ok((good, indices.len()))
}

/// The time from `wall` to the RFC 3339 timestamp that starts a log
/// line (`2026-12-05T15:03:27.123456Z ...`, UTC), if it has one; within a
/// day.
pub fn since(wall: std::time::SystemTime, line: &str) -> Option<Duration> {
    let stamp = line.split_whitespace().next()?;
    let time = stamp.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    let at = h * 3600.0 + m * 60.0 + s;
    let epoch = wall.duration_since(std::time::UNIX_EPOCH).ok()?;
    let from = epoch.as_secs_f64() % 86_400.0;
    let mut d = at - from;
    if d < -43_200.0 {
        d += 86_400.0;
    }
    Duration::try_from_secs_f64(d).ok()
}

/// The files in `dir` with their sizes, as `name 1.2 MiB, ...`.
fn files_in(dir: &Path) -> String {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let len = e.metadata().map_or(0, |m| m.len());
                    (e.file_name().to_string_lossy().into_owned(), len)
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .map(|(name, len)| format!("{name} {:.1} MiB", *len as f64 / f64::from(1 << 20)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Keys loaded and ms, summed over the node's `loaded the keys kept on
/// disk` lines (one per thread).
pub fn loaded_from_log(log: &str) -> (u64, u64) {
    let field = |line: &str, name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(|v| v.trim_matches(|c: char| !c.is_ascii_digit()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    log.lines()
        .filter(|l| l.contains("loaded the keys kept on disk"))
        .fold((0, 0), |(k, ms), l| {
            (k + field(l, "keys="), ms + field(l, "ms="))
        })
}

/// Redis with an append-only file: `keys` written, stopped as `stop`
/// says, started again on the same directory; see the module's
/// documentation.
pub fn redis_restart(binary: &str, stop: StopKind, keys: &Keys) -> Result<Restart> {
    let dir = std::env::temp_dir().join(format!(
        "squall-bench-redis-aof-{}-{}",
        std::process::id(),
        stop.label()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let result = redis_restart_in(binary, stop, keys, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn redis_restart_in(binary: &str, stop: StopKind, keys: &Keys, dir: &Path) -> Result<Restart> {
    let persistence = Persistence::AofEverysec;
    let first = RedisServer::start_with(binary, persistence, Some(dir))?;
    let addr = first.addr();
    let written = Instant::now();
    write_in_parallel(
        keys,
        || RedisConnection::connect(addr, Duration::from_secs(30)),
        |conn, chunk| {
            let owned: Vec<(String, Vec<u8>)> = chunk
                .iter()
                .map(|&i| (key(i), value(i, keys.value_size)))
                .collect();
            let items: Vec<(&str, &[u8])> = owned
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            conn.put_batch(&items)
        },
    )?;
    let write_secs = written.elapsed().as_secs_f64();
    // An automatic rewrite of the file may be running (a forked child):
    // let it finish, so the restart reads a settled directory.
    let mut conn = RedisConnection::connect(addr, Duration::from_secs(30))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let info = match conn.request(&[b"INFO", b"persistence"])? {
            crate::redis::resp::Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
            other => return Err(BackendError::Protocol(format!("INFO: {other:?}"))),
        };
        let busy =
            info.contains("aof_rewrite_in_progress:1") || info.contains("aof_rewrite_scheduled:1");
        if !busy || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(conn);
    match stop {
        StopKind::Clean => first.shut_down()?,
        StopKind::Killed => {
            // Past the last once-a-second sync.
            std::thread::sleep(Duration::from_millis(1_500));
            first.kill()?;
        }
    }
    let disk_bytes = dir_bytes(dir);
    let note = files_in(&dir.join("appendonlydir"));

    let started = Instant::now();
    let again = RedisServer::start_with(binary, persistence, Some(dir))?;
    let first_answer = started.elapsed();
    let mut conn = RedisConnection::connect(again.addr(), Duration::from_secs(30))?;
    let loaded = loop {
        let n = match conn.request(&[b"DBSIZE"])? {
            crate::redis::resp::Reply::Integer(n) => n.max(0) as u64,
            other => return Err(BackendError::Protocol(format!("DBSIZE: {other:?}"))),
        };
        if n >= keys.count as u64 || started.elapsed() > Duration::from_secs(60) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let serving = started.elapsed();
    let mut good = 0;
    let mut indices: Vec<usize> = (0..keys.count).step_by(1_000).collect();
    indices.push(keys.count - 1);
    for &i in &indices {
        if conn.get(&key(i))?.as_deref() == Some(value(i, keys.value_size).as_slice()) {
            good += 1;
        }
    }
    // SIGTERM: it also stops the rewrite Redis may start after loading.
    again.shut_down()?;
    Ok(Restart {
        store: format!("redis (aof {})", persistence.label()),
        stop,
        keys: keys.count,
        write_secs,
        disk_bytes,
        loaded,
        load_ms: None,
        node_serving: None,
        note: Some(note),
        first_answer,
        serving,
        sample: (good, indices.len()),
    })
}

/// The restarts as one table.
pub fn table(rows: &[Restart]) -> String {
    let mut out = String::from(
        "| store | stop | keys | write s | on disk MiB | keys loaded | load ms (log) | \
         node serving s (log) | first answer s | serving every key s | s per million keys | \
         sample read back |\n\
         |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1} | {} | {} | {} | {:.3} | {:.3} | {:.2} | {}/{} |\n",
            r.store,
            r.stop.label(),
            r.keys,
            r.write_secs,
            r.disk_bytes as f64 / f64::from(1 << 20),
            r.loaded,
            r.load_ms.map_or("-".to_string(), |m| m.to_string()),
            r.node_serving
                .map_or("-".to_string(), |d| format!("{:.3}", d.as_secs_f64())),
            r.first_answer.as_secs_f64(),
            r.serving.as_secs_f64(),
            r.secs_per_million(),
            r.sample.0,
            r.sample.1,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_lines_of_every_thread_are_summed() {
        let log = "2026-12-05T15:00:00Z  INFO squall::roles: loaded the keys kept on disk \
                   thread=0 keys=500001 bytes=9 skipped=0 ms=812 dir=/tmp/x\n\
                   2026-12-05T15:00:01Z  INFO squall::roles: storage node serving\n\
                   2026-12-05T15:00:00Z  INFO squall::roles: loaded the keys kept on disk \
                   thread=1 keys=499999 bytes=9 skipped=0 ms=790 dir=/tmp/x\n";
        assert_eq!(loaded_from_log(log), (1_000_000, 1_602));
    }

    #[test]
    fn a_log_timestamp_is_read_against_the_wall_clock() {
        let wall = std::time::UNIX_EPOCH + Duration::from_secs(86_400 * 20_000 + 3_600);
        let line = "1970-01-01T01:00:02.500000Z  INFO squall::roles: storage node serving";
        assert_eq!(since(wall, line), Some(Duration::from_millis(2_500)));
        assert_eq!(since(wall, "no timestamp here"), None);
        let early = "1970-01-01T00:59:59.000000Z  INFO x";
        assert_eq!(since(wall, early), None);
    }

    #[test]
    fn values_have_the_asked_size_and_differ_by_key() {
        assert_eq!(value(7, 100).len(), 100);
        assert_eq!(value(7, 4).len(), 4);
        assert_ne!(value(7, 100), value(8, 100));
        assert_eq!(key(12), "recovery:000000012");
    }
}
