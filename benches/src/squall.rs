//! `squall`: the Squall KVS as a benchmark backend.
//!
//! [`SquallFactory`] starts a local cluster of real processes with the
//! `squall` binary built beside this one (`squall up`: one router and one
//! storage node of `threads` worker threads on loopback ports, in a
//! temporary state directory), and stops it with `squall down` when
//! dropped. Each client thread opens its own [`squall_transport::Client`]: it
//! fetches the cluster state once and sends every request straight to the
//! owning worker thread. Values are last-writer-wins bytes, put at the
//! factory's acknowledgement level ([`SquallFactory::with_put_ack`];
//! `Ack::Durable` waits for the node's fsync).
//!
//! `squall up` gives the storage node a data directory under the state
//! directory (`STATE_DIR/data/node-1`, on the system temp dir's
//! filesystem), so the node keeps its keys on disk, flushed by the config's
//! `[storage] flush` policy. [`SquallFactory::down`] and
//! [`SquallFactory::up_command`] stop and start the same cluster again on
//! the same data, for recovery measurements.

use crate::backend::{BackendError, BackendFactory, KvBackend, Result};
use anna::client::ClientConfig;
use anna::lattice::{LatticeValue, Lww};
use anna::protocol::seal::{Identity, Secret, Security};
use anna::protocol::{Ack, Address};
use squall_transport::{security, Client};
use std::path::{Path, PathBuf};
use std::process::Command;

/// How many puts a preloading connection keeps in flight.
const PRELOAD_IN_FLIGHT: usize = 64;

/// A local Squall cluster for the benchmark's clients.
pub struct SquallFactory {
    name: String,
    squall: PathBuf,
    dir: PathBuf,
    routers: Vec<Address>,
    pids: Vec<u32>,
    /// What each of `pids` is: `router 0`, `node 0`, ...
    names: Vec<String>,
    /// One ZeroMQ context for every client thread (as the ZeroMQ-floor
    /// backend has): one I/O thread, not one per client.
    ctx: zmq::Context,
    /// Acknowledgement level of the clients' puts.
    ack: Ack,
    /// The `squall up` arguments after the global flags, to start the same
    /// cluster again.
    up_args: Vec<String>,
    log: String,
    /// How this factory's clients seal their frames (as the cluster does).
    security: Security,
    /// Whether clients use the storage threads' direct endpoints
    /// ([`ClientConfig::direct`]).
    direct: bool,
}

/// How a benchmarked cluster seals its frames (`[security]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameSecurity {
    /// Open frames (`insecure = true`).
    Open,
    /// Authenticated frames: the default.
    Authenticated,
    /// Authenticated and encrypted frames (`encrypt = true`).
    Encrypted,
}

impl FrameSecurity {
    /// The `[security]` section of the cluster's config.
    fn config(self) -> &'static str {
        match self {
            FrameSecurity::Open => "\n[security]\ninsecure = true\n",
            FrameSecurity::Authenticated => "",
            FrameSecurity::Encrypted => "\n[security]\nencrypt = true\n",
        }
    }

    /// What clients of such a cluster seal with.
    fn security(self) -> Security {
        match self {
            FrameSecurity::Open => Security::insecure(),
            FrameSecurity::Authenticated | FrameSecurity::Encrypted => Security {
                identity: Some(Identity::member(bench_secret().clone())),
                clients: Default::default(),
                encrypt: self == FrameSecurity::Encrypted,
            },
        }
    }
}

/// The secret of every cluster this benchmark process starts (see
/// [`security::shared_test_secret`]).
pub fn bench_secret() -> &'static Secret {
    security::shared_test_secret()
}

/// Writes [`bench_secret`] to `dir/keys/cluster.key` unless one is there.
pub fn share_secret(dir: &Path) -> std::io::Result<()> {
    let path = dir.join("keys").join("cluster.key");
    if path.exists() {
        return Ok(());
    }
    security::write_key_file(&path, &bench_secret().key_file())
}

fn setup(what: impl std::fmt::Display) -> BackendError {
    BackendError::Setup(what.to_string())
}

