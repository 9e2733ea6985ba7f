//! Latency histograms and error counts the roles report to the monitor,
//! for `/metrics` and the dashboard: a scheduler's calls ([`CallFigures`],
//! in its `ComputeStatus`) and a KVS client's operations ([`KvsFigures`],
//! a cache's in its `CacheReport`). Every figure counts since its role
//! started; the monitor adds them up across roles.

use super::compute::{CallId, CallTrace};
use crate::histogram::Histogram;
use serde::{Deserialize, Serialize};

/// What a scheduler counted of the calls it placed, since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallFigures {
    /// Per function, calls of that one function (`Call`): from the
    /// scheduler's dispatch to the executor (`Invoke`) to its `CallDone`.
    pub functions: Vec<(String, Histogram)>,
    /// Per DAG (`CallDag`): from dispatch to the `CallDone` of its last
    /// sink.
    pub dags: Vec<(String, Histogram)>,
    /// Calls the scheduler failed itself, by error kind (`Timeout`,
    /// `Overloaded`, `ExecutorDied`, ...), and calls an executor reported
    /// failed (kind `Executor`; the executor's own figures say which).
    pub errors: Vec<(String, u64)>,
    /// Calls failed with `Timeout` (queued, waiting for a DAG, in flight).
    pub timeouts: u64,
    /// Calls dispatched again after an executor died.
    pub redispatches: u64,
    /// Repeated `Call`/`CallDag` of a call in flight: callers' resends.
    pub resends: u64,
    /// The latest traced calls that ended (at most [`RECENT_TRACES`]),
    /// newest first.
    pub traces: Vec<TracedCall>,
    /// Every registered trigger: its runs and the changes waiting for it.
    pub triggers: Vec<TriggerFigures>,
}

/// One trigger as a scheduler sees it: calls it ran (`failures` of them
/// raised), calls that failed for a reason of the cluster and are run
/// again (`retries`), and, as the storage threads last said, changes not
/// yet done (`backlog`) and changes dropped because a backlog was full.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerFigures {
    pub name: String,
    pub function: String,
    pub prefix: String,
    /// `"put"` or `"delete"`.
    pub on: String,
    pub runs: u64,
    pub failures: u64,
    pub retries: u64,
    pub backlog: u64,
    pub dropped: u64,
}

/// How many traced calls a scheduler (and the dashboard) keeps.
pub const RECENT_TRACES: usize = 20;

/// A traced call that ended: which, of what (its function's or DAG's
/// name), whether it failed, and its trace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracedCall {
    pub id: CallId,
    pub name: String,
    pub failed: bool,
    pub trace: CallTrace,
}

/// What a KVS client ([`crate::client::ClientCore`]) counted of its
/// operations, since it started: from the first attempt to the answer
/// (successful or not), per kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvsFigures {
    pub get: Histogram,
    pub put: Histogram,
    pub delete: Histogram,
    /// Attempts sent again (an attempt timed out, a replica was not the
    /// owner, a replica answered an older version).
    pub retries: u64,
    /// Operations that failed at their deadline.
    pub timeouts: u64,
    /// Operations that failed otherwise.
    pub errors: u64,
    /// Reads whose value came in a file of shared memory, mapped
    /// ([`crate::shared`]).
    pub shared: u64,
}
