//! The one interface the monitor's policies act through: how many nodes of
//! each kind should run, and how many do.
//!
//! A policy decides "three storage nodes"; a provider makes it so, on
//! whatever runs the processes. Kubernetes is one provider
//! ([`crate::kubernetes`]); the local cluster of `squall up` will be another.
//!
//! The trait is synchronous on purpose. Every other Squall driver is a plain
//! thread around a blocking receive, and a local-process provider starts and
//! signals processes without any runtime; a provider that needs async I/O
//! (the Kubernetes one) owns a small runtime and waits on it, each call
//! bounded by a timeout. It is also object-safe, so the monitor can hold a
//! `Box<dyn Provider>` chosen by configuration.

use std::fmt;
use std::time::Duration;

pub use anna::protocol::monitor::NodeKind;

/// How many nodes of a kind there are.
///
/// The two differ while a change is under way: a storage node asked to
/// leave still hands its keys over, a new compute node is still starting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replicas {
    /// What was last asked for.
    pub desired: u32,
    /// What the provider last saw running.
    pub observed: u32,
}

/// Starts and stops nodes of each kind.
///
/// Implementations must make `scale` idempotent (asking twice for the same
/// count changes nothing) and must not block longer than their own
/// documented timeout.
pub trait Provider {
    /// Asks for `replicas` nodes of `kind`, starting or stopping nodes as
    /// needed (a stopped storage node departs gracefully). Returns the counts
    /// as the provider saw them right after the request was accepted.
    fn scale(&self, kind: NodeKind, replicas: u32) -> Result<Replicas, ProviderError>;

    /// The counts of `kind` now.
    fn replicas(&self, kind: NodeKind) -> Result<Replicas, ProviderError>;

    /// Starts again every process of the cluster that died without being
    /// asked to stop (a crash, `kill -9`), as it was; returns one line per
    /// process restarted. The default does nothing: where a controller
    /// restarts what dies (Kubernetes), there is nothing to repair.
    fn repair(&self) -> Result<Vec<String>, ProviderError> {
        Ok(Vec::new())
    }
}

/// What a provider was doing when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Reading the replica count.
    Read,
    /// Changing the replica count to this.
    Scale(u32),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Read => f.write_str("reading the replica count"),
            Action::Scale(n) => write!(f, "scaling to {n} replicas"),
        }
    }
}

/// A provider's failure. Every variant names the workload it concerns (for
/// Kubernetes `statefulset squall/squall-kvs`; for local processes, the
/// kind), so a log line alone says what to look at.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The orchestrator answered and refused: the workload does not exist,
    /// the monitor lacks the permission, the request was invalid.
    #[error("{workload}: {action} refused (HTTP {code} {reason}): {message}")]
    Refused {
        workload: String,
        action: Action,
        /// HTTP status code (404: no such workload; 403: not permitted).
        code: u16,
        /// The machine-readable reason (`NotFound`, `Forbidden`, ...).
        reason: String,
        message: String,
    },
    /// No usable answer: the orchestrator could not be reached, or its
    /// answer could not be read.
    #[error("{workload}: {action} failed: {source}")]
    Failed {
        workload: String,
        action: Action,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No answer within the provider's timeout.
    #[error("{workload}: {action}: no answer within {after:?}")]
    Timeout {
        workload: String,
        action: Action,
        after: Duration,
    },
    /// The answer was well-formed but unusable (no replica count, a
    /// negative one).
    #[error("{workload}: {action}: unusable answer: {what}")]
    Malformed {
        workload: String,
        action: Action,
        what: String,
    },
    /// The count asked for cannot be expressed to this provider.
    #[error("{workload}: cannot scale to {replicas} replicas: {why}")]
    InvalidCount {
        workload: String,
        replicas: u32,
        why: &'static str,
    },
    /// The provider could not be set up (no kubeconfig, bad settings).
    #[error("setting up the {provider} provider: {source}")]
    Setup {
        provider: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
