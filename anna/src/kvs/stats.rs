//! A worker's counters and bounded per-epoch access statistics.
//!
//! Access counts live in a map that is emptied every epoch and holds at
//! most [`MAX_TRACKED_KEYS`] keys (further keys are counted in aggregate
//! only), so memory stays flat however long a read load runs. The last
//! complete epoch is kept for the monitor.

use crate::protocol::Key;
use crate::time::Time;
use std::collections::HashMap;
use std::time::Duration;

/// Most distinct keys counted per epoch.
pub const MAX_TRACKED_KEYS: usize = 10_000;

/// Counters of one storage worker. Plain integers: one thread owns them.
#[derive(Clone, Debug, Default)]
pub struct WorkerStats {
    pub gets: u64,
    pub puts: u64,
    pub deletes: u64,
    pub not_mine: u64,
    pub fetches: u64,
    pub gossip_in: u64,
    pub gossip_out: u64,
    pub handoffs_out: u64,
    pub anti_entropy_keys: u64,
    pub unexpected: u64,
    /// `Subscribe` messages received.
    pub subscribes: u64,
    /// Subscriptions refused because a key or the table was full.
    pub subscriptions_refused: u64,
    /// Keys of `Subscribe` messages ignored because this worker does not
    /// own them.
    pub subscriptions_not_mine: u64,
    /// Key states pushed to subscribers.
    pub subscription_pushes: u64,
    /// Replication overrides announced to the routers (from metadata keys).
    pub replication_announcements: u64,
    /// Replication metadata keys holding something other than a factor.
    pub bad_replication_metadata: u64,
    /// The driver's transport counters, as last observed.
    pub transport: crate::role::TransportStats,
    epoch: Duration,
    epoch_start: Time,
    current: HashMap<Key, u32>,
    untracked: u64,
    last: Vec<(Key, u32)>,
}

impl WorkerStats {
    /// Statistics with epochs of `epoch`.
    pub fn new(epoch: Duration) -> Self {
        WorkerStats {
            epoch,
            ..WorkerStats::default()
        }
    }

    /// Counts one access of `key` at `now`.
    pub fn record_access(&mut self, now: Time, key: &str) {
        if now >= self.epoch_start + self.epoch {
            self.rotate(now);
        }
        if let Some(n) = self.current.get_mut(key) {
            *n = n.saturating_add(1);
        } else if self.current.len() < MAX_TRACKED_KEYS {
            self.current.insert(key.to_string(), 1);
        } else {
            self.untracked += 1;
        }
    }

    fn rotate(&mut self, now: Time) {
        let mut counts: Vec<(Key, u32)> = self.current.drain().collect();
        counts.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        counts.truncate(100);
        self.last = counts;
        self.untracked = 0;
        self.epoch_start = now;
    }

    /// The most accessed keys of the last complete epoch, hottest first
    /// (at most 100).
    pub fn hot_keys(&self) -> &[(Key, u32)] {
        &self.last
    }

    /// Every counter by name, for status replies: `keys` held and
    /// `subscriptions` recorded are the worker's to give.
    pub fn counters(&self, keys: usize, subscriptions: usize) -> Vec<(String, u64)> {
        let own = [
            ("keys", keys as u64),
            ("gets", self.gets),
            ("puts", self.puts),
            ("deletes", self.deletes),
            ("not_mine", self.not_mine),
            ("fetches", self.fetches),
            ("gossip_in", self.gossip_in),
            ("gossip_out", self.gossip_out),
            ("handoffs_out", self.handoffs_out),
            ("anti_entropy_keys", self.anti_entropy_keys),
            ("unexpected", self.unexpected),
            ("subscriptions", subscriptions as u64),
            ("subscribes", self.subscribes),
            ("subscriptions_refused", self.subscriptions_refused),
            ("subscriptions_not_mine", self.subscriptions_not_mine),
            ("subscription_pushes", self.subscription_pushes),
            ("replication_announcements", self.replication_announcements),
            ("bad_replication_metadata", self.bad_replication_metadata),
        ];
        crate::role::named_counters(&own, &self.transport)
    }

    /// How many distinct keys the current epoch tracks.
    pub fn tracked_keys(&self) -> usize {
        self.current.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_is_bounded_and_resets_every_epoch() {
        let mut s = WorkerStats::new(Duration::from_secs(1));
        for i in 0..(MAX_TRACKED_KEYS + 500) {
            s.record_access(Time(0), &format!("k{i}"));
        }
        for _ in 0..5 {
            s.record_access(Time(0), "k7");
        }
        assert_eq!(s.tracked_keys(), MAX_TRACKED_KEYS);
        s.record_access(Time(2_000_000), "fresh");
        assert_eq!(s.tracked_keys(), 1);
        assert_eq!(s.hot_keys()[0], ("k7".to_string(), 6));
        assert!(s.hot_keys().len() <= 100);
    }
}
