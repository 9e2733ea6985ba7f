//! What a run does: how many clients, over which keys, reading how often,
//! for how long. One [`Workload`] is given to every backend of a comparison
//! unchanged, so their rows differ only in the store.

use crate::zipf::{KeyChooser, ZipfError};
use std::fmt;
use std::time::Duration;

/// When the measured part of a run ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stop {
    /// After this long (the usual choice: every client runs until then).
    After(Duration),
    /// After this many requests in all, split evenly over the clients.
    Requests(u64),
}

/// A closed-loop key-value workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Client threads, each with its own connection and one request in
    /// flight: the concurrency the store sees.
    pub clients: usize,
    /// Keys `key:000000000000` .. `key:{keys-1}`.
    pub keys: usize,
    /// Zipf exponent of key popularity; 0 is uniform.
    pub zipf: f64,
    /// Bytes of every written value.
    pub value_size: usize,
    /// Fraction of requests that are reads (0 to 1); the rest are writes.
    pub read_ratio: f64,
    /// Keys per request: 1, or that many distinct keys read or written
    /// in one request (Squall's multi-key `get_many`/`put_many`, a Redis
    /// pipeline). Throughput counts keys; latency is per request.
    pub batch: usize,
    /// When measuring ends.
    pub stop: Stop,
    /// Requests run before measuring starts, to warm connections, caches
    /// and the CPU's frequency; not counted.
    pub warmup: Duration,
    /// Write every key once before the clients start, so reads hit.
    pub preload: bool,
    /// Seed of the clients' random choices (client `i` uses `seed + i`), so
    /// every backend sees the same request sequence.
    pub seed: u64,
}

impl Default for Workload {
    /// The standard cell: 100k keys, 100-byte values, uniform, 95%
    /// reads, 16 clients, 5 s after 1 s of warm-up.
    fn default() -> Self {
        Workload {
            clients: 16,
            keys: 100_000,
            zipf: 0.0,
            value_size: 100,
            read_ratio: 0.95,
            batch: 1,
            stop: Stop::After(Duration::from_secs(5)),
            warmup: Duration::from_secs(1),
            preload: true,
            seed: 42,
        }
    }
}

/// Why a workload cannot run.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum WorkloadError {
    #[error("a workload needs at least one client")]
    NoClients,
    #[error("the read ratio must be between 0 and 1, not {0}")]
    BadReadRatio(f64),
    #[error("a run must measure something: give a non-zero duration or request count")]
    NothingToMeasure,
    #[error(
        "a batch of {batch} keys needs at least that many keys, and at least 1 (keys: {keys})"
    )]
    BadBatch { batch: usize, keys: usize },
    #[error(transparent)]
    Keys(#[from] ZipfError),
}

impl Workload {
    /// Checks every field; the key distribution it implies.
    pub fn validate(&self) -> Result<KeyChooser, WorkloadError> {
        if self.clients == 0 {
            return Err(WorkloadError::NoClients);
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return Err(WorkloadError::BadReadRatio(self.read_ratio));
        }
        if self.batch == 0 || (self.keys > 0 && self.batch > self.keys) {
            return Err(WorkloadError::BadBatch {
                batch: self.batch,
                keys: self.keys,
            });
        }
        match self.stop {
            Stop::After(d) if d.is_zero() => return Err(WorkloadError::NothingToMeasure),
            Stop::Requests(0) => return Err(WorkloadError::NothingToMeasure),
            _ => {}
        }
        Ok(KeyChooser::new(self.keys, self.zipf)?)
    }

    /// The name of key `index`, padded like `redis-benchmark -r`'s keys.
    pub fn key_name(index: usize) -> String {
        format!("key:{index:012}")
    }

    /// A short description of the key distribution and mix, e.g.
    /// `zipf 0.99, 95% reads`.
    pub fn label(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.zipf == 0.0 {
            f.write_str("uniform")?;
        } else {
            write!(f, "zipf {}", self.zipf)?;
        }
        write!(f, ", {}% reads", (self.read_ratio * 100.0).round())?;
        if self.batch > 1 {
            write!(f, ", {} keys a request", self.batch)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_workload_is_valid_and_labelled() {
        let w = Workload::default();
        assert_eq!(w.validate().unwrap().keys(), 100_000);
        assert_eq!(w.label(), "uniform, 95% reads");
        let skewed = Workload {
            zipf: 0.99,
            read_ratio: 0.5,
            ..w
        };
        assert_eq!(skewed.label(), "zipf 0.99, 50% reads");
        let batched = Workload {
            batch: 16,
            ..skewed
        };
        assert_eq!(batched.label(), "zipf 0.99, 50% reads, 16 keys a request");
    }

    #[test]
    fn invalid_workloads_are_refused() {
        let w = Workload::default();
        let bad = |w: Workload| w.validate().unwrap_err();
        assert_eq!(
            bad(Workload {
                clients: 0,
                ..w.clone()
            }),
            WorkloadError::NoClients
        );
        assert_eq!(
            bad(Workload {
                read_ratio: 1.5,
                ..w.clone()
            }),
            WorkloadError::BadReadRatio(1.5)
        );
        assert_eq!(
            bad(Workload {
                stop: Stop::Requests(0),
                ..w.clone()
            }),
            WorkloadError::NothingToMeasure
        );
        for (batch, keys) in [(0, 10), (11, 10)] {
            assert_eq!(
                bad(Workload {
                    batch,
                    keys,
                    ..w.clone()
                }),
                WorkloadError::BadBatch { batch, keys }
            );
        }
        assert_eq!(
            bad(Workload { keys: 0, ..w }),
            WorkloadError::Keys(ZipfError::NoKeys)
        );
    }

    #[test]
    fn key_names_sort_in_index_order() {
        assert_eq!(Workload::key_name(42), "key:000000000042");
        assert!(Workload::key_name(9) < Workload::key_name(10));
    }
}