/// The `squall` binary next to the running one (both are built into
/// `target/<profile>/`).
fn squall_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(setup)?;
    let dir = exe
        .parent()
        .ok_or_else(|| setup("no directory for the binary"))?;
    // Test binaries live one level down, in deps/.
    for candidate in [dir.join("squall"), dir.join("../squall")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(setup(format!(
        "the squall binary is not built next to {} (run `cargo build --release -p squall`)",
        exe.display()
    )))
}

impl SquallFactory {
    /// Starts one router and one storage node of `threads` worker threads
    /// with ports from `base_port` up.
    pub fn start(threads: u16, base_port: u16) -> Result<Self> {
        Self::start_cluster(1, threads, 1, base_port)
    }

    /// [`SquallFactory::start`] of a cluster sealing its frames as
    /// `frames` says, named for it unless authenticated (the default).
    pub fn start_sealed(threads: u16, base_port: u16, frames: FrameSecurity) -> Result<Self> {
        let mut factory = Self::start_logging(1, threads, 1, base_port, frames.config(), "warn")?;
        factory.security = frames.security();
        match frames {
            FrameSecurity::Authenticated => {}
            FrameSecurity::Open => factory.name = format!("squall ({threads}t, frames open)"),
            FrameSecurity::Encrypted => {
                factory.name = format!("squall ({threads}t, frames encrypted)")
            }
        }
        Ok(factory)
    }

    /// Starts one router and `nodes` storage nodes of `threads` worker
    /// threads, every key on `replicas` nodes, with ports from `base_port`.
    pub fn start_cluster(nodes: u16, threads: u16, replicas: u8, base_port: u16) -> Result<Self> {
        Self::start_cluster_with(nodes, threads, replicas, base_port, "")
    }

    /// As [`SquallFactory::start_cluster`], with `extra` (whole TOML
    /// sections, such as `[limits]`) appended to the cluster's config file.
    pub fn start_cluster_with(
        nodes: u16,
        threads: u16,
        replicas: u8,
        base_port: u16,
        extra: &str,
    ) -> Result<Self> {
        Self::start_logging(nodes, threads, replicas, base_port, extra, "warn")
    }

