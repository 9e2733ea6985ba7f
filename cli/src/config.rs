//! The one config file: `squall.toml`.
//!
//! Every section is optional and every field has a default that runs, so an
//! empty file (or none) starts a working local cluster. `deploy/squall.toml`
//! lists every setting with its default and what it does. Flags override
//! the file where both exist.

use anna::client::ClientConfig;
use anna::kvs::WorkerConfig;
use anna::protocol::seal::{valid_client_name, Right, Rights};
use anna::router::RouterConfig;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SquallConfig {
    /// The local cluster `squall up` starts.
    pub cluster: LocalCluster,
    /// Storage workers (`squall kvs`).
    pub storage: WorkerConfig,
    /// Routers (`squall route`). Their replication defaults are the
    /// storage section's.
    pub router: RouterSection,
    /// Clients (`squall kv`, benchmarks, the Python client).
    pub client: ClientConfig,
    /// Schedulers (`squall scheduler`).
    pub scheduler: squall_scheduler::SchedulerConfig,
    /// Compute nodes' caches (`squall cache`).
    pub cache: squall_cache::CacheConfig,
    /// Executors (`squall executor`).
    pub executor: squall_executor::ExecutorConfig,
    /// The monitor (`squall monitor`): statistics and autoscaling policies.
    pub monitor: squall_monitor::MonitorConfig,
    /// Bounds every process enforces: message and value sizes, clock skew.
    pub limits: anna::config::Limits,
    /// Frame authentication and encryption, and the clients' rights.
    pub security: SecuritySection,
}

/// `[security]`: how frames are sealed, and who may do what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecuritySection {
    /// Send and accept open frames: no authentication at all (also
    /// `--insecure`). Every process of a cluster must agree.
    pub insecure: bool,
    /// Encrypt every frame's body (the authentication is the same either
    /// way); costs a pass of ChaCha20 over each frame.
    pub encrypt: bool,
    /// The key file: the cluster's secret for roles
    /// (`STATE_DIR/keys/cluster.key` when empty), a client's key for
    /// `squall kv` (`STATE_DIR/keys/client.key` when empty). `--key-file`
    /// overrides it.
    pub key_file: Option<PathBuf>,
    /// The clients members accept, by name, with their rights: `read`,
    /// `write` (keys outside `__squall/`), `register` (functions and DAGs),
    /// `call`. `squall up` writes `STATE_DIR/keys/client-NAME.key` for each.
    pub clients: std::collections::BTreeMap<String, Vec<Right>>,
}

impl Default for SecuritySection {
    fn default() -> Self {
        SecuritySection {
            insecure: false,
            encrypt: false,
            key_file: None,
            clients: [(DEFAULT_CLIENT.to_string(), Right::ALL.to_vec())].into(),
        }
    }
}

/// The client `squall up` writes `keys/client.key` for when it is
/// configured (else the first client with every right, else the first).
pub const DEFAULT_CLIENT: &str = "admin";

impl SecuritySection {
    /// The clients' rights, as members check them.
    pub fn client_rights(&self) -> std::collections::HashMap<String, Rights> {
        self.clients
            .iter()
            .map(|(name, rights)| (name.clone(), Rights::of(rights)))
            .collect()
    }

    /// The client whose key local tools use by default.
    pub fn default_client(&self) -> Option<&str> {
        if self.clients.contains_key(DEFAULT_CLIENT) {
            return Some(DEFAULT_CLIENT);
        }
        let all = Rights::all();
        self.clients
            .iter()
            .find(|(_, r)| Rights::of(r) == all)
            .or_else(|| self.clients.iter().next())
            .map(|(name, _)| name.as_str())
    }
}

/// Router settings as written in the file (replication comes from
/// `[storage]`, so the two can never disagree).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterSection {
    /// A node silent this long (ms) is declared departed.
    pub failure_timeout: u64,
    /// How often (ms) the whole cluster state is re-sent to everyone.
    pub broadcast_period: u64,
}

impl Default for RouterSection {
    fn default() -> Self {
        let d = RouterConfig::default();
        RouterSection {
            failure_timeout: d.failure_timeout.as_millis() as u64,
            broadcast_period: d.broadcast_period.as_millis() as u64,
        }
    }
}

/// What `squall up` starts, and where.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalCluster {
    /// Router processes.
    pub routers: u16,
    /// Storage node processes.
    pub nodes: u16,
    /// Worker threads per storage node; 0 means one per core.
    pub threads: u16,
    /// Scheduler processes.
    pub schedulers: u16,
    /// Compute nodes: each is one cache process and its executors.
    pub compute_nodes: u16,
    /// Executor processes per compute node (each runs one Python call at
    /// a time).
    pub executors: u16,
    /// The host every process binds and is reached at.
    pub host: String,
    /// Routers listen at `base_port`, `base_port + 1`, ...; schedulers at
    /// `base_port + 50 + s`; storage node `i`'s threads at
    /// `base_port + 100 + 20 * i + t`; compute node `c`'s cache at
    /// `base_port + 400 + 20 * c` and its executor `e` at that `+ 1 + e`;
    /// the monitor at `base_port + 60`, its `/metrics` at `base_port + 61`.
    pub base_port: u16,
    /// Where `squall up` keeps its state file and the processes' logs.
    pub state_dir: PathBuf,
}

