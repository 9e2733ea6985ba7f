//! Key subscriptions: caches ask a key's owner threads to push them every
//! change of the key for a lease ([`crate::protocol::compute::Subscribe`]).
//!
//! A worker records, for each key it owns, who subscribed and until when.
//! Every gossip round, the merged state of each changed key also goes to its
//! live subscribers, batched per subscriber as one [`Gossip`] without
//! acknowledgement. A new subscription is answered at once with the current
//! states of the keys held, so a write landing between a cache's read and
//! its subscription is not missed. Keys the worker does not own are ignored:
//! the subscriber re-subscribes at the owners it knows on renewal.
//!
//! Everything is bounded: at most [`MAX_SUBSCRIBERS_PER_KEY`] subscribers
//! per key and [`MAX_SUBSCRIBED_KEYS`] keys, leases are capped at
//! [`MAX_LEASE`], and lapsed subscriptions are pruned every
//! [`PRUNE_PERIOD`]. [`Subscribers`] is the table itself, public so that a
//! cache keeps its executors' subscriptions the same way.

use super::gossip::GOSSIP_BATCH;
use super::StorageWorker;
use crate::lattice::KeyState;
use crate::protocol::compute::Subscribe;
use crate::protocol::{Address, Gossip, Key, Message};
use crate::role::{Outbox, StableHashMap, StableHashSet};
use crate::time::Time;
use std::collections::BTreeMap;
use std::time::Duration;

/// Most subscribers one key keeps; further ones are refused until some lapse.
pub const MAX_SUBSCRIBERS_PER_KEY: usize = 64;
/// Most keys with subscribers one table keeps.
pub const MAX_SUBSCRIBED_KEYS: usize = 100_000;
/// The longest lease granted, whatever is asked.
pub const MAX_LEASE: Duration = Duration::from_secs(300);
/// How often lapsed subscriptions are removed.
pub const PRUNE_PERIOD: Duration = Duration::from_secs(1);

/// Who is subscribed to which key, and until when.
#[derive(Debug, Default)]
pub struct Subscribers {
    by_key: StableHashMap<Key, Vec<(Address, Time)>>,
    live: usize,
}

/// Whether a subscription was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscribed {
    /// New, or an existing one renewed.
    Yes,
    /// The key, or the table, is full.
    Refused,
}

impl Subscribers {
    /// Subscribes `who` to `key` until `until` (renewing an existing
    /// subscription, never shortening it).
    pub fn subscribe(&mut self, key: &str, who: &Address, until: Time, now: Time) -> Subscribed {
        if !self.by_key.contains_key(key) && self.by_key.len() >= MAX_SUBSCRIBED_KEYS {
            return Subscribed::Refused;
        }
        let subs = self.by_key.entry(key.to_string()).or_default();
        if let Some((_, t)) = subs.iter_mut().find(|(a, _)| a == who) {
            *t = (*t).max(until);
            return Subscribed::Yes;
        }
        if subs.len() >= MAX_SUBSCRIBERS_PER_KEY {
            let before = subs.len();
            subs.retain(|(_, t)| *t > now);
            self.live -= before - subs.len();
        }
        if subs.len() >= MAX_SUBSCRIBERS_PER_KEY {
            return Subscribed::Refused;
        }
        subs.push((who.clone(), until));
        self.live += 1;
        Subscribed::Yes
    }

    /// The subscribers of `key` whose lease has not lapsed at `now`.
    pub fn live(&self, key: &str, now: Time) -> impl Iterator<Item = &Address> + '_ {
        self.by_key
            .get(key)
            .into_iter()
            .flatten()
            .filter(move |(_, t)| *t > now)
            .map(|(a, _)| a)
    }

    /// Whether `key` has any subscriber, lapsed or not.
    pub fn has(&self, key: &str) -> bool {
        self.by_key.contains_key(key)
    }

    /// Removes every lapsed subscription.
    pub fn prune(&mut self, now: Time) {
        let mut removed = 0;
        self.by_key.retain(|_, subs| {
            let before = subs.len();
            subs.retain(|(_, t)| *t > now);
            removed += before - subs.len();
            !subs.is_empty()
        });
        self.live -= removed;
    }

    /// How many subscriptions are recorded (lapsed ones until pruned).
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether none is recorded.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Groups the states of `keys` (as `state` gives them) by their live
    /// subscribers.
    pub fn batch<'a, I, F>(&self, keys: I, now: Time, mut state: F) -> PushBatches
    where
        I: IntoIterator<Item = &'a Key>,
        F: FnMut(&str) -> Option<KeyState>,
    {
        let mut batches = PushBatches::new();
        for key in keys {
            let mut who = self.live(key, now).peekable();
            if who.peek().is_none() {
                continue;
            }
            let Some(s) = state(key) else {
                continue;
            };
            for to in who {
                batches
                    .entry(to.clone())
                    .or_default()
                    .push((key.clone(), s.clone()));
            }
        }
        batches
    }
}

/// Key states to push, by subscriber.
pub type PushBatches = BTreeMap<Address, Vec<(Key, KeyState)>>;

