//! A worker's counters and its per-epoch access statistics.
//!
//! Every access (a get, put or delete of a key the worker owns) is counted
//! exactly in the epoch's total `N`. Which keys are hot is estimated by a
//! Misra–Gries summary ([`HeavyHitters`]) of `k` = [`SUMMARY_COUNTERS`]
//! counters: an access to a counted key increments its counter; a new key
//! takes a free counter; when all `k` are taken, every counter is
//! decremented instead, and those reaching zero are dropped. Each such round
//! discards `k + 1` accesses (one from each counter, and the new one), so
//! there are at most `N / (k + 1)` rounds, which gives the guarantee:
//!
//! - a key's count is a lower bound, short of its true count by at most
//!   `N / (k + 1)`;
//! - so every key accessed more than `N / (k + 1)` times in the epoch is in
//!   the summary (with 1024 counters: any key above ~0.1% of the accesses);
//! - the summary never holds more than `k` keys, whatever the load, and an
//!   access costs amortised O(1): a round costs O(k) and follows at least
//!   `k` accesses that each added one count.
//!
//! Epochs are consecutive windows of `epoch` starting at the first time
//! the worker was stepped. They are closed lazily, whenever the worker is
//! handed a time ([`WorkerStats::advance`]): the epoch before the current
//! one is kept ([`EpochStats`]: total, the [`HOT_KEYS`] hottest keys and the
//! busy fraction), everything older is dropped, so memory stays flat. If
//! whole epochs passed with no input, the last complete epoch is one of
//! them and reports no access.

use crate::protocol::Key;
use crate::role::{StableHashMap, TransportStats};
use crate::time::Time;
use std::cmp::Ordering;
use std::time::Duration;

/// Counters of the Misra–Gries summary: how many keys it can hold.
pub const SUMMARY_COUNTERS: usize = 1024;
/// How many of the hottest keys an epoch keeps and reports.
pub const HOT_KEYS: usize = 100;

/// A Misra–Gries heavy-hitter summary of at most `capacity` keys: see the
/// module documentation for its guarantee.
#[derive(Clone, Debug, Default)]
pub struct HeavyHitters {
    counts: StableHashMap<Key, u32>,
    capacity: usize,
}

impl HeavyHitters {
    /// An empty summary of `capacity` counters (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let mut counts = StableHashMap::default();
        counts.reserve(capacity);
        HeavyHitters { counts, capacity }
    }

    /// Counts one access of `key`.
    pub fn record(&mut self, key: &str) {
        if let Some(n) = self.counts.get_mut(key) {
            *n = n.saturating_add(1);
        } else if self.counts.len() < self.capacity {
            self.counts.insert(key.to_string(), 1);
        } else {
            self.counts.retain(|_, n| {
                *n -= 1;
                *n > 0
            });
        }
    }

    /// The count of `key`: a lower bound of its accesses (0 if not held).
    pub fn count(&self, key: &str) -> u32 {
        self.counts.get(key).copied().unwrap_or(0)
    }

    /// How many keys are counted.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether no key is counted.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Empties the summary into `into` (cleared first), keeping the `n`
    /// highest counts, highest first (ties by key). The summary keeps its
    /// allocation.
    pub fn drain_top(&mut self, n: usize, into: &mut Vec<(Key, u32)>) {
        into.clear();
        into.extend(self.counts.drain());
        let hottest_first =
            |a: &(Key, u32), b: &(Key, u32)| -> Ordering { b.1.cmp(&a.1).then(a.0.cmp(&b.0)) };
        if into.len() > n && n > 0 {
            into.select_nth_unstable_by(n - 1, hottest_first);
        }
        into.truncate(n);
        into.sort_unstable_by(hottest_first);
    }

    /// Forgets every count, keeping the allocation.
    pub fn clear(&mut self) {
        self.counts.clear();
    }
}

/// The figures of one complete epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpochStats {
    /// Accesses counted, exactly.
    pub accesses: u64,
    /// The hottest keys (at most [`HOT_KEYS`]), hottest first, with counts
    /// that are lower bounds.
    pub hot_keys: Vec<(Key, u32)>,
    /// Thousandths of the time between the two rotations that closed the
    /// epoch (one epoch when the worker is stepped steadily) that the
    /// driver reported busy.
    pub busy_permille: u16,
}

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
    /// `StatsRequest` messages answered.
    pub stats_requests: u64,
    /// Times this node learnt it had been declared departed while alive.
    pub rejoins: u64,
    /// Writes refused by the `[limits]` (too large, timestamp too far ahead).
    pub writes_refused: u64,
    /// Keys written to the store (a key changed many times between flushes
    /// counts once).
    pub flushed_keys: u64,
    /// Syncs of the store (each acknowledges every durable write waiting).
    pub syncs: u64,
    /// Flushes that failed (the store refused a write or a sync).
    pub store_errors: u64,
    /// The memory and disk hits as of the last `StorageReport` (each
    /// report carries the hits since the one before).
    pub reported_hits: (u64, u64),
    /// The driver's transport counters, as last observed.
    pub transport: TransportStats,
    epoch: Duration,
    /// The start of the current epoch; `None` until the first time is seen.
    epoch_start: Option<Time>,
    accesses: u64,
    summary: HeavyHitters,
    /// When the last epoch was closed, and the driver's busy time then.
    busy_mark: (Time, u64),
    last: EpochStats,
}

