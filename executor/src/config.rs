//! [`ExecutorConfig`]: the `[executor]` section of the config file.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Settings of one executor process. Every field has a default that runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutorConfig {
    /// How often the executor sends its load report to every scheduler.
    /// Reports are also its heartbeat: a scheduler declares an executor
    /// dead after a few silent periods.
    #[serde(with = "anna::config::millis")]
    pub report_period: Duration,
    /// How long after a call's deadline a function that has not returned
    /// (stuck in C code, where the timeout exception cannot reach it) is
    /// given before the executor sends the timeout error and exits.
    #[serde(with = "anna::config::millis")]
    pub grace: Duration,
    /// How many bytes of function code (pickled or WebAssembly) are kept
    /// loaded and warm; the least recently used functions are dropped
    /// beyond that. One function larger than the bound still runs, alone.
    pub max_warm_bytes: usize,
    /// How many bytes of referenced values are kept between calls (as
    /// stored; decoded afresh for each call); the least recently used are
    /// dropped beyond that. Kept values are dropped when they change.
    pub max_value_bytes: usize,
    /// How many referenced keys the executor stays subscribed to at its
    /// node's cache (to learn when a kept value changes); the least
    /// recently used beyond that are dropped, and their values with them.
    pub max_value_keys: usize,
    /// The call timeout used when a plan carries no deadline.
    #[serde(with = "anna::config::millis")]
    pub default_timeout: Duration,
    /// Extra site-packages directories for the embedded interpreter, added
    /// with `site.addsitedir` after the virtualenv's.
    pub python_path: Vec<PathBuf>,
    /// How many invocations may wait to run; beyond it a call fails with
    /// `Overloaded`.
    pub max_queue: usize,
    /// How many calls of coroutine functions (`async def`) may be in
    /// flight at once on the executor's event loop. A coroutine that
    /// awaits does not hold the worker, so the next call starts meanwhile;
    /// beyond the limit calls of coroutine functions wait in the queue
    /// (plain functions still start). The schedulers count these slots
    /// when they place calls of a coroutine function.
    pub max_async_calls: usize,
    /// How many partly triggered fan-ins (a function waiting for more
    /// upstream results) are held; beyond it new ones are dropped.
    pub max_pending_fanins: usize,
    /// How many `UserMessage`s wait in the mailbox for `user.recv`; newer
    /// ones are dropped beyond it.
    pub mailbox_capacity: usize,
    /// How long a code fetch from the cache waits for an answer before it
    /// is sent again (until the call's deadline).
    #[serde(with = "anna::config::millis")]
    pub fetch_retry: Duration,
    /// The lease of the executor's subscriptions to its warm functions'
    /// keys at the cache; renewed at half of it.
    #[serde(with = "anna::config::millis")]
    pub subscription_lease: Duration,
    /// The most linear memory (bytes) one WebAssembly instance may have;
    /// `memory.grow` beyond it returns -1 and a call that then fails says
    /// so. Every call gets a fresh instance.
    pub wasm_memory_bytes: usize,
    /// The most memory (bytes) the embedded Python interpreter may hold
    /// while a call runs; 0: no cap. An allocation of a Python function
    /// (its code, arguments and result included) that would go past it
    /// fails, the function sees `MemoryError`, and the call fails with an
    /// error naming the cap; the memory comes back as the function unwinds
    /// and the executor keeps serving. Counted through CPython's allocators
    /// (its raw domain and pymalloc's arenas) from the executor's start, so
    /// warm functions, kept referenced values and what a function leaves in
    /// globals count too; memory a C extension takes with `malloc` itself
    /// (numpy arrays' data) does not, and is bounded only by the process's
    /// limit (the container's). The default, 2 GiB, keeps one runaway
    /// function from taking a node's memory while leaving ordinary ones
    /// room; set it to what one executor process may use. Must be 0 or at
    /// least 32 MiB, and more than `max_value_bytes`.
    pub python_memory_bytes: usize,
    /// The user an executor started as root runs as, from before its
    /// interpreter starts: user functions never run as root. Empty: stay
    /// root (not advised). An executor started as another user stays that
    /// user.
    pub run_as: String,
    /// The `[limits]` section: a function result over `max_value_bytes`
    /// fails the call at once (`TooLarge`) instead of a frame too large to
    /// send. Set by the process from the config file's own section.
    #[serde(skip)]
    pub limits: anna::config::Limits,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            report_period: Duration::from_millis(200),
            grace: Duration::from_millis(2000),
            max_warm_bytes: 64 << 20,
            max_value_bytes: 256 << 20,
            max_value_keys: 4096,
            default_timeout: Duration::from_secs(30),
            python_path: Vec::new(),
            max_queue: 1024,
            max_async_calls: 100,
            max_pending_fanins: 1024,
            mailbox_capacity: 1024,
            fetch_retry: Duration::from_millis(500),
            subscription_lease: Duration::from_secs(10),
            wasm_memory_bytes: 64 << 20,
            python_memory_bytes: 2 << 30,
            run_as: "nobody".to_string(),
            limits: anna::config::Limits::default(),
        }
    }
}

