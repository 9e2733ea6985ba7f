//! What the cache tells others: its [`CacheReport`] to the schedulers every
//! report period (the largest keys held, hits and misses), and its counters
//! in answer to a status request.

use crate::cache::Cache;
use anna::cluster::{ClusterState, ReplicationFactor};
use anna::protocol::compute::CacheReport;
use anna::protocol::{Address, Key, Message, RequestId};
use anna::role::{named_counters, Outbox, TransportStats};
use anna::time::Time;

/// The cache's counters. Plain integers: one thread owns them.
#[derive(Clone, Debug, Default)]
pub struct CacheStats {
    /// Reads answered from the replica.
    pub hits: u64,
    /// Reads that went to the KVS.
    pub misses: u64,
    pub puts: u64,
    pub deletes: u64,
    /// Keys evicted beyond the capacity.
    pub evictions: u64,
    /// Gossip messages received from storage threads.
    pub gossip_in: u64,
    /// Held keys that a received gossip changed.
    pub updates: u64,
    /// Key states pushed to subscribed executors.
    pub pushes: u64,
    /// `Subscribe` messages sent to storage threads.
    pub subscribes_sent: u64,
    /// Renewal rounds.
    pub renewals: u64,
    /// Executor subscriptions refused (a key or the table full).
    pub subscriptions_refused: u64,
    /// KVS operations that failed (timeouts included).
    pub kvs_errors: u64,
    /// Writes refused by the `[limits]` (too large, timestamp too far ahead).
    pub writes_refused: u64,
    /// Reports sent to schedulers.
    pub reports: u64,
    pub unexpected: u64,
    /// The driver's transport counters, as last observed.
    pub transport: TransportStats,
}

impl Cache {
    /// The report the schedulers get: the largest held keys (at most
    /// `report_keys`, largest first), hits and misses.
    pub fn cache_report(&self) -> CacheReport {
        let mut keys: Vec<(Key, u64)> = self.store.sizes().map(|(k, b)| (k.clone(), b)).collect();
        let by_size = |a: &(Key, u64), b: &(Key, u64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0));
        let n = self.config.report_keys;
        if keys.len() > n && n > 0 {
            keys.select_nth_unstable_by(n - 1, by_size);
        }
        keys.truncate(n);
        keys.sort_unstable_by(by_size);
        CacheReport {
            node: self.node.clone(),
            cache: self.me.clone(),
            keys,
            hits: self.stats.hits,
            misses: self.stats.misses,
            kvs: Box::new(self.client.figures().clone()),
        }
    }

    pub(crate) fn report(&mut self, now: Time, out: &mut Outbox) {
        self.next_report = now + self.config.report_period;
        let report = self.cache_report();
        for to in &self.schedulers {
            self.stats.reports += 1;
            out.send(to.clone(), Message::CacheReport(report.clone()));
        }
    }

    /// Every counter by name, for status replies.
    pub fn counters(&self) -> Vec<(String, u64)> {
        let s = &self.stats;
        let own = [
            ("keys", self.store.len() as u64),
            ("bytes", self.store.bytes()),
            ("hits", s.hits),
            ("writes_refused", s.writes_refused),
            ("misses", s.misses),
            ("puts", s.puts),
            ("deletes", s.deletes),
            ("evictions", s.evictions),
            ("gossip_in", s.gossip_in),
            ("updates", s.updates),
            ("pushes", s.pushes),
            ("subscriptions", self.executors.len() as u64),
            ("subscriptions_refused", s.subscriptions_refused),
            ("subscribes_sent", s.subscribes_sent),
            ("renewals", s.renewals),
            ("kvs_in_flight", self.ops.len() as u64),
            ("kvs_errors", s.kvs_errors),
            ("reports", s.reports),
            ("unexpected", s.unexpected),
        ];
        let shared = self.shared.counters();
        named_counters(&[&own[..], &shared[..]].concat(), &s.transport)
    }

    pub(crate) fn on_status(&mut self, id: RequestId, reply_to: Address, out: &mut Outbox) {
        // A cache holds no view of the cluster of its own.
        let none = ReplicationFactor {
            global: 0,
            local: 0,
        };
        let reply = Message::status_reply(
            id,
            &self.me,
            &ClusterState::default(),
            none,
            self.counters(),
        );
        out.send(reply_to, reply);
    }
}
