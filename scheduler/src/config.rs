//! [`SchedulerConfig`]: every setting of a scheduler, with defaults that run.

use anna::client::ClientConfig;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What happens to a call in flight on an executor that died.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Re-plan the whole call on live executors under the same `CallId`
    /// (attempt + 1), at most `max_retries` times, then fail it with
    /// `ExecutorDied`. A function may run more than once: safe for lattice
    /// writes, which are idempotent. The default.
    #[default]
    AtLeastOnce,
    /// Fail the call with `ExecutorDied` at once: no function runs twice.
    AtMostOnce,
}

/// Settings of a scheduler (`[scheduler]` in the config file). Every field
/// has a default that runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// An executor silent this long is declared dead (executors report
    /// about every 200 ms).
    #[serde(with = "anna::config::millis")]
    pub executor_timeout: Duration,
    /// Whether a link of a DAG's chain (a function whose only upstream
    /// function has no other downstream one) runs on its upstream
    /// function's executor (the result passes within the process), or on
    /// another one (`false`: the result crosses a socket; for measuring
    /// that hop, or spreading long chains).
    pub colocate_chains: bool,
    /// How many times a call is re-planned after an executor running it
    /// died, under at-least-once delivery.
    pub max_retries: u32,
    /// At-least-once (retry on executor death) or at-most-once (fail).
    pub delivery: Delivery,
    /// Invocations a scheduler may have outstanding on one executor before
    /// it counts as busy and gets no more.
    pub executor_capacity: u32,
    /// An executor reporting at least this busy fraction (thousandths of
    /// its last report period) counts as busy and gets no more.
    pub busy_permille: u16,
    /// Calls that may wait for a free executor (or for their DAG's
    /// definition); a call beyond fails at once with `Overloaded`.
    pub queue_capacity: usize,
    /// How long a DAG definition read from the KVS is reused before it is
    /// read again (a `DagChanged` message drops it sooner).
    #[serde(with = "anna::config::millis")]
    pub dag_cache_ttl: Duration,
    /// How long past its deadline a call in flight is kept before the
    /// scheduler itself answers `Timeout` (the executor's own timeout
    /// answer usually comes first).
    #[serde(with = "anna::config::millis")]
    pub deadline_grace: Duration,
    /// How often the registered triggers are read from the KVS and their
    /// watches renewed at every storage thread (each lease is three of
    /// these).
    #[serde(with = "anna::config::millis")]
    pub trigger_refresh: Duration,
    /// The timeout of a trigger's call. A change whose call timed out is
    /// sent again after this plus `deadline_grace` plus `trigger_refresh`.
    #[serde(with = "anna::config::millis")]
    pub trigger_timeout: Duration,
    /// The KVS client the scheduler reads DAG definitions (and writes
    /// response keys of calls it fails) with.
    pub client: ClientConfig,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            executor_timeout: Duration::from_millis(1500),
            max_retries: 1,
            colocate_chains: true,
            delivery: Delivery::AtLeastOnce,
            executor_capacity: 16,
            busy_permille: 900,
            queue_capacity: 10_000,
            dag_cache_ttl: Duration::from_secs(10),
            deadline_grace: Duration::from_millis(500),
            trigger_refresh: Duration::from_secs(2),
            trigger_timeout: Duration::from_secs(60),
            client: ClientConfig::default(),
        }
    }
}

/// A setting that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("scheduler.executor_timeout must be positive")]
    ZeroExecutorTimeout,
    #[error("scheduler.executor_capacity must be at least 1")]
    ZeroCapacity,
    #[error("scheduler.busy_permille must be between 1 and 1000, not {0}")]
    BusyPermille(u16),
    #[error("scheduler.trigger_refresh must be positive")]
    ZeroTriggerRefresh,
}

impl SchedulerConfig {
    /// Checks the settings before a scheduler starts with them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.executor_timeout.is_zero() {
            return Err(ConfigError::ZeroExecutorTimeout);
        }
        if self.executor_capacity == 0 {
            return Err(ConfigError::ZeroCapacity);
        }
        if self.busy_permille == 0 || self.busy_permille > 1000 {
            return Err(ConfigError::BusyPermille(self.busy_permille));
        }
        if self.trigger_refresh.is_zero() {
            return Err(ConfigError::ZeroTriggerRefresh);
        }
        Ok(())
    }
}
