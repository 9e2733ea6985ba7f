//! Gossip: changed keys go to their other replicas (and subscribers) every
//! gossip period, and a slice of the whole shard goes every anti-entropy
//! period. Received
//! gossip is merged; a key this worker does not own (the sender's ring is
//! newer, or this one's is) is kept and handed on to its owners, never
//! dropped.

use super::StorageWorker;
use crate::cluster::REPLICATION_PREFIX;
use crate::lattice::{KeyState, Lattice};
use crate::protocol::{Address, Gossip, Key, Message, RequestId};
use crate::role::Outbox;
use crate::time::Time;
use std::collections::BTreeMap;

/// Most entries in one gossip message; larger batches are split.
pub const GOSSIP_BATCH: usize = 512;

impl StorageWorker {
    /// Sends every key changed since the last round to its other owners.
    pub(super) fn gossip(&mut self, now: Time, out: &mut Outbox) {
        self.next_gossip = now + self.config.gossip_period;
        self.send_handoffs(now, out);
        if !self.notify.is_empty() {
            // Changed by other replicas' gossip: for subscribers only.
            let changed = &self.changed;
            let notify: Vec<Key> = self
                .notify
                .drain()
                .filter(|k| !changed.contains(k))
                .collect();
            self.push_to_subscribers(now, &notify, out);
        }
        if self.changed.is_empty() {
            return;
        }
        let keys: Vec<Key> = self.changed.drain().collect();
        self.push_to_subscribers(now, &keys, out);
        let batches = self.batch_to_replicas(keys);
        self.send_batches(batches, out);
    }

    /// Re-sends the next slice of the shard to its other owners.
    pub(super) fn anti_entropy(&mut self, now: Time, out: &mut Outbox) {
        self.next_anti_entropy = now + self.config.anti_entropy_period;
        if self.sweep.is_empty() {
            self.sweep = self.shard.keys().cloned().collect();
        }
        let take = self.config.anti_entropy_keys.min(self.sweep.len());
        let keys: Vec<Key> = self.sweep.split_off(self.sweep.len() - take);
        for key in keys.iter().filter(|k| k.starts_with(REPLICATION_PREFIX)) {
            self.announce_replication(key, out);
        }
        let batches = self.batch_to_replicas(keys);
        self.stats.anti_entropy_keys += batches.values().map(Vec::len).sum::<usize>() as u64;
        self.send_batches(batches, out);
    }

    /// Groups the states of `keys` (those still held and owned) by the other
    /// owners they go to.
    fn batch_to_replicas(&mut self, keys: Vec<Key>) -> BTreeMap<Address, Vec<(Key, KeyState)>> {
        let mut batches: BTreeMap<Address, Vec<(Key, KeyState)>> = BTreeMap::new();
        let mut owners = std::mem::take(&mut self.scratch);
        for key in keys {
            let Some(state) = self.shard.get(&key) else {
                continue;
            };
            if !self.owns(&key) {
                continue;
            }
            self.placement.owners_into(&key, &mut owners);
            for to in owners.iter().filter(|a| **a != self.me) {
                batches
                    .entry(to.clone())
                    .or_default()
                    .push((key.clone(), state.clone()));
            }
        }
        self.scratch = owners;
        batches
    }

    fn send_batches(&mut self, batches: BTreeMap<Address, Vec<(Key, KeyState)>>, out: &mut Outbox) {
        for (to, mut entries) in batches {
            while !entries.is_empty() {
                let rest = entries.split_off(entries.len().min(GOSSIP_BATCH));
                self.stats.gossip_out += 1;
                out.send(
                    to.clone(),
                    Message::Gossip(Gossip {
                        from: self.me.clone(),
                        entries,
                        ack: None,
                    }),
                );
                entries = rest;
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
        for (key, state) in entries {
            let owned = self.owns(&key);
            let entry = self.shard.entry(key.clone()).or_default();
            let changed = entry.merge(state);
            if owned {
                if changed {
                    self.announce_replication(&key, out);
                    self.note_for_subscribers(&key);
                    if let Some(leave) = &mut self.leave {
                        leave.dirty.insert(key);
                    }
                }
            } else if let Some(leave) = &mut self.leave {
                // Leaving: pass it on with everything else.
                leave.dirty.insert(key);
            } else if self.outstanding.contains_key(&key) {
                // Already being handed on: send the news too.
                if changed {
                    self.to_handoff.insert(key);
                }
            } else {
                // Probably sent under a ring this worker has not seen yet:
                // keep it a while before handing it to the owners it knows.
                self.strand(now, key);
            }
        }
        if let Some(id) = ack {
            out.send(
                from,
                Message::GossipAck {
                    id,
                    from: self.me.clone(),
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
        if let Some(handoff) = self.handoffs.remove(&id) {
            self.handoff_acked(now, handoff.keys);
            return;
        }
        let Some(wait) = self.waits.get_mut(&id) else {
            return;
        };
        let super::WaitFor::Acks { wanted, got, .. } = &mut wait.what else {
            return;
        };
        got.insert(from);
        if got.len() >= *wanted {
            self.finish_wait(id, out);
        }
    }
}
