//! [`MonitorConfig`]: the `[monitor]` section of the config file. Every
//! policy's thresholds live here; every field has a default that runs.
//!
//! Fractions are in thousandths (`busy_high = 700` is 70 %), durations in
//! milliseconds, as everywhere in the file.

use anna::cluster::ReplicationFactor;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Settings of the monitor (`[monitor]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// Whether `squall up` starts a monitor with the local cluster.
    pub enabled: bool,
    /// Statistics are gathered and the policies evaluated this often.
    #[serde(with = "anna::config::millis")]
    pub period: Duration,
    /// Decisions kept for `squall status` and `/metrics`.
    pub events_kept: usize,
    /// KVS elasticity: storage nodes.
    pub storage: TierPolicy,
    /// Executor elasticity: compute nodes (a cache and its executors each).
    pub compute: TierPolicy,
    /// Hot-key replication.
    pub hot_keys: HotKeyPolicy,
    /// Hot functions kept warm on more executors.
    pub hot_functions: HotFunctionPolicy,
    /// Where the Kubernetes provider finds the workloads
    /// (`squall monitor --provider kubernetes`).
    pub kubernetes: crate::kubernetes::KubernetesConfig,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            enabled: true,
            period: Duration::from_secs(1),
            events_kept: 100,
            storage: TierPolicy::default(),
            compute: TierPolicy::default(),
            hot_keys: HotKeyPolicy::default(),
            hot_functions: HotFunctionPolicy::default(),
            kubernetes: crate::kubernetes::KubernetesConfig::default(),
        }
    }
}

/// When to add and remove nodes of one tier.
///
/// A tier is over its high mark when its average busy fraction (storage
/// threads' time handling messages; executors' time running functions) is
/// at or above `busy_high`, or, for storage, the bytes held are at or above
/// `memory_high` of `node_capacity_bytes` per node. It is under its low mark
/// when the busy fraction is at or below `busy_low` and (storage) the bytes
/// at or below `memory_low`. A node is added once the tier has stayed over
/// its high mark for `sustain`, and removed once it has stayed under its
/// low mark for `sustain_low`; after any change of the tier nothing more is
/// done for `grace` (the new node joins, keys move, figures settle).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierPolicy {
    pub enabled: bool,
    /// Never fewer nodes than this (the monitor removes only nodes above it).
    pub min_nodes: u32,
    /// Never more nodes than this.
    pub max_nodes: u32,
    pub busy_high: u16,
    pub busy_low: u16,
    /// Storage only: fraction of `node_capacity_bytes`, in thousandths.
    pub memory_high: u16,
    pub memory_low: u16,
    /// Storage only: the bytes one node is meant to hold.
    pub node_capacity_bytes: u64,
    /// Storage with a memory budget (`[storage] memory_bytes`) only: a
    /// memory tier at `memory_high` of its budget is over the high mark when
    /// at least this share of reads and writes (thousandths) found their
    /// key on disk only.
    pub disk_reads_high: u16,
    #[serde(with = "anna::config::millis")]
    pub sustain: Duration,
    #[serde(with = "anna::config::millis")]
    pub sustain_low: Duration,
    #[serde(with = "anna::config::millis")]
    pub grace: Duration,
}

impl Default for TierPolicy {
    fn default() -> Self {
        TierPolicy {
            enabled: true,
            min_nodes: 1,
            max_nodes: 4,
            busy_high: 700,
            busy_low: 100,
            memory_high: 800,
            memory_low: 300,
            node_capacity_bytes: 1 << 30,
            disk_reads_high: 100,
            sustain: Duration::from_secs(5),
            sustain_low: Duration::from_secs(30),
            grace: Duration::from_secs(15),
        }
    }
}

/// When a key is hot, and what it then gets.
///
/// A key is hot when, over one statistics epoch, it was accessed at least
/// `multiple` times the mean accesses per key held and at least
/// `min_per_second` times a second. A hot key's replication factor is
/// raised to `replication` (capped by the live nodes and threads), so its
/// reads spread over more replicas; once it has stayed below
/// `multiple / 2` times the mean for `cool_after`, its override is removed
/// and it returns to the default factor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HotKeyPolicy {
    pub enabled: bool,
    pub multiple: u32,
    pub min_per_second: u32,
    pub replication: ReplicationFactor,
    #[serde(with = "anna::config::millis")]
    pub cool_after: Duration,
    /// At most this many keys raised at once.
    pub max_keys: usize,
}

impl Default for HotKeyPolicy {
    fn default() -> Self {
        HotKeyPolicy {
            enabled: true,
            multiple: 10,
            min_per_second: 100,
            replication: ReplicationFactor {
                global: 3,
                local: 2,
            },
            cool_after: Duration::from_secs(30),
            max_keys: 64,
        }
    }
}

/// When a function is hot: it completed at least `min_per_second` calls a
/// second over the last period, summed over executors. A hot function is
/// preloaded (`Prewarm`) on every executor not yet warm with it, at most
/// once per `grace`, so the schedulers, which prefer warm executors, spread
/// its calls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HotFunctionPolicy {
    pub enabled: bool,
    pub min_per_second: u32,
    #[serde(with = "anna::config::millis")]
    pub grace: Duration,
}

impl Default for HotFunctionPolicy {
    fn default() -> Self {
        HotFunctionPolicy {
            enabled: true,
            min_per_second: 50,
            grace: Duration::from_secs(10),
        }
    }
}

/// A setting that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("monitor.period must be positive")]
    ZeroPeriod,
    #[error("monitor.{tier}: min_nodes ({min}) must be at least 1 and at most max_nodes ({max})")]
    NodeBounds {
        tier: &'static str,
        min: u32,
        max: u32,
    },
    #[error("monitor.{tier}: {what} must satisfy 0 <= low < high <= 1000 (thousandths)")]
    Marks {
        tier: &'static str,
        what: &'static str,
    },
    #[error("monitor.hot_keys: multiple must be at least 2 and replication factors at least 1")]
    HotKeys,
    #[error("monitor.kubernetes: {0}")]
    Kubernetes(String),
}

impl MonitorConfig {
    /// Checks the settings before a monitor starts with them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.period.is_zero() {
            return Err(ConfigError::ZeroPeriod);
        }
        for (tier, p) in [("storage", &self.storage), ("compute", &self.compute)] {
            if p.min_nodes == 0 || p.min_nodes > p.max_nodes {
                return Err(ConfigError::NodeBounds {
                    tier,
                    min: p.min_nodes,
                    max: p.max_nodes,
                });
            }
            if p.busy_low >= p.busy_high || p.busy_high > 1000 {
                return Err(ConfigError::Marks { tier, what: "busy" });
            }
            if p.memory_low >= p.memory_high || p.memory_high > 1000 {
                return Err(ConfigError::Marks {
                    tier,
                    what: "memory",
                });
            }
        }
        let h = &self.hot_keys;
        if h.multiple < 2 || h.replication.global == 0 || h.replication.local == 0 {
            return Err(ConfigError::HotKeys);
        }
        self.kubernetes.validate().map_err(ConfigError::Kubernetes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_marks_are_named() {
        MonitorConfig::default().validate().unwrap();
        let mut c = MonitorConfig::default();
        c.compute.busy_low = 800;
        assert_eq!(
            c.validate(),
            Err(ConfigError::Marks {
                tier: "compute",
                what: "busy"
            })
        );
        let mut c = MonitorConfig::default();
        c.storage.min_nodes = 5;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("min_nodes (5)"));
    }

    #[test]
    fn an_empty_section_is_the_defaults() {
        let c: MonitorConfig = toml::from_str("").unwrap();
        assert_eq!(c, MonitorConfig::default());
        let c: MonitorConfig = toml::from_str("period = 250\n[storage]\nmax_nodes = 8\n").unwrap();
        assert_eq!(c.period, Duration::from_millis(250));
        assert_eq!(c.storage.max_nodes, 8);
        assert_eq!(c.storage.grace, TierPolicy::default().grace);
    }
}