/// Sends `batches` as gossip from `from` without acknowledgement, at most
/// [`GOSSIP_BATCH`] entries a message; returns how many entries went out.
pub fn push_batches(from: &Address, batches: PushBatches, out: &mut Outbox) -> u64 {
    let mut pushed = 0;
    for (to, mut entries) in batches {
        pushed += entries.len() as u64;
        while !entries.is_empty() {
            let rest = entries.split_off(entries.len().min(GOSSIP_BATCH));
            out.send(
                to.clone(),
                Message::Gossip(Gossip {
                    from: from.clone(),
                    entries,
                    ack: None,
                }),
            );
            entries = rest;
        }
    }
    pushed
}

/// The lease a subscription asking for `lease_ms` gets.
pub fn lease(lease_ms: u32) -> Duration {
    Duration::from_millis(u64::from(lease_ms)).min(MAX_LEASE)
}

/// A worker's subscription state: who is subscribed to which key, the keys
/// whose subscribers are owed a push at the next gossip round, and when
/// lapsed leases are next pruned.
#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    table: Subscribers,
    /// Keys changed by other replicas' gossip, owed to their subscribers.
    notify: StableHashSet<Key>,
    next_prune: Time,
}

impl Subscriptions {
    /// Subscribes `who` to `key` until `until`.
    pub(super) fn subscribe(
        &mut self,
        key: &str,
        who: &Address,
        until: Time,
        now: Time,
    ) -> Subscribed {
        self.table.subscribe(key, who, until, now)
    }

    /// Sends, from `from`, the states `state` gives for `keys` (`None` for
    /// a key not held or not owned) to their live subscribers; returns how
    /// many entries went out.
    pub(super) fn push(
        &self,
        now: Time,
        keys: &[Key],
        from: &Address,
        state: impl FnMut(&str) -> Option<KeyState>,
        out: &mut Outbox,
    ) -> u64 {
        if self.table.is_empty() {
            return 0;
        }
        let batches = self.table.batch(keys, now, state);
        push_batches(from, batches, out)
    }

    /// Whether anyone subscribed to `key`.
    pub(super) fn has(&self, key: &str) -> bool {
        self.table.has(key)
    }

    /// Keys changed by gossip from other replicas: their subscribers hear
    /// of it next round too (a subscriber that missed the sending replica's
    /// push still converges).
    pub(super) fn note(&mut self, key: &Key) {
        if self.table.has(key) {
            self.notify.insert(key.clone());
        }
    }

    /// Whether some subscriber is owed a push of a key noted by [`Self::note`].
    pub(super) fn owed(&self) -> bool {
        !self.notify.is_empty()
    }

    /// Takes the noted keys, less those in `skip` (pushed anyway).
    pub(super) fn take_owed(&mut self, skip: &StableHashSet<Key>) -> Vec<Key> {
        self.notify.drain().filter(|k| !skip.contains(k)).collect()
    }

    /// Drops lapsed subscriptions once per [`PRUNE_PERIOD`].
    pub(super) fn prune(&mut self, now: Time) {
        if now >= self.next_prune {
            self.next_prune = now + PRUNE_PERIOD;
            self.table.prune(now);
        }
    }

    /// When subscriptions next need pruning, if any are recorded.
    pub(super) fn prune_due(&self) -> Option<Time> {
        (!self.table.is_empty()).then_some(self.next_prune)
    }

    /// How many subscriptions are recorded.
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }
}

impl StorageWorker {
    /// Records a subscription to the owned keys among `sub.keys` and sends
    /// the subscriber their current states.
    pub(super) fn on_subscribe(&mut self, now: Time, sub: Subscribe, out: &mut Outbox) {
        self.stats.subscribes += 1;
        let until = now + lease(sub.lease_ms);
        let mut current = Vec::new();
        for key in sub.keys {
            if !self.owns(&key) {
                self.stats.subscriptions_not_mine += 1;
                continue;
            }
            match self.subs.subscribe(&key, &sub.subscriber, until, now) {
                Subscribed::Yes => {
                    if let Some(state) = self.shard.peek(&key) {
                        let state = state.into_owned();
                        current.push((key, state));
                    }
                }
                Subscribed::Refused => self.stats.subscriptions_refused += 1,
            }
        }
        if !current.is_empty() {
            let batches = PushBatches::from([(sub.subscriber, current)]);
            self.stats.subscription_pushes += push_batches(&self.id.me, batches, out);
        }
    }

    /// Sends the held, owned states of `keys` to their live subscribers.
    pub(super) fn push_to_subscribers(&mut self, now: Time, keys: &[Key], out: &mut Outbox) {
        // Read first (a key may have left memory since it changed).
        let mut states: StableHashMap<&str, KeyState> = StableHashMap::default();
        for k in keys {
            if self.owns(k) && self.subs.has(k) {
                if let Some(state) = self.shard.peek(k) {
                    states.insert(k.as_str(), state.into_owned());
                }
            }
        }
        let pushed = self
            .subs
            .push(now, keys, &self.id.me, |k| states.remove(k), out);
        self.stats.subscription_pushes += pushed;
    }

    /// How many subscriptions this worker records.
    pub fn subscriptions(&self) -> usize {
        self.subs.len()
    }
}

#[cfg(test)]
mod tests;
