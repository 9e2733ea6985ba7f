//! Durability: when a worker's dirty keys reach its store, and the
//! writes that wait for it.
//!
//! A write acknowledged at [`Ack::Durable`](crate::protocol::Ack::Durable)
//! (or any write, under `flush = "always"`) opens a wait that the next
//! sync settles. A worker that owes a sync asks for a tick at once, and the
//! real-time driver delivers a batch of messages before it ticks: one sync
//! acknowledges every durable write of the batch (group commit). Otherwise
//! the dirty keys are written every `flush_period` (and synced, under
//! `periodic`). After a flush, a shard over its memory budget demotes keys
//! to disk only (see `Shard`); a shard over budget with nothing dirty still
//! gets its round every `flush_period`.

use super::shard::FlushPolicy;
use super::StorageWorker;
use crate::protocol::{KvsError, RequestId};
use crate::role::Outbox;
use crate::time::Time;

/// The flush timer and the writes waiting for a sync.
#[derive(Default)]
pub(super) struct Flushes {
    /// When the dirty keys are next written (periodic and never).
    next: Time,
    /// Waits (of `Requests`) settled by the next sync.
    waiting: Vec<RequestId>,
    /// The last store error, while the store keeps failing.
    failing: Option<String>,
}

impl Flushes {
    /// Wait `id` is settled by the next sync.
    pub(super) fn wait_for_sync(&mut self, id: RequestId) {
        self.waiting.push(id);
    }
}

impl StorageWorker {
    /// Whether writes are acknowledged only once on disk (`always`), for
    /// a worker with a store.
    pub(super) fn syncs_every_write(&self) -> bool {
        self.config.flush == FlushPolicy::Always && self.shard.persistent()
    }

    /// When the worker next flushes, if it has anything to flush.
    pub(super) fn next_flush(&self) -> Option<Time> {
        if self.shard.sync_owed() {
            return Some(Time::default());
        }
        (self.shard.has_dirty() || self.shard.over_budget()).then_some(self.flushes.next)
    }

    /// Writes the dirty keys (syncing them if a write waits for it or the
    /// policy says so) and settles the writes that waited.
    pub(super) fn flush(&mut self, now: Time, out: &mut Outbox) {
        let owed = self.shard.sync_owed();
        let due = self.shard.has_dirty() || self.shard.over_budget();
        if !owed && (now < self.flushes.next || !due) {
            return;
        }
        if !owed {
            self.flushes.next = now + self.config.flush_period;
        }
        let sync = owed || self.config.flush != FlushPolicy::Never;
        let result = self.shard.flush(sync);
        match &result {
            Ok(written) => {
                self.stats.flushed_keys += *written as u64;
                if sync {
                    self.stats.syncs += 1;
                }
                if let Some(was) = self.flushes.failing.take() {
                    tracing::info!(error = %was, "the store accepts writes again");
                }
            }
            Err(e) => {
                self.stats.store_errors += 1;
                if self.flushes.failing.is_none() {
                    tracing::error!(error = %e, "writing the shard to its store failed; retrying every flush");
                }
                self.flushes.failing = Some(e.to_string());
                // Retried at the next period, not at once.
                self.flushes.next = now + self.config.flush_period;
            }
        }
        if !sync {
            return;
        }
        let failure = result.err().map(|e| KvsError::NotDurable {
            reason: e.to_string(),
        });
        for id in std::mem::take(&mut self.flushes.waiting) {
            self.finish_sync(id, failure.clone(), out);
        }
        if failure.is_some() {
            // The writes were answered with the error; none waits now.
            self.shard.forgive_sync();
        }
    }
}

#[cfg(test)]
mod tests;
