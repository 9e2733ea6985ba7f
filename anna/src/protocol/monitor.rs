//! Messages of the monitor: statistics from the storage tier, and what the
//! monitor tells `squall status`.
//!
//! The monitor pulls: every period it sends [`crate::protocol::Message::StatsRequest`]
//! to each storage thread the routers list and
//! [`crate::protocol::Message::ComputeStatusRequest`] to each scheduler (which
//! already hold every executor's and cache's latest report). A storage node
//! therefore needs no monitor address, and a restarted monitor loses
//! nothing but one period.

use super::compute::ComputeStatus;
use super::{Address, Key, NodeId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The kinds of node the monitor starts and stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NodeKind {
    /// A storage node (`squall kvs`): one process, several worker threads.
    Storage,
    /// A router (`squall route`).
    Router,
    /// A scheduler (`squall scheduler`).
    Scheduler,
    /// A compute node: one cache (`squall cache`) and the executors
    /// (`squall executor`) that read through it, always placed together.
    Compute,
}

impl NodeKind {
    /// Every kind, in a fixed order.
    pub const ALL: [NodeKind; 4] = [
        NodeKind::Storage,
        NodeKind::Router,
        NodeKind::Scheduler,
        NodeKind::Compute,
    ];
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeKind::Storage => "storage",
            NodeKind::Router => "router",
            NodeKind::Scheduler => "scheduler",
            NodeKind::Compute => "compute",
        })
    }
}

/// One storage thread's statistics, the answer to a `StatsRequest`.
///
/// Access figures cover the last complete epoch (`epoch_ms` long): the
/// thread counts every get and put exactly (`accesses`) and keeps the
/// heaviest keys in a Misra–Gries summary of bounded size, so `hot_keys`
/// counts are lower bounds, each short of the truth by at most
/// `accesses / (summary size + 1)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageReport {
    /// The thread's address (its id).
    pub from: Address,
    pub node: NodeId,
    pub thread: u32,
    /// The epoch the access figures cover, in milliseconds.
    pub epoch_ms: u32,
    /// Keys held now, and their approximate size in bytes (keys and values).
    pub keys: u64,
    pub bytes: u64,
    /// Fraction of the last epoch the thread spent handling messages, in
    /// thousandths.
    pub busy_permille: u16,
    /// Gets, puts and deletes of keys the thread owns, in the last epoch.
    pub accesses: u64,
    /// The heaviest keys of the last epoch, hottest first, with their
    /// access counts (lower bounds).
    pub hot_keys: Vec<(Key, u32)>,
    /// With a memory budget (`[storage] memory_bytes`): the bytes in the
    /// memory tier and the thread's budget; both 0 without one.
    pub memory_bytes: u64,
    pub memory_budget: u64,
    /// Keys on disk only, and their bytes (0 without a budget).
    pub disk_keys: u64,
    pub disk_bytes: u64,
    /// Reads and writes since the previous report that found their key in
    /// memory, and on disk only.
    pub memory_hits: u64,
    pub disk_hits: u64,
}

/// A decision of the monitor, as logged: what it did, why, and the figures
/// behind it (`figures` is a JSON object).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorEvent {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The policy: `storage`, `hot-key`, `compute`, `hot-function`.
    pub policy: String,
    /// What was done: `add-node`, `remove-node`, `raise-replication`, ...
    pub action: String,
    /// Why, in words.
    pub reason: String,
    /// The figures behind it, a JSON object.
    pub figures: String,
}

/// What the monitor sees, the answer to a `MonitorStatusRequest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorStatus {
    /// The latest report of every storage thread.
    pub storage: Vec<StorageReport>,
    /// The compute tier as the schedulers last reported it (merged).
    pub compute: ComputeStatus,
    /// Per node kind (`storage`, `compute`, ...): desired and observed
    /// counts, as the provider last reported them.
    pub replicas: Vec<(String, u32, u32)>,
    /// Keys whose replication the monitor raised: (key, global, local).
    pub raised: Vec<(Key, u32, u32)>,
    /// The most recent decisions, oldest first.
    pub events: Vec<MonitorEvent>,
}