/// A setting that cannot run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid [executor] setting `{field}`: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: &'static str,
}

impl ExecutorConfig {
    /// Checks the settings before start.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive: [(&'static str, Duration); 4] = [
            ("report_period", self.report_period),
            ("default_timeout", self.default_timeout),
            ("fetch_retry", self.fetch_retry),
            ("subscription_lease", self.subscription_lease),
        ];
        for (field, d) in positive {
            if d.is_zero() {
                return Err(ConfigError {
                    field,
                    reason: "must be more than 0 ms",
                });
            }
        }
        let counts = [
            ("max_warm_bytes", self.max_warm_bytes),
            ("max_value_bytes", self.max_value_bytes),
            ("max_value_keys", self.max_value_keys),
            ("max_queue", self.max_queue),
            ("max_async_calls", self.max_async_calls),
            ("max_pending_fanins", self.max_pending_fanins),
            ("mailbox_capacity", self.mailbox_capacity),
        ];
        for (field, n) in counts {
            if n == 0 {
                return Err(ConfigError {
                    field,
                    reason: "must be at least 1",
                });
            }
        }
        if self.wasm_memory_bytes < WASM_PAGE {
            return Err(ConfigError {
                field: "wasm_memory_bytes",
                reason: "must be at least 65536 (one WebAssembly page)",
            });
        }
        if self.python_memory_bytes != 0 {
            if self.python_memory_bytes < MIN_PYTHON_MEMORY {
                return Err(ConfigError {
                    field: "python_memory_bytes",
                    reason: "must be 0 (no cap) or at least 33554432 (32 MiB): \
                             the interpreter needs some to run at all",
                });
            }
            if self.python_memory_bytes <= self.max_value_bytes {
                return Err(ConfigError {
                    field: "python_memory_bytes",
                    reason: "must be more than max_value_bytes: kept values live \
                             in the interpreter and count against the cap",
                });
            }
        }
        Ok(())
    }
}

/// The smallest Python memory cap accepted.
const MIN_PYTHON_MEMORY: usize = 32 << 20;

/// The size of a WebAssembly memory page.
const WASM_PAGE: usize = 64 << 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_section_gives_the_defaults() {
        let config: ExecutorConfig = toml::from_str("").unwrap();
        assert_eq!(config, ExecutorConfig::default());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn durations_are_milliseconds_and_unknown_fields_are_refused() {
        let config: ExecutorConfig =
            toml::from_str("report_period = 50\ngrace = 10\npython_path = [\"/x\"]").unwrap();
        assert_eq!(config.report_period, Duration::from_millis(50));
        assert_eq!(config.grace, Duration::from_millis(10));
        assert_eq!(config.python_path, vec![PathBuf::from("/x")]);
        assert!(toml::from_str::<ExecutorConfig>("reprot_period = 5").is_err());
    }

    #[test]
    fn zero_bounds_are_refused() {
        let config = ExecutorConfig {
            max_queue: 0,
            ..ExecutorConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().field, "max_queue");
        let config = ExecutorConfig {
            wasm_memory_bytes: 4096,
            ..ExecutorConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().field, "wasm_memory_bytes");
    }

    #[test]
    fn a_python_memory_cap_is_none_or_room_for_the_interpreter_and_kept_values() {
        let with = |python_memory_bytes, max_value_bytes| ExecutorConfig {
            python_memory_bytes,
            max_value_bytes,
            ..ExecutorConfig::default()
        };
        assert!(with(0, 256 << 20).validate().is_ok());
        assert!(with(64 << 20, 16 << 20).validate().is_ok());
        let small = with(16 << 20, 1 << 20).validate().unwrap_err();
        assert_eq!(small.field, "python_memory_bytes");
        assert!(small.reason.contains("32 MiB"), "{small}");
        let below_values = with(64 << 20, 64 << 20).validate().unwrap_err();
        assert_eq!(below_values.field, "python_memory_bytes");
        assert!(
            below_values.reason.contains("max_value_bytes"),
            "{below_values}"
        );
        let parsed: ExecutorConfig =
            toml::from_str("python_memory_bytes = 0\nmax_value_bytes = 1024").unwrap();
        assert_eq!(parsed.python_memory_bytes, 0);
    }
}
