//! Subscriptions in both directions.
//!
//! Upward, the cache subscribes to every key it holds at the key's owner
//! threads, once when it starts holding the key and again every third of
//! the lease; an evicted key is simply no longer renewed and its lease
//! lapses at the owners. Each renewal also refreshes the placement from a
//! router, so after a ring change the next renewal reaches the new owners.
//!
//! Downward, executors subscribe to keys at the cache; every change of a
//! held key (pushed by the KVS, or written through the cache) is pushed to
//! them, batched per executor, as a [`Gossip`] from the cache.

use crate::cache::Cache;
use anna::kvs::subscriptions::{push_batches, PushBatches, Subscribed};
use anna::protocol::compute::Subscribe;
use anna::protocol::{Address, Gossip, Key, Message};
use anna::role::Outbox;
use anna::time::Time;
use std::collections::BTreeMap;

/// Most keys named in one `Subscribe` message.
pub const SUBSCRIBE_BATCH: usize = 1024;

impl Cache {
    /// Subscribes keys held but not yet subscribed whose owners are known;
    /// asks for the placement if some are not.
    pub(crate) fn subscribe_new(&mut self, now: Time, out: &mut Outbox) {
        let keys: Vec<Key> = std::mem::take(&mut self.unsubscribed).into_iter().collect();
        let left = self.subscribe_at_owners(keys, out);
        if !left.is_empty() {
            self.client.refresh_placement(now, out);
        }
        self.unsubscribed.extend(left);
    }

    /// Renews the subscription of every held key.
    pub(crate) fn renew(&mut self, now: Time, out: &mut Outbox) {
        self.next_renewal = now + self.config.renewal_period();
        self.stats.renewals += 1;
        let keys: Vec<Key> = self.store.keys().cloned().collect();
        self.unsubscribed.clear();
        let left = self.subscribe_at_owners(keys, out);
        self.unsubscribed.extend(left);
        self.client.refresh_placement(now, out);
    }

    /// Sends `Subscribe` for `keys` to their owners, one batch per owner;
    /// returns the keys whose owners are not known.
    fn subscribe_at_owners(&mut self, keys: Vec<Key>, out: &mut Outbox) -> Vec<Key> {
        let mut by_owner: BTreeMap<Address, Vec<Key>> = BTreeMap::new();
        let mut unknown = Vec::new();
        for key in keys {
            match self.client.owners(&key) {
                Some(owners) if !owners.is_empty() => {
                    for owner in owners {
                        by_owner.entry(owner).or_default().push(key.clone());
                    }
                }
                _ => unknown.push(key),
            }
        }
        let lease_ms = self.config.lease_ms();
        for (owner, keys) in by_owner {
            for chunk in keys.chunks(SUBSCRIBE_BATCH) {
                self.stats.subscribes_sent += 1;
                out.send(
                    owner.clone(),
                    Message::Subscribe(Subscribe {
                        subscriber: self.me.clone(),
                        keys: chunk.to_vec(),
                        lease_ms,
                    }),
                );
            }
        }
        unknown
    }

    /// Merges pushed states of held keys; others are ignored (an evicted
    /// key's lease has not lapsed yet).
    pub(crate) fn on_gossip(&mut self, gossip: Gossip) {
        self.stats.gossip_in += 1;
        for (key, state) in gossip.entries {
            if self.store.merge_held(&key, state) == Some(true) {
                self.stats.updates += 1;
                self.to_push.insert(key);
            }
        }
    }

    /// An executor subscribes to keys at this cache: it gets the held ones'
    /// states at once and every change until its lease lapses.
    pub(crate) fn on_executor_subscribe(&mut self, now: Time, sub: Subscribe, out: &mut Outbox) {
        let until = now + anna::kvs::subscriptions::lease(sub.lease_ms);
        if self.executors.is_empty() {
            self.next_prune = now + anna::kvs::subscriptions::PRUNE_PERIOD;
        }
        let mut current = Vec::new();
        for key in sub.keys {
            match self.executors.subscribe(&key, &sub.subscriber, until, now) {
                Subscribed::Yes => {
                    if let Some(state) = self.store.peek(&key) {
                        current.push((key, state.clone()));
                    }
                }
                Subscribed::Refused => self.stats.subscriptions_refused += 1,
            }
        }
        if !current.is_empty() {
            let batches = PushBatches::from([(sub.subscriber, current)]);
            self.stats.pushes += push_batches(&self.me, batches, out);
        }
    }

    /// Pushes every held key changed since the last step to its executors.
    pub(crate) fn push_changes(&mut self, now: Time, out: &mut Outbox) {
        let keys = std::mem::take(&mut self.to_push);
        if self.executors.is_empty() {
            return;
        }
        let store = &self.store;
        let batches = self
            .executors
            .batch(keys.iter(), now, |k| store.peek(k).cloned());
        self.stats.pushes += push_batches(&self.me, batches, out);
    }
}
