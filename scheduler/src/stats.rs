//! [`SchedulerStats`]: what a scheduler counts, reported by name in its
//! status replies.

use anna::role::TransportStats;

/// Counters of one scheduler, since it started.
#[derive(Clone, Debug, Default)]
pub struct SchedulerStats {
    /// `Call` messages received.
    pub calls: u64,
    /// `CallDag` messages received.
    pub dag_calls: u64,
    /// `Invoke` messages sent (one per source function per attempt).
    pub invokes: u64,
    /// Calls whose sinks all reported done.
    pub completed: u64,
    /// Calls an executor reported failed.
    pub failed: u64,
    /// Calls re-planned after an executor died.
    pub retries: u64,
    /// Executors declared dead (silent, restarted, or left).
    pub executor_deaths: u64,
    /// Executors that said they were leaving (`ExecutorLeaving`); counted
    /// in `executor_deaths` too.
    pub executors_left: u64,
    /// Calls failed with `ExecutorDied`.
    pub executor_died: u64,
    /// Calls that had to wait in the queue.
    pub queued: u64,
    /// Calls refused with `Overloaded` (queue full).
    pub overloaded: u64,
    /// Queued calls their callers cancelled.
    pub cancelled: u64,
    /// Calls failed with `Timeout` by the scheduler (queued or in flight).
    pub timeouts: u64,
    /// DAG calls refused with `UnknownDag`.
    pub unknown_dags: u64,
    /// DAG calls failed because the stored definition is unusable.
    pub bad_dags: u64,
    /// DAG calls refused with `BadArguments` (a bad DAG shape or argument).
    pub bad_arguments: u64,
    /// DAG definitions read from the KVS.
    pub dag_reads: u64,
    /// DAG calls planned from the cached definition.
    pub dag_cache_hits: u64,
    /// Traffic splits read from the KVS.
    pub split_reads: u64,
    /// Calls of a plain name a split sent to another version.
    pub split_calls: u64,
    /// Splits read that were not a split record (ignored: no split).
    pub bad_splits: u64,
    /// `CallDone`s of an earlier attempt, or of a call no longer in flight.
    pub stale_done: u64,
    /// Repeated `Call`/`CallDag` of a call in flight, and repeated
    /// `CallDone`s: ignored.
    pub duplicates: u64,
    /// Messages a scheduler does not handle, ignored.
    pub unexpected: u64,
    /// The driver's transport counters, as last observed.
    pub transport: TransportStats,
}

impl SchedulerStats {
    /// Every counter by name, for status replies.
    pub fn counters(&self) -> Vec<(String, u64)> {
        let own = [
            ("calls", self.calls),
            ("dag_calls", self.dag_calls),
            ("invokes", self.invokes),
            ("completed", self.completed),
            ("failed", self.failed),
            ("retries", self.retries),
            ("executor_deaths", self.executor_deaths),
            ("executors_left", self.executors_left),
            ("executor_died", self.executor_died),
            ("queued", self.queued),
            ("overloaded", self.overloaded),
            ("cancelled", self.cancelled),
            ("timeouts", self.timeouts),
            ("unknown_dags", self.unknown_dags),
            ("bad_dags", self.bad_dags),
            ("bad_arguments", self.bad_arguments),
            ("dag_reads", self.dag_reads),
            ("dag_cache_hits", self.dag_cache_hits),
            ("split_reads", self.split_reads),
            ("split_calls", self.split_calls),
            ("bad_splits", self.bad_splits),
            ("stale_done", self.stale_done),
            ("duplicates", self.duplicates),
            ("unexpected", self.unexpected),
        ];
        anna::role::named_counters(&own, &self.transport)
    }
}
