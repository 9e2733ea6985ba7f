//! [`CacheConfig`]: the `[cache]` section of the config file.

use anna::client::ClientConfig;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Settings of a cache. Every field has a default that runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// How many bytes of values (approximately) the cache holds; beyond
    /// that the least recently used keys are evicted.
    pub capacity_bytes: u64,
    /// How long a subscription lasts, at the KVS (the cache's) and at the
    /// cache (executors'). The cache renews its own every third of it.
    #[serde(with = "anna::config::millis")]
    pub lease: Duration,
    /// How often the cache sends its `CacheReport` to the schedulers.
    #[serde(with = "anna::config::millis")]
    pub report_period: Duration,
    /// Most keys named in one report (the largest held).
    pub report_keys: usize,
    /// The directory (on a `tmpfs`) where values read by this node's
    /// executors are written once and mapped by them (see the crate's
    /// `shared` module); empty: every value is answered in the frame.
    pub shared_dir: String,
    /// Last-writer-wins values of at least this many bytes are answered
    /// in shared memory.
    pub shared_min_bytes: u64,
    /// At most this many bytes of values in shared memory (beyond it the
    /// least recently read are dropped from it first).
    pub shared_bytes: u64,
    /// How the cache's KVS client reads and writes misses and puts.
    pub client: ClientConfig,
    /// The `[limits]` section: functions' writes over `max_value_bytes` or
    /// timestamped past `max_clock_skew` are refused before the cache's
    /// replica takes them. Set by the process from the config file.
    #[serde(skip)]
    pub limits: anna::config::Limits,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            capacity_bytes: 256 << 20,
            lease: Duration::from_secs(10),
            report_period: Duration::from_millis(500),
            report_keys: 1024,
            shared_dir: "/dev/shm".to_string(),
            shared_min_bytes: 64 << 10,
            shared_bytes: 1 << 30,
            client: ClientConfig::default(),
            limits: anna::config::Limits::default(),
        }
    }
}

/// A setting that cannot run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cache.{field}: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: &'static str,
}

impl CacheConfig {
    /// Checks the settings before a cache starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field, reason| Err(ConfigError { field, reason });
        if self.capacity_bytes == 0 {
            return fail("capacity_bytes", "must be above zero");
        }
        if self.lease < Duration::from_millis(30) {
            return fail("lease", "must be at least 30 ms");
        }
        if self.lease > anna::kvs::subscriptions::MAX_LEASE {
            return fail("lease", "must be at most 300000 ms (the KVS's cap)");
        }
        if self.report_period.is_zero() {
            return fail("report_period", "must be above zero");
        }
        Ok(())
    }

    /// The lease in the wire's milliseconds.
    pub(crate) fn lease_ms(&self) -> u32 {
        u32::try_from(self.lease.as_millis()).unwrap_or(u32::MAX)
    }

    /// How often held keys' subscriptions are renewed.
    pub(crate) fn renewal_period(&self) -> Duration {
        self.lease / 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip_through_toml() {
        let config = CacheConfig::default();
        assert_eq!(config.validate(), Ok(()));
        let text = toml::to_string(&config).unwrap();
        assert_eq!(toml::from_str::<CacheConfig>(&text).unwrap(), config);
    }

    #[test]
    fn a_partial_section_takes_defaults_and_unknown_fields_are_refused() {
        let config: CacheConfig =
            toml::from_str("lease = 3000\n[client]\nop_timeout = 900").unwrap();
        assert_eq!(config.lease, Duration::from_secs(3));
        assert_eq!(config.client.op_timeout, Duration::from_millis(900));
        assert_eq!(config.capacity_bytes, CacheConfig::default().capacity_bytes);
        assert!(toml::from_str::<CacheConfig>("leese = 3").is_err());
        let short = CacheConfig {
            lease: Duration::from_millis(3),
            ..CacheConfig::default()
        };
        assert_eq!(short.validate().unwrap_err().field, "lease");
    }
}
