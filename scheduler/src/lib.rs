//! The scheduler of the compute tier: places each call, and each function of
//! a DAG, on the executor whose cache already holds the call's data.
//!
//! [`Scheduler`] is a state machine ([`anna::role::Role`]): messages and
//! ticks in, messages out, the time passed in; no socket, clock or random
//! number. A driver (ZeroMQ, or the simulator) runs it.
//!
//! # What it does
//!
//! - **Knows the compute tier** from `ExecutorReport`s (also heartbeats)
//!   and `CacheReport`s (the keys, with sizes, each node's cache holds).
//! - **Plans a call.** A `Call` is a plan of one function; a `CallDag` is
//!   planned from the DAG's definition, read from the KVS with the embedded
//!   [`anna::client::ClientCore`] on a miss, cached for `dag_cache_ttl`
//!   and dropped on `DagChanged`. A `Call` of a function by its plain name
//!   goes to the version its traffic split picks for the call (`NAME@N`),
//!   else to the current one; splits are read and cached the same way
//!   (`splits.rs`). Every function is assigned an executor
//!   once per call, and `Invoke` goes to the executor of each source
//!   function; executors hand results downstream themselves and report
//!   `CallDone`.
//! - **Placement** prefers, among executors that are not overloaded
//!   (`executor_capacity` invocations outstanding, or `busy_permille`
//!   reported), the one whose node's cache holds the most bytes of the
//!   function's referenced keys, then one where the function is warm, then
//!   the least loaded, rotating ties (see `placement.rs`).
//! - **Queue.** When no executor is registered or all are overloaded, a
//!   call waits in a bounded first-in-first-out queue and is dispatched
//!   when capacity frees (a `CallDone`, a report). A queued call past its
//!   deadline fails with `Timeout` ("no executor was free" / "none
//!   registered"); a call arriving at a full queue (`queue_capacity`, which
//!   also bounds calls waiting for a DAG definition) fails at once with
//!   `Overloaded`.
//! - **Retries.** An executor silent for `executor_timeout` is dead, and
//!   so at once is one whose report comes from a new process (a new
//!   `boot`) or one that says it is leaving (`ExecutorLeaving`, sent when
//!   it is told to stop); a later report brings it back as new. By
//!   default delivery is **at-least-once with `max_retries = 1`**: every call
//!   with an unfinished function on it is re-planned whole (every function
//!   re-placed on live executors) under the **same `CallId`**, with
//!   `attempt` one higher, and invoked again; once retries are exhausted it
//!   fails with `ExecutorDied`. Functions may so run twice, which lattice
//!   writes tolerate. With [`Delivery::AtMostOnce`] the call fails with
//!   `ExecutorDied` at once. `CallDone`s of an earlier attempt are ignored
//!   except to free the executor they came from.
//! - **Deadlines.** A call in flight past its deadline (plus
//!   `deadline_grace`) is answered `Timeout` by the scheduler and
//!   forgotten; callers ignore duplicates. Errors the scheduler produces
//!   also go under the call's response key, if it has one.
//!
//! - **Triggers.** Every `trigger_refresh` it reads the registered
//!   triggers and asks every storage thread to send it the changes of
//!   their prefixes (`Watch`); each change (`Changes`) becomes a call of
//!   the trigger's function with the event, and the storage thread
//!   forgets it once the call is answered (`ChangesDone`): at least once.
//!
//! Nothing grows without bound: finished calls are forgotten, the queue is
//! bounded, silent executors and caches are dropped, DAG definitions
//! expire. When idle (no executor known, nothing in flight) it asks for no
//! tick.
//!
//! # Layout
//!
//! - [`config`][]: [`SchedulerConfig`], [`Delivery`].
//! - `scheduler.rs`: [`Scheduler`], its state and its `Role` entry point.
//! - `dispatch.rs`: admitting calls, queueing, invoking, `CallDone`.
//! - `dag_reads.rs`: DAG definitions read through the KVS client;
//!   `splits.rs`: functions' traffic splits, likewise.
//! - `triggers.rs`: triggers: registrations read from the KVS, watches at
//!   the storage threads, a call per change.
//! - `recovery.rs`: executor deaths and deadlines.
//! - `placement.rs`: choosing an executor; `registry.rs`: what is known of
//!   executors and caches.
//! - `plan.rs`: building and checking plans; `calls.rs`: calls in flight;
//!   `records.rs`: the cache of DAG definitions and splits.
//! - [`stats`][]: [`SchedulerStats`]; `figures.rs`: latency histograms
//!   per function and per DAG, errors by kind, for the monitor.

pub mod config;
pub mod stats;

mod calls;
mod dag_reads;
mod dispatch;
mod figures;
mod placement;
mod plan;
mod records;
mod recovery;
mod registry;
mod scheduler;
mod splits;
mod triggers;

pub use config::{ConfigError, Delivery, SchedulerConfig};
pub use scheduler::Scheduler;
pub use stats::SchedulerStats;
