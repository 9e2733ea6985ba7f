//! Answering the monitor's `StatsRequest` with a [`StorageReport`].
//!
//! The access figures and the busy fraction are those of the last complete
//! epoch ([`super::stats`]); the worker closes epochs on every input, the
//! request included, so a report after a quiet spell shows it quiet.

use super::StorageWorker;
use crate::protocol::monitor::StorageReport;
use crate::protocol::{Address, Message, RequestId};
use crate::role::Outbox;

impl StorageWorker {
    pub(super) fn on_stats_request(&mut self, id: RequestId, reply_to: Address, out: &mut Outbox) {
        self.stats.stats_requests += 1;
        let tiers = self.shard.tiers();
        let (memory_before, disk_before) = self.stats.reported_hits;
        self.stats.reported_hits = (tiers.memory_hits, tiers.disk_hits);
        let last = self.stats.last_epoch();
        let budget = self.shard.budget() as u64;
        let report = StorageReport {
            from: self.id.me.clone(),
            node: self.id.node.id,
            thread: self.id.thread,
            epoch_ms: u32::try_from(self.stats.epoch().as_millis()).unwrap_or(u32::MAX),
            keys: self.shard.len() as u64,
            bytes: self.shard_bytes(),
            busy_permille: last.busy_permille,
            accesses: last.accesses,
            hot_keys: last.hot_keys.clone(),
            memory_bytes: if budget > 0 { tiers.memory_bytes } else { 0 },
            memory_budget: budget,
            disk_keys: tiers.disk_keys,
            disk_bytes: tiers.disk_bytes,
            memory_hits: tiers.memory_hits.saturating_sub(memory_before),
            disk_hits: tiers.disk_hits.saturating_sub(disk_before),
        };
        out.send(reply_to, Message::StorageReport { id, report });
    }

    /// The approximate bytes held: every key's length plus
    /// [`crate::lattice::KeyState::approx_bytes`] of its state (a fixed
    /// per-state size plus the value's payload and entries; tombstones
    /// count the fixed size). Computed by walking the shard when asked,
    /// not kept up to date on every write: a walk costs one pass over the
    /// shard, O(keys held + the entries of collection values), and is asked
    /// for about once a second, whereas tracking it would size every merged
    /// value (a whole set or map) twice on the write path.
    fn shard_bytes(&self) -> u64 {
        let memory: u64 = (self.shard.memory().iter())
            .map(|(key, state)| (key.len() + state.approx_bytes()) as u64)
            .sum();
        memory + self.shard.tiers().disk_bytes
    }
}

#[cfg(test)]
mod tests;
