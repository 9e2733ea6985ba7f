//! A harness for multi-process tests: real `squall route` and `squall kvs`
//! processes on loopback (or a whole cluster `squall up` starts), driven
//! through the Rust client and raw protocol messages.
//!
//! Every test gets its own temporary directory (config file, one log per
//! process) and its own block of ports, probed free, so tests run in
//! parallel. [`Cluster`] kills every process it started when it is dropped,
//! panics included, and then prints the tail of each log so a failure
//! explains itself. Every wait has a deadline ([`wait_until`]).
//!
//! # Layout
//!
//! - `mod.rs`: [`Cluster`] (processes, ports, the config file) and
//!   [`wait_until`].
//! - [`local`]: [`LocalCluster`], a cluster `squall up` started, driven
//!   through the binary's commands.
//! - [`probe`]: [`Probe`], raw protocol questions to one socket: status,
//!   routes, reads at one replica.
//! - [`load`]: [`Writer`], a thread writing distinct keys until stopped, and
//!   the read-back check of what it got acknowledged.

#![allow(dead_code, unused_imports)] // each test file uses part of the harness

pub mod load;
pub mod local;
pub mod probe;

pub use load::{assert_all_readable, assert_on_every_owner, Writer, WriterReport};
pub use local::{LocalCluster, PortRange, Run};
pub use probe::Probe;

use anna::client::ClientConfig;
use anna::cluster::ClusterState;
use anna::protocol::seal::{Identity, Rights, Secret, Security};
use anna::protocol::{Address, NodeId};
use squall_transport::{security, Client};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The binary under test.
pub const SQUALL: &str = env!("CARGO_BIN_EXE_squall");

/// The secret of every cluster this test process starts (see
/// [`security::shared_test_secret`]).
pub fn test_secret() -> &'static Secret {
    security::shared_test_secret()
}

/// Writes the executors' key of [`test_secret`] to `dir/keys/executor.key`
/// (where `squall up` keeps it); returns the path.
pub fn write_executor_key(dir: &Path) -> PathBuf {
    let path = dir.join("keys").join("executor.key");
    if !path.exists() {
        security::write_key_file(&path, &test_secret().executor_key_file())
            .expect("writing a key file");
    }
    path
}

/// Writes [`test_secret`] to `dir/keys/cluster.key` (where `squall up`
/// keeps it, and keeps an existing one); returns the path.
pub fn write_cluster_key(dir: &Path) -> PathBuf {
    let path = dir.join("keys").join("cluster.key");
    if !path.exists() {
        security::write_key_file(&path, &test_secret().key_file()).expect("writing a key file");
    }
    path
}

/// Ports each test reserves: the router, then node `id`'s thread `t` at
/// `base + 10 * id + t`; `squall up` needs `base .. base + 100 + 20 * nodes`.
pub const PORT_BLOCK: u16 = 200;
/// Below the kernel's ephemeral range (32768..), so no client socket takes
/// a port a node will bind after a restart.
const PORT_FLOOR: u16 = 20_000;
const PORT_BLOCKS: u32 = 60;

/// Settings short enough that failure detection and handoff take a second
/// or two, not the production defaults' several.
pub const FAILURE_TIMEOUT: Duration = Duration::from_millis(1500);
pub const TRANSITION_WINDOW: Duration = Duration::from_millis(1500);

/// The config file every test process reads, with `global` replicas per key.
pub fn config_toml(global: u8) -> String {
    format!(
        "[storage]\n\
         replication = {{ global = {global}, local = 1 }}\n\
         heartbeat_period = 200\n\
         ack_timeout = 1000\n\
         handoff_retry = 200\n\
         anti_entropy_period = 300\n\
         transition_window = {}\n\
         \n\
         [router]\n\
         failure_timeout = {}\n\
         broadcast_period = 300\n\
         \n\
         [client]\n\
         attempt_timeout = 300\n\
         op_timeout = 5000\n",
        TRANSITION_WINDOW.as_millis(),
        FAILURE_TIMEOUT.as_millis(),
    )
}