    /// As [`SquallFactory::start_cluster_with`], every process logging at
    /// `log` (a filter, e.g. `warn,squall=info`) to `STATE_DIR/logs/`.
    pub fn start_logging(
        nodes: u16,
        threads: u16,
        replicas: u8,
        base_port: u16,
        extra: &str,
        log: &str,
    ) -> Result<Self> {
        let squall = squall_binary()?;
        reap_orphans(&squall);
        let dir =
            std::env::temp_dir().join(format!("squall-bench-{}-{base_port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("squall.toml");
        std::fs::write(
            &config,
            format!("[storage]\nreplication = {{ global = {replicas}, local = 1 }}\n{extra}"),
        )?;
        share_secret(&dir)?;
        let up_args: Vec<String> = [
            "up",
            "--routers",
            "1",
            "--nodes",
            &nodes.to_string(),
            "--compute-nodes",
            "0",
            // A fixed cluster: the monitor would add nodes under the load.
            "--no-monitor",
            "--threads",
            &threads.to_string(),
            "--base-port",
            &base_port.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let status = up_command(&squall, &dir, log, &up_args)
            .status()
            .map_err(|e| setup(format!("running {}: {e}", squall.display())))?;
        if !status.success() {
            return Err(setup(format!(
                "`squall up` failed ({status}); see {}",
                dir.display()
            )));
        }
        let mut factory = SquallFactory {
            name: if nodes == 1 {
                format!("squall ({threads}t)")
            } else {
                format!("squall ({nodes}n x {threads}t)")
            },
            squall,
            dir,
            routers: Vec::new(),
            pids: Vec::new(),
            names: Vec::new(),
            ctx: zmq::Context::new(),
            ack: Ack::FirstReplica,
            up_args,
            log: log.to_string(),
            security: FrameSecurity::Authenticated.security(),
            direct: true,
        };
        factory.reread_record()?;
        Ok(factory)
    }

    /// This factory with clients that reach the storage threads over
    /// ZeroMQ only, not their direct endpoints: the path before them,
    /// named `squall (1t, over ZeroMQ)`.
    pub fn over_zmq(mut self) -> Self {
        self.direct = false;
        self.name_also("over ZeroMQ");
        self
    }

    /// Adds `what` to the name in its parentheses: `squall (1t, WHAT)`.
    fn name_also(&mut self, what: &str) {
        let inner = self
            .name
            .trim_start_matches("squall (")
            .trim_end_matches(')');
        self.name = format!("squall ({inner}, {what})");
    }

    /// The same factory, its clients putting at `ack`, named for it:
    /// `squall (1t, ack durable)`, `squall (1t, ack one)`.
    pub fn with_put_ack(mut self, ack: Ack) -> Self {
        self.ack = ack;
        let level = match ack {
            Ack::FirstReplica => "one".to_string(),
            Ack::Replicas(n) => n.to_string(),
            Ack::All => "all".to_string(),
            Ack::Durable => "durable".to_string(),
        };
        self.name_also(&format!("ack {level}"));
        self
    }

    /// `squall up` of this same cluster (same config, state directory,
    /// ports and so data directories), not yet run: to start it again after
    /// [`SquallFactory::down`] and time it.
    pub fn up_command(&self) -> Command {
        up_command(&self.squall, &self.dir, &self.log, &self.up_args)
    }

    /// `squall down`: every process stopped (SIGINT: a storage node syncs
    /// its keys as it stops), the data directories kept.
    pub fn down(&self) -> Result<()> {
        let out = Command::new(&self.squall)
            .arg("--state-dir")
            .arg(&self.dir)
            .args(["--log", "warn", "down"])
            .output()
            .map_err(|e| setup(format!("running `squall down`: {e}")))?;
        if !out.status.success() {
            return Err(setup(format!(
                "`squall down` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Reads `cluster.json` again (after [`SquallFactory::up_command`] ran):
    /// the routers, pids and names of the processes now running.
    pub fn reread_record(&mut self) -> Result<()> {
        let (routers, pids, names) = read_record(&self.dir)?;
        self.routers = routers;
        self.pids = pids;
        self.names = names;
        Ok(())
    }

    /// The state directory: `cluster.json`, `logs/`, `data/node-ID`.
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }
}

/// `squall up` with `args`, the config file and state directory `dir`.
fn up_command(squall: &Path, dir: &Path, log: &str, args: &[String]) -> Command {
    let mut command = Command::new(squall);
    command
        .arg("--config")
        .arg(dir.join("squall.toml"))
        .arg("--state-dir")
        .arg(dir)
        .arg("--log")
        .arg(log)
        .args(args);
    command
}

/// Stops the clusters of earlier benchmark runs that were killed before
/// their destructors ran (their state directories name their pid, which is
/// gone), so a killed benchmark leaves nothing running for long.
fn reap_orphans(squall: &Path) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("squall-bench-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        if pid == std::process::id() as i32 || unsafe { libc::kill(pid, 0) } == 0 {
            continue;
        }
        let dir = entry.path();
        if dir.join("cluster.json").exists() {
            eprintln!(
                "stopping a cluster left by killed run {pid}: {}",
                dir.display()
            );
            let _ = Command::new(squall)
                .arg("--state-dir")
                .arg(&dir)
                .args(["--log", "warn", "down"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The router addresses, every pid from `squall up`'s record, and what
/// each pid is.
fn read_record(dir: &Path) -> Result<(Vec<Address>, Vec<u32>, Vec<String>)> {
    let text = std::fs::read_to_string(dir.join("cluster.json"))?;
    let record: serde_json::Value = serde_json::from_str(&text).map_err(setup)?;
    let list = |field: &str| record[field].as_array().cloned().unwrap_or_default();
    let routers = list("routers")
        .iter()
        .flat_map(|r| r["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(|s| Address(s.to_string())))
        .collect();
    let pid = |p: &serde_json::Value| p["pid"].as_u64().and_then(|p| u32::try_from(p).ok());
    let mut pids = Vec::new();
    let mut names = Vec::new();
    for (kind, entries) in [("router", list("routers")), ("node", list("nodes"))] {
        for (i, p) in entries.iter().filter_map(pid).enumerate() {
            pids.push(p);
            names.push(format!("{kind} {i}"));
        }
    }
    Ok((routers, pids, names))
}

impl SquallFactory {
    /// The routers' addresses.
    pub fn routers(&self) -> &[Address] {
        &self.routers
    }

    /// Every storage thread's address, from the cluster record.
    pub fn node_threads(&self) -> Vec<Address> {
        let text = std::fs::read_to_string(self.dir.join("cluster.json")).unwrap_or_default();
        let record: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let nodes = record["nodes"].as_array().cloned().unwrap_or_default();
        nodes
            .iter()
            .flat_map(|n| n["addresses"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a.as_str().map(Address::from))
            .collect()
    }

    /// What each of [`BackendFactory::server_pids`] is, in the same order:
    /// `router 0`, `node 0`, `node 1`, ...
    pub fn process_names(&self) -> &[String] {
        &self.names
    }
}

impl Drop for SquallFactory {
    fn drop(&mut self) {
        // No record: nothing running (never started, or already down).
        if self.dir.join("cluster.json").exists() {
            if let Err(e) = self.down() {
                eprintln!("warning: {e}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl BackendFactory for SquallFactory {
    fn name(&self) -> &str {
        &self.name
    }

    fn connect(&self) -> Result<Box<dyn KvBackend + Send>> {
        let client = Client::connect_secured(
            &self.ctx,
            &anna::protocol::Address::from("tcp://127.0.0.1:*"),
            self.routers.clone(),
            ClientConfig {
                put_ack: self.ack,
                direct: self.direct,
                ..ClientConfig::default()
            },
            &self.security,
        )
        .map_err(|e| setup(format!("connecting to squall: {e}")))?;
        Ok(Box::new(SquallConnection { client }))
    }

    fn server_pids(&self) -> Vec<u32> {
        self.pids.clone()
    }
}

/// One client thread's connection.
pub struct SquallConnection {
    client: Client,
}

fn server(e: anna::client::ClientError) -> BackendError {
    match e {
        anna::client::ClientError::Timeout { after, .. } => BackendError::Timeout(after),
        other => BackendError::Server(other.to_string()),
    }
}

impl KvBackend for SquallConnection {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.client.get(key).map_err(server)? {
            Some(LatticeValue::Lww(l)) => Ok(Some(l.into_value())),
            Some(other) => Err(BackendError::Protocol(format!(
                "`{key}` holds {}, not lww",
                other.kind()
            ))),
            None => Ok(None),
        }
    }

    fn put(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.client.put_lww(key, value.to_vec()).map_err(server)
    }

    /// One multi-key read: one request per replica holding some of the
    /// keys (one, with a single storage node).
    fn get_many(&mut self, keys: &[&str]) -> Result<usize> {
        let values = self.client.get_many(keys).map_err(server)?;
        Ok(values.iter().filter(|v| v.is_none()).count())
    }

    /// One multi-key write, as [`SquallConnection::get_many`] reads.
    fn put_many(&mut self, items: &[(&str, &[u8])]) -> Result<()> {
        let at = self.client.timestamp();
        let entries = (items.iter())
            .map(|(k, v)| (k.to_string(), LatticeValue::Lww(Lww::new(at, v.to_vec()))))
            .collect();
        self.client.put_many(entries).map_err(server)
    }

    fn put_batch(&mut self, items: &[(&str, &[u8])]) -> Result<()> {
        let mut in_flight = 0;
        for (key, value) in items {
            if in_flight == PRELOAD_IN_FLIGHT {
                let (_, r) = self.client.wait_any().map_err(server)?;
                r.map_err(server)?;
                in_flight -= 1;
            }
            let at = self.client.timestamp();
            let v = LatticeValue::Lww(Lww::new(at, value.to_vec()));
            self.client.start_put(key.to_string(), v);
            in_flight += 1;
        }
        for _ in 0..in_flight {
            let (_, r) = self.client.wait_any().map_err(server)?;
            r.map_err(server)?;
        }
        Ok(())
    }
}
