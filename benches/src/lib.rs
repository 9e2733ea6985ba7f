//! Load generators and side-by-side comparisons with peers, run on the same
//! machine in the same invocation, because absolute figures drift between
//! runs and only a comparison within one run means anything.
//!
//! The KVS benchmark is a closed-loop load generator in the style of YCSB
//! and `redis-benchmark`: `clients` threads, each with its own connection
//! and one request in flight, read or write keys drawn uniformly or by a
//! Zipf law, and every request's latency goes into an HDR histogram. The
//! same [`Workload`] runs against each backend in turn, and one table shows
//! them side by side with each row's ratio to Redis. The `squall-bench`
//! binary drives it; `benches/RESULTS.md` records what it printed.
//!
//! Backends: [`squall`] (a local Squall cluster the benchmark starts and
//! stops with the `squall` binary), [`redis`] (a `redis-server` the
//! benchmark starts and stops itself) and [`zmq_floor`] (not a store: one
//! ZeroMQ ping per request, the messaging floor under every Squall
//! request).
//!
//! # Layout
//!
//! - [`backend`]: the [`KvBackend`] and [`BackendFactory`] traits, and
//!   [`BackendError`].
//! - [`workload`]: [`Workload`], what a run does.
//! - [`zipf`]: [`KeyChooser`], uniform or Zipf key popularity from a
//!   precomputed CDF.
//! - [`runner`]: [`run`], the closed-loop clients: preload, warm-up,
//!   measurement.
//! - [`interleave`]: [`run_interleaved`], several backends measured in
//!   alternating rounds, so a busy machine skews them alike.
//! - [`report`]: [`Report`], its percentiles, and the comparison [`table`].
//! - [`cluster`]: gossip convergence time, idle CPU and memory of a
//!   Squall cluster.
//! - [`autoscale`]: reaction time of the monitor's autoscaling to a load
//!   spike (storage and compute tiers), throughput and p99 around it.
//! - [`plot`]: line charts over time as hand-written SVG.
//! - [`recovery`]: how long a restarted store takes to serve the keys it
//!   kept on disk (Squall after a clean stop and after SIGKILL, Redis with
//!   an append-only file).
//! - [`cpu`]: how much CPU other processes took during a run, so a row
//!   measured on a busy machine says so.
//! - [`redis`]: RESP2 parser, blocking connection, `redis-server` guard.
//! - [`squall`]: the Squall KVS: a local cluster started with the `squall`
//!   binary, one `anna` client per thread.
//! - [`zmq_floor`]: the ping round-trip "backend".
//! - `src/bin/squall-bench.rs`: the command line, and the standard matrix.

pub mod autoscale;
pub mod backend;
pub mod cluster;
pub mod cpu;
pub mod interleave;
pub mod plot;
pub mod recovery;
pub mod redis;
pub mod report;
pub mod runner;
pub mod squall;
pub mod tiers;
pub mod workload;
pub mod zipf;
pub mod zmq_floor;

pub use backend::{BackendError, BackendFactory, KvBackend};
pub use interleave::{run_interleaved, run_interleaved_pooled, ConnectionPool};
pub use report::{table, Report};
pub use runner::{run, RunError};
pub use workload::{Stop, Workload};
pub use zipf::KeyChooser;