/// Client settings matching [`config_toml`]: quick retries, bounded ops.
pub fn client_config() -> ClientConfig {
    ClientConfig {
        attempt_timeout: Duration::from_millis(300),
        op_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    }
}

/// The first port of a block of [`PORT_BLOCK`] ports that were all free a
/// moment ago. Blocks differ between the tests of one process; across
/// processes the probe (and the process id in the starting block) keeps
/// them apart.
pub fn reserve_ports() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7);
    for _ in 0..PORT_BLOCKS {
        let block = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % PORT_BLOCKS;
        let base = PORT_FLOOR + u16::try_from(block).expect("block index") * PORT_BLOCK;
        if (base..base + PORT_BLOCK).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no free block of {PORT_BLOCK} ports above {PORT_FLOOR}");
}

/// Polls `f` every 50 ms until it gives a value; panics with `what` after
/// `limit`.
pub fn wait_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `pid` is running: it exists and is not a zombie (an exited
/// process whose parent has not reaped it yet has stopped all the same).
pub fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: sending a signal has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// One process this harness started.
struct Proc {
    child: Child,
    log: PathBuf,
}

/// A router and storage nodes, each a `squall` process; all killed on drop.
pub struct Cluster {
    dir: TempDir,
    config: PathBuf,
    base: u16,
    threads: u16,
    router: Proc,
    nodes: BTreeMap<u64, Proc>,
    /// Processes that exited or were killed, kept for their logs.
    gone: Vec<Proc>,
    /// Node starts so far, so a restarted node logs to a fresh file.
    starts: u32,
    /// Nodes keep their keys under `data/node-ID` of the directory.
    durable: bool,
}

impl Cluster {
    /// A router and nodes `1..=nodes` with `threads` threads each and
    /// `global` replicas per key; returns once every process agrees all
    /// nodes are up and a put and a get went through.
    pub fn start(nodes: u64, threads: u16, global: u8) -> Cluster {
        Cluster::start_with(nodes, threads, global, "")
    }

    /// [`Cluster::start`] with `extra` appended to the config file (further
    /// sections, such as `[limits]`).
    pub fn start_with(nodes: u64, threads: u16, global: u8, extra: &str) -> Cluster {
        Cluster::start_as(nodes, threads, config_toml(global) + extra, false)
    }

    /// [`Cluster::start`] of nodes that keep their keys on disk
    /// (`--data-dir`), each in `data/node-ID` of the test's directory, the
    /// same when a node starts again; each keeps at most `memory_bytes` of
    /// keys in memory (0: all).
    pub fn start_durable(nodes: u64, threads: u16, global: u8, memory_bytes: usize) -> Cluster {
        let budget = format!("[storage]\nmemory_bytes = {memory_bytes}\n");
        let config = config_toml(global).replacen("[storage]\n", &budget, 1);
        Cluster::start_as(nodes, threads, config, true)
    }

    pub fn start_as(nodes: u64, threads: u16, text: String, durable: bool) -> Cluster {
        assert!(threads <= 10, "node ports are 10 apart");
        let dir = tempfile::Builder::new()
            .prefix("squall-test-")
            .tempdir()
            .expect("temporary directory");
        let config = dir.path().join("squall.toml");
        std::fs::write(&config, text).expect("writing the config");
        write_cluster_key(dir.path());
        let base = reserve_ports();
        let router = spawn(
            dir.path(),
            &config,
            "router",
            &["route", "--host", "127.0.0.1", "--port", &base.to_string()],
        );
        let mut cluster = Cluster {
            dir,
            config,
            base,
            threads,
            router,
            nodes: BTreeMap::new(),
            gone: Vec::new(),
            starts: 0,
            durable,
        };
        for id in 1..=nodes {
            cluster.start_node(id);
        }
        let ids: Vec<u64> = (1..=nodes).collect();
        cluster.wait_live(&ids);
        cluster.wait_serving();
        cluster
    }

    /// The test's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The router's address.
    pub fn router(&self) -> Address {
        Address(format!("tcp://127.0.0.1:{}", self.base))
    }

    /// The thread addresses of node `id`.
    pub fn node_threads(&self, id: u64) -> Vec<Address> {
        let first = self.base + 10 * u16::try_from(id).expect("small node id");
        (0..self.threads)
            .map(|t| Address(format!("tcp://127.0.0.1:{}", first + t)))
            .collect()
    }

    /// Counter `name` summed over every thread of `nodes`, as each thread
    /// answers its status.
    pub fn threads_counter(&self, probe: &mut Probe, nodes: &[u64], name: &str) -> u64 {
        let threads: Vec<Address> = nodes.iter().flat_map(|&id| self.node_threads(id)).collect();
        threads
            .iter()
            .map(|t| {
                probe
                    .counter(t, name)
                    .expect("the thread answers its status")
            })
            .sum()
    }

    /// Every socket of the cluster: the router's, then every node thread's.
    pub fn all_sockets(&self) -> Vec<Address> {
        let mut all = vec![self.router()];
        for id in self.nodes.keys() {
            all.extend(self.node_threads(*id));
        }
        all
    }

    /// A client of this cluster.
    pub fn client(&self, config: ClientConfig) -> Client {
        Client::connect(vec![self.router()], config).expect("client binds a loopback port")
    }

    /// Starts `squall kvs --id id` (again, after a kill: same ports).
    pub fn start_node(&mut self, id: u64) {
        assert!(
            (1..PORT_BLOCK as u64 / 10).contains(&id),
            "node ids fit the port block"
        );
        assert!(
            !self.nodes.contains_key(&id),
            "node {id} is already running"
        );
        let port = self.node_threads(id)[0]
            .as_str()
            .rsplit(':')
            .next()
            .expect("port")
            .to_string();
        let name = format!("node-{id}-{}", self.starts);
        self.starts += 1;
        let (id_text, threads) = (id.to_string(), self.threads.to_string());
        let router = self.router();
        let mut args = vec![
            "kvs",
            "--id",
            &id_text,
            "--threads",
            &threads,
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--router",
            router.as_str(),
        ];
        let data = self.data_dir(id).display().to_string();
        if self.durable {
            args.extend(["--data-dir", &data]);
        }
        let proc = spawn(self.dir.path(), &self.config, &name, &args);
        self.nodes.insert(id, proc);
    }

    /// Where node `id` keeps its keys, if the cluster is durable.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join("data").join(format!("node-{id}"))
    }

    /// `kill -9` node `id` and reaps it.
    pub fn kill_node(&mut self, id: u64) {
        let mut proc = self.nodes.remove(&id).expect("node is running");
        proc.child.kill().expect("SIGKILL");
        proc.child.wait().expect("reaping the killed node");
        self.gone.push(proc);
    }

    /// Sends `sig` to running node `id` (SIGSTOP and SIGCONT stall and
    /// resume it).
    pub fn signal_node(&self, id: u64, sig: libc::c_int) {
        signal(self.nodes[&id].child.id(), sig);
    }

    /// Sends SIGTERM to node `id` without waiting.
    pub fn terminate_node(&mut self, id: u64) {
        signal(self.nodes[&id].child.id(), libc::SIGTERM);
    }

    /// Waits for node `id` to exit by itself; returns how it exited.
    pub fn wait_node_exit(&mut self, id: u64, limit: Duration) -> ExitStatus {
        let proc = self.nodes.get_mut(&id).expect("node was started");
        let status = wait_until(&format!("node {id} to exit"), limit, || {
            proc.child.try_wait().expect("polling a child")
        });
        let proc = self.nodes.remove(&id).expect("node was started");
        self.gone.push(proc);
        status
    }

    /// Panics unless the router and every node not stopped on purpose are
    /// still running.
    pub fn assert_all_running(&mut self) {
        let mut dead = Vec::new();
        if let Some(s) = self.router.child.try_wait().expect("polling") {
            dead.push(format!("router ({s})"));
        }
        for (id, p) in &mut self.nodes {
            if let Some(s) = p.child.try_wait().expect("polling") {
                dead.push(format!("node {id} ({s})"));
            }
        }
        assert!(dead.is_empty(), "processes died: {}", dead.join(", "));
    }

    /// The router's log so far.
    pub fn router_log(&self) -> String {
        std::fs::read_to_string(&self.router.log).unwrap_or_default()
    }

    /// The log so far of running node `id`.
    pub fn node_log(&self, id: u64) -> String {
        std::fs::read_to_string(&self.nodes[&id].log).unwrap_or_default()
    }

    /// The ids of the nodes started and not stopped.
    pub fn running_nodes(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// What the router sees now.
    pub fn router_view(&self) -> ClusterState {
        let mut probe = Probe::new();
        wait_until("the router's status", Duration::from_secs(5), || {
            probe.status(&self.router(), Duration::from_millis(500))
        })
    }

    /// Waits until the router sees exactly the nodes `ids` up, and every
    /// thread of those nodes sees the same membership.
    pub fn wait_live(&self, ids: &[u64]) {
        let want: BTreeSet<NodeId> = ids.iter().map(|&i| NodeId(i)).collect();
        let mut probe = Probe::new();
        wait_until(
            &format!("nodes {ids:?} up and agreed on"),
            Duration::from_secs(15),
            || {
                let seen = probe.status(&self.router(), Duration::from_millis(500))?;
                let live: BTreeSet<NodeId> = seen.live_nodes().map(|(id, _)| id).collect();
                if live != want {
                    return None;
                }
                for id in ids {
                    for t in self.node_threads(*id) {
                        let theirs = probe.status(&t, Duration::from_millis(500))?;
                        if theirs != seen {
                            return None;
                        }
                    }
                }
                Some(())
            },
        );
    }

    /// Waits until a put and a get through a fresh client succeed.
    pub fn wait_serving(&self) {
        let mut client = self.client(client_config());
        wait_until(
            "a put and a get to succeed",
            Duration::from_secs(10),
            || {
                let ok = client.put_lww("__probe", b"ready".to_vec()).is_ok()
                    && matches!(client.get("__probe"), Ok(Some(_)));
                ok.then_some(())
            },
        );
    }
}

fn spawn(dir: &Path, config: &Path, name: &str, args: &[&str]) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("creating a log file");
    let child = Command::new(SQUALL)
        .env_remove("SQUALL_CONFIG")
        .env_remove("SQUALL_STATE_DIR")
        .env_remove("SQUALL_KEY_FILE")
        .env_remove("SQUALL_INSECURE")
        .arg("--config")
        .arg(config)
        .arg("--key-file")
        .arg(write_cluster_key(dir))
        .arg("--log")
        .arg("info")
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file handle"))
        .stderr(file)
        .spawn()
        .expect("starting squall");
    Proc { child, log }
}

/// The last `n` lines of `path`.
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let procs = std::iter::once(&mut self.router)
            .chain(self.nodes.values_mut())
            .chain(self.gone.iter_mut());
        let mut logs = Vec::new();
        for p in procs {
            if matches!(p.child.try_wait(), Ok(None)) {
                let _ = p.child.kill();
            }
            let _ = p.child.wait();
            logs.push(p.log.clone());
        }
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!("logs kept in {}", self.dir.path().display());
            for log in logs {
                eprintln!("---- {} (last 30 lines)", log.display());
                for line in tail(&log, 30) {
                    eprintln!("{line}");
                }
            }
        }
    }
}
