//! Gossip: changed keys go to their other replicas (and subscribers) every
//! gossip period, and a slice of the whole shard goes every anti-entropy
//! period. Received
//! gossip is merged; a key this worker does not own (the sender's ring is
//! newer, or this one's is) is kept and handed on to its owners, never
//! dropped.
//!
//! Bytes bound both. An anti-entropy slice stops at `anti_entropy_keys`
//! keys or `anti_entropy_bytes` bytes sent, whichever comes first; a key
//! larger than the byte budget goes alone, and the next slice then waits as
//! many periods as the bytes sent are worth, so the shard is swept at no
//! more than the budget per period however large its values: an idle
//! replica of a 60 MB value re-sends it every few minutes, not every
//! period. Every gossip or handoff message is split to stay under half
//! of `[limits] max_message_bytes` ([`split_by_bytes`]).

use super::StorageWorker;
use crate::cluster::REPLICATION_PREFIX;
use crate::lattice::{KeyState, Lattice};
use crate::protocol::{Address, Gossip, Key, Message, RequestId};
use crate::role::{Outbox, StableHashSet};
use crate::time::Time;
use std::collections::BTreeMap;
use std::time::Duration;

/// Most entries in one gossip message; larger batches are split.
pub const GOSSIP_BATCH: usize = 512;

/// Bytes one entry of a gossip message is counted as: its key and
/// [`KeyState::approx_bytes`] (which counts the state's fixed part too).
pub fn entry_bytes(key: &str, state: &KeyState) -> usize {
    key.len() + state.approx_bytes()
}