impl Default for LocalCluster {
    fn default() -> Self {
        LocalCluster {
            routers: 1,
            nodes: 1,
            threads: 0,
            schedulers: 1,
            compute_nodes: 1,
            executors: 2,
            host: "127.0.0.1".to_string(),
            base_port: 7100,
            state_dir: PathBuf::from(".squall"),
        }
    }
}

impl LocalCluster {
    /// Worker threads per node, with 0 resolved to the core count.
    pub fn threads(&self) -> u16 {
        if self.threads > 0 {
            return self.threads;
        }
        std::thread::available_parallelism()
            .map(|n| u16::try_from(n.get()).unwrap_or(u16::MAX))
            .unwrap_or(1)
    }
}

impl SquallConfig {
    /// Reads `path`, or the defaults if `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let config: SquallConfig = match path {
            None => SquallConfig::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config file {}", p.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("parsing config file {}", p.display()))?
            }
        };
        config.validate()?;
        Ok(config.with_limits_spread())
    }

    /// The `[limits]` section copied into every role's settings (each role
    /// enforces them on its own).
    pub fn with_limits_spread(mut self) -> Self {
        let limits = self.limits;
        self.storage.limits = limits;
        self.client.limits = limits;
        self.cache.limits = limits;
        self.cache.client.limits = limits;
        self.scheduler.client.limits = limits;
        self.executor.limits = limits;
        self
    }

    /// Refuses settings that cannot run.
    pub fn validate(&self) -> Result<()> {
        let r = self.storage.replication;
        if r.global == 0 || r.local == 0 {
            bail!("storage.replication: global and local must be at least 1");
        }
        let positive = [
            (
                "storage.gossip_period",
                self.storage.gossip_period.as_millis(),
            ),
            (
                "storage.anti_entropy_period",
                self.storage.anti_entropy_period.as_millis(),
            ),
            ("storage.ack_timeout", self.storage.ack_timeout.as_millis()),
            (
                "storage.heartbeat_period",
                self.storage.heartbeat_period.as_millis(),
            ),
            (
                "storage.handoff_retry",
                self.storage.handoff_retry.as_millis(),
            ),
            ("storage.stats_epoch", self.storage.stats_epoch.as_millis()),
            (
                "router.broadcast_period",
                u128::from(self.router.broadcast_period),
            ),
            (
                "client.attempt_timeout",
                self.client.attempt_timeout.as_millis(),
            ),
            ("client.op_timeout", self.client.op_timeout.as_millis()),
        ];
        for (name, ms) in positive {
            if ms == 0 {
                bail!("{name} must be at least 1 ms");
            }
        }
        if self.storage.anti_entropy_bytes == 0 {
            bail!("storage.anti_entropy_bytes must be at least 1");
        }
        if u128::from(self.router.failure_timeout) <= self.storage.heartbeat_period.as_millis() {
            bail!(
                "router.failure_timeout ({} ms) must exceed storage.heartbeat_period ({} ms), \
                 or every node is declared failed between two heartbeats",
                self.router.failure_timeout,
                self.storage.heartbeat_period.as_millis()
            );
        }
        if self.cluster.routers == 0 {
            bail!("cluster.routers must be at least 1");
        }
        self.limits.validate().map_err(anyhow::Error::msg)?;
        self.monitor.validate()?;
        if let Some(bad) = self.security.clients.keys().find(|n| !valid_client_name(n)) {
            bail!("security.clients: {bad:?} is not a client name (1 to 64 of A-Z a-z 0-9 _ . -)");
        }
        Ok(())
    }

    /// The router settings, with the storage section's replication.
    pub fn router_config(&self) -> RouterConfig {
        RouterConfig {
            replication: self.storage.replication,
            failure_timeout: std::time::Duration::from_millis(self.router.failure_timeout),
            broadcast_period: std::time::Duration::from_millis(self.router.broadcast_period),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_is_the_defaults() {
        let text = include_str!("../../deploy/squall.toml");
        let parsed: SquallConfig = toml::from_str(text).unwrap();
        assert_eq!(parsed, SquallConfig::default());
    }

    #[test]
    fn an_empty_file_runs_with_defaults() {
        let parsed: SquallConfig = toml::from_str("").unwrap();
        parsed.validate().unwrap();
    }

    #[test]
    fn unknown_settings_are_refused_by_name() {
        let err = toml::from_str::<SquallConfig>("[storage]\ngossip_perod = 5\n").unwrap_err();
        assert!(err.to_string().contains("gossip_perod"), "{err}");
    }

    #[test]
    fn limits_reach_every_role_and_bad_ones_are_refused() {
        let parsed: SquallConfig =
            toml::from_str("[limits]\nmax_value_bytes = 1000\nmax_clock_skew = 2000\n").unwrap();
        parsed.validate().unwrap();
        let spread = parsed.with_limits_spread();
        assert_eq!(spread.storage.limits.max_value_bytes, 1000);
        assert_eq!(spread.cache.limits.max_clock_skew.as_millis(), 2000);
        assert_eq!(spread.client.limits.max_value_bytes, 1000);
        assert_eq!(spread.cache.client.limits.max_value_bytes, 1000);
        let bad: SquallConfig = toml::from_str("[limits]\nmax_value_bytes = 0\n").unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_value_bytes"));
    }

    #[test]
    fn a_failure_timeout_shorter_than_heartbeats_is_refused() {
        let mut c = SquallConfig::default();
        c.router.failure_timeout = 100;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("failure_timeout"));
    }
}