impl WorkerStats {
    /// Statistics with epochs of `epoch`.
    pub fn new(epoch: Duration) -> Self {
        WorkerStats {
            epoch,
            summary: HeavyHitters::new(SUMMARY_COUNTERS),
            last: EpochStats {
                hot_keys: Vec::with_capacity(SUMMARY_COUNTERS),
                ..EpochStats::default()
            },
            ..WorkerStats::default()
        }
    }

    /// The length of an epoch.
    pub fn epoch(&self) -> Duration {
        self.epoch
    }

    /// Counts one access of `key` at `now`.
    pub fn record_access(&mut self, now: Time, key: &str) {
        self.advance(now);
        self.accesses += 1;
        self.summary.record(key);
    }

    /// Closes the current epoch if `now` is past its end. Cheap when it is
    /// not: the worker calls this on every input.
    pub fn advance(&mut self, now: Time) {
        let Some(start) = self.epoch_start else {
            self.epoch_start = Some(now);
            self.busy_mark = (now, self.transport.busy_us);
            return;
        };
        let epoch_us = u64::try_from(self.epoch.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let elapsed = now.as_micros().saturating_sub(start.as_micros());
        if elapsed < epoch_us {
            return;
        }
        let epochs = elapsed / epoch_us;
        if epochs == 1 {
            self.last.accesses = self.accesses;
            self.summary.drain_top(HOT_KEYS, &mut self.last.hot_keys);
        } else {
            self.last.accesses = 0;
            self.last.hot_keys.clear();
            self.summary.clear();
        }
        self.accesses = 0;
        let (marked_at, marked_busy) = self.busy_mark;
        let busy = self.transport.busy_us.saturating_sub(marked_busy);
        self.last.busy_permille = permille(busy, now.as_micros().saturating_sub(marked_at.0));
        self.busy_mark = (now, self.transport.busy_us);
        self.epoch_start = Some(Time(start.as_micros() + epochs * epoch_us));
    }

    /// The last complete epoch.
    pub fn last_epoch(&self) -> &EpochStats {
        &self.last
    }

    /// The most accessed keys of the last complete epoch, hottest first
    /// (at most [`HOT_KEYS`]).
    pub fn hot_keys(&self) -> &[(Key, u32)] {
        &self.last.hot_keys
    }

    /// How many distinct keys the current epoch's summary holds.
    pub fn tracked_keys(&self) -> usize {
        self.summary.len()
    }

    /// Every counter by name, for status replies: `keys` held and
    /// `subscriptions` recorded are the worker's to give.
    pub fn counters(
        &self,
        keys: usize,
        subscriptions: usize,
        tiers: super::shard::TierStats,
    ) -> Vec<(String, u64)> {
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
            ("stats_requests", self.stats_requests),
            ("rejoins", self.rejoins),
            ("writes_refused", self.writes_refused),
            ("flushed_keys", self.flushed_keys),
            ("syncs", self.syncs),
            ("store_errors", self.store_errors),
            ("memory_keys", tiers.memory_keys),
            ("memory_bytes", tiers.memory_bytes),
            ("disk_keys", tiers.disk_keys),
            ("disk_bytes", tiers.disk_bytes),
            ("memory_hits", tiers.memory_hits),
            ("disk_hits", tiers.disk_hits),
            ("demoted", tiers.demoted),
            ("promoted", tiers.promoted),
            ("disk_read_errors", tiers.read_errors),
        ];
        crate::role::named_counters(&own, &self.transport)
    }
}

/// `part / whole` in thousandths, capped at 1000 (0 for an empty whole).
fn permille(part: u64, whole: u64) -> u16 {
    if whole == 0 {
        return 0;
    }
    let p = u128::from(part) * 1000 / u128::from(whole);
    u16::try_from(p.min(1000)).unwrap_or(1000)
}

#[cfg(test)]
mod tests;