/// Splits `items` into batches of at most [`GOSSIP_BATCH`] items whose
/// `size`s add up to at most `max_bytes`, in order; an item larger than
/// `max_bytes` goes in a batch of its own.
pub fn split_by_bytes<T>(
    items: Vec<T>,
    max_bytes: usize,
    mut size: impl FnMut(&T) -> usize,
) -> Vec<Vec<T>> {
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0usize;
    for item in items {
        let n = size(&item);
        if !batch.is_empty() && (batch.len() == GOSSIP_BATCH || bytes.saturating_add(n) > max_bytes)
        {
            batches.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes = bytes.saturating_add(n);
        batch.push(item);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

/// A worker's gossip rounds: the keys changed since the last gossip round,
/// what is left of the anti-entropy sweep over the shard, and when each
/// round is next due.
#[derive(Default)]
pub(super) struct Rounds {
    /// Keys written or merged since the last round, for their other
    /// replicas (and subscribers).
    changed: StableHashSet<Key>,
    /// Keys the current anti-entropy pass has yet to re-send.
    sweep: Vec<Key>,
    next_gossip: Time,
    next_anti_entropy: Time,
}

impl Rounds {
    /// `key` changed here: it goes to its other replicas next round.
    pub(super) fn note_changed(&mut self, key: &Key) {
        self.changed.insert(key.clone());
    }

    /// `key` is no longer held: nothing of it to send.
    pub(super) fn forget(&mut self, key: &str) {
        self.changed.remove(key);
    }

    /// Whether some key changed since the last round.
    pub(super) fn has_changed(&self) -> bool {
        !self.changed.is_empty()
    }

    /// Takes the keys changed since the last round.
    fn take_changed(&mut self) -> Vec<Key> {
        self.changed.drain().collect()
    }

    /// When the next gossip round is due.
    pub(super) fn next_gossip(&self) -> Time {
        self.next_gossip
    }

    /// When the next anti-entropy slice is due.
    pub(super) fn next_anti_entropy(&self) -> Time {
        self.next_anti_entropy
    }

    /// After a slice of `bytes` sent at `now`: the next waits one `period`
    /// for every `budget` bytes (or part of it), at least one.
    fn schedule_anti_entropy(&mut self, now: Time, bytes: usize, budget: usize, period: Duration) {
        let periods = u32::try_from(bytes.div_ceil(budget))
            .unwrap_or(u32::MAX)
            .max(1);
        let wait = period.checked_mul(periods).unwrap_or(Duration::MAX);
        self.next_anti_entropy = now + wait;
    }
}

impl StorageWorker {
    /// Sends every key changed since the last round to its other owners.
    pub(super) fn gossip(&mut self, now: Time, out: &mut Outbox) {
        self.rounds.next_gossip = now + self.config.gossip_period;
        self.send_handoffs(now, out);
        if self.subs.owed() {
            // Changed by other replicas' gossip: for subscribers only.
            let notify = self.subs.take_owed(&self.rounds.changed);
            self.push_to_subscribers(now, &notify, out);
        }
        if !self.rounds.has_changed() {
            return;
        }
        let keys = self.rounds.take_changed();
        self.push_to_subscribers(now, &keys, out);
        let batches = self.batch_to_replicas(keys);
        self.send_batches(batches, out);
    }

    /// Re-sends the next slice of the shard to its other owners: at most
    /// `anti_entropy_keys` keys and `anti_entropy_bytes` bytes (a value
    /// counted once per owner it goes to), except that the first key goes
    /// however large it is. A slice over the budget delays the next one by
    /// as many periods as its bytes are worth.
    pub(super) fn anti_entropy(&mut self, now: Time, out: &mut Outbox) {
        if self.rounds.sweep.is_empty() {
            self.rounds.sweep = self.shard.keys().cloned().collect();
        }
        let budget = self.config.anti_entropy_bytes.max(1);
        let mut keys: Vec<Key> = Vec::new();
        let mut bytes = 0usize;
        while keys.len() < self.config.anti_entropy_keys && bytes < budget {
            let Some(key) = self.rounds.sweep.pop() else {
                break;
            };
            let cost = self.resend_bytes(&key);
            if !keys.is_empty() && bytes.saturating_add(cost) > budget {
                // The next round's.
                self.rounds.sweep.push(key);
                break;
            }
            bytes = bytes.saturating_add(cost);
            keys.push(key);
        }
        self.rounds
            .schedule_anti_entropy(now, bytes, budget, self.config.anti_entropy_period);
        for key in keys.iter().filter(|k| k.starts_with(REPLICATION_PREFIX)) {
            self.announce_replication(key, out);
        }
        let batches = self.batch_to_replicas(keys);
        self.stats.anti_entropy_keys += batches.values().map(Vec::len).sum::<usize>() as u64;
        self.send_batches(batches, out);
    }

    /// The bytes anti-entropy sends for `key`: its entry once per other
    /// owner, nothing if it is not held or not owned.
    fn resend_bytes(&mut self, key: &str) -> usize {
        if !self.owns(key) {
            return 0;
        }
        let Some(state) = self.shard.peek(key) else {
            return 0;
        };
        let to = self.ring.other_owners(key, &self.id.me).len();
        entry_bytes(key, &state).saturating_mul(to)
    }

    /// The most bytes of entries one gossip or handoff message carries:
    /// half the frame limit, so a message stays well under it. A single
    /// entry may be larger (a value up to `max_value_bytes` still fits a
    /// frame) and then goes alone.
    pub(super) fn batch_bytes(&self) -> usize {
        (self.config.limits.max_message_bytes / 2).max(1)
    }

    /// Groups the states of `keys` (those still held and owned) by the other
    /// owners they go to.
    fn batch_to_replicas(&mut self, keys: Vec<Key>) -> BTreeMap<Address, Vec<(Key, KeyState)>> {
        let mut batches: BTreeMap<Address, Vec<(Key, KeyState)>> = BTreeMap::new();
        for key in keys {
            if !self.owns(&key) {
                continue;
            }
            // A key on disk only is read for this, not brought into memory.
            let Some(state) = self.shard.peek(&key) else {
                continue;
            };
            for to in self.ring.other_owners(&key, &self.id.me) {
                batches
                    .entry(to.clone())
                    .or_default()
                    .push((key.clone(), state.as_ref().clone()));
            }
        }
        batches
    }

    fn send_batches(&mut self, batches: BTreeMap<Address, Vec<(Key, KeyState)>>, out: &mut Outbox) {
        let max_bytes = self.batch_bytes();
        for (to, entries) in batches {
            for entries in split_by_bytes(entries, max_bytes, |(k, s)| entry_bytes(k, s)) {
                self.stats.gossip_out += 1;
                out.send(
                    to.clone(),
                    Message::Gossip(Gossip {
                        from: self.id.me.clone(),
                        entries,
                        ack: None,
                    }),
                );
            }
        }
    }

    pub(super) fn on_gossip(&mut self, now: Time, gossip: Gossip, out: &mut Outbox) {
        self.stats.gossip_in += 1;
        if self.left() {
            // Everything here has been handed over and this node is about to
            // stop: taking (and acknowledging) data now would lose it.
            return;
        }
        let Gossip { from, entries, ack } = gossip;
        let mut merged_all = true;
        for (key, state) in entries {
            let owned = self.owns(&key);
            let Ok(entry) = self.shard.entry(&key) else {
                // Its disk copy could not be read: merging into nothing
                // would overwrite it. Not acknowledged; sent again later.
                merged_all = false;
                continue;
            };
            let changed = entry.merge(state);
            if owned {
                if changed {
                    self.announce_replication(&key, out);
                    self.subs.note(&key);
                    if let Some(leave) = &mut self.leave {
                        leave.mark_dirty(key);
                    }
                }
            } else if let Some(leave) = &mut self.leave {
                // Leaving: pass it on with everything else.
                leave.mark_dirty(key);
            } else if self.handoffs.in_flight(&key) {
                // Already being handed on: send the news too.
                if changed {
                    self.handoffs.queue(key);
                }
            } else {
                // Probably sent under a ring this worker has not seen yet:
                // keep it a while before handing it to the owners it knows.
                self.handoffs
                    .strand(now, key, self.config.transition_window);
            }
        }
        if let Some(id) = ack.filter(|_| merged_all) {
            out.send(
                from,
                Message::GossipAck {
                    id,
                    from: self.id.me.clone(),
                },
            );
        }
    }

    pub(super) fn on_gossip_ack(
        &mut self,
        now: Time,
        id: RequestId,
        from: Address,
        out: &mut Outbox,
    ) {
        if let Some(keys) = self.handoffs.take_acked(id) {
            self.handoff_acked(now, keys);
            return;
        }
        if self.reqs.acked(id, from) {
            self.finish_wait(now, id, out);
        }
    }
}

#[cfg(test)]
mod tests;
