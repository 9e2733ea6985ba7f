//! Membership seen from a storage worker: joining through the routers,
//! heartbeats (thread 0 speaks for the node), ring changes and key handoff.
//!
//! When the cluster state changes the placement, every held key whose owners
//! changed is sent, as a gossip that asks for an acknowledgement, to the
//! owners that did not have it; a key this worker no longer owns is removed
//! only once every new owner has acknowledged it. Until then it is kept, and
//! for `transition_window` the new owners' reads also ask this worker
//! (`Fetch`), so a moving key is never missing.

use super::{Handoff, StorageWorker};
use crate::cluster::{ClusterState, MemberStatus, Placement};
use crate::lattice::Lattice;
use crate::protocol::{Address, Gossip, Key, Membership, Message};
use crate::role::Outbox;
use crate::role::StableHashSet;
use crate::time::Time;
use std::collections::BTreeMap;

impl StorageWorker {
    pub(super) fn on_membership(&mut self, now: Time, m: Membership, out: &mut Outbox) {
        match m {
            Membership::State(state) => self.merge_cluster(now, state, out),
            other => {
                self.stats.unexpected += 1;
                tracing::debug!(?other, "storage worker ignored a membership message");
            }
        }
    }

    /// Merges a cluster state; on a change of placement, starts moving keys.
    pub fn merge_cluster(&mut self, now: Time, state: ClusterState, out: &mut Outbox) {
        if !self.cluster.merge(state) {
            return;
        }
        let was_joined = self.incarnation.is_some();
        self.incarnation = match self.cluster.member(self.node.id) {
            Some(r) if r.status == MemberStatus::Up(self.node.clone()) => Some(r.incarnation),
            _ => None,
        };
        if self.thread == 0 && was_joined && self.incarnation.is_none() {
            // Declared departed while alive (a partition, a slow heartbeat):
            // rejoin at once rather than at the next heartbeat.
            self.next_heartbeat = now;
        }
        let placement = Placement::new(&self.cluster, self.config.replication);
        let old = std::mem::replace(&mut self.placement, placement);
        self.rehome_keys(&old);
        self.previous = Some((old, now + self.config.transition_window));
        self.send_handoffs(now, out);
    }

    /// After a placement change: queues every held key for the owners that
    /// did not hold it under `old` (new owners, and owners whose node
    /// restarted). Outstanding handoffs are recomputed.
    fn rehome_keys(&mut self, old: &Placement) {
        self.handoffs.clear();
        self.outstanding.clear();
        let mut after = Vec::new();
        for key in self.shard.keys() {
            self.placement.owners_into(key, &mut after);
            let owned = self.incarnation.is_some() && after.contains(&self.me);
            let newcomer = after
                .iter()
                .any(|a| *a != self.me && !old.held_by_same(&self.placement, key, a));
            if !owned || newcomer {
                self.to_handoff.insert(key.clone());
            }
        }
    }

    /// Sends queued keys to the owners that need them: all owners if this
    /// worker no longer owns the key, else only owners it has not yet
    /// handed the key to (new since the last placement).
    pub(super) fn send_handoffs(&mut self, now: Time, out: &mut Outbox) {
        if self.to_handoff.is_empty() {
            return;
        }
        let mut batches: BTreeMap<Address, Vec<Key>> = BTreeMap::new();
        let keys: Vec<Key> = self.to_handoff.drain().collect();
        for key in keys {
            if !self.shard.contains_key(&key) {
                continue;
            }
            let owned = self.owns(&key);
            for to in self.placement.owners(&key) {
                let had_it = owned
                    && self
                        .previous
                        .as_ref()
                        .is_some_and(|(p, _)| p.held_by_same(&self.placement, &key, &to));
                if to != self.me && !had_it {
                    batches.entry(to).or_default().push(key.clone());
                }
            }
        }
        for (target, keys) in batches {
            self.send_handoff(now, target, keys, out);
        }
    }

    fn send_handoff(&mut self, now: Time, target: Address, keys: Vec<Key>, out: &mut Outbox) {
        for chunk in keys.chunks(super::gossip::GOSSIP_BATCH) {
            let id = self.fresh_id();
            let entries = chunk
                .iter()
                .filter_map(|k| self.shard.get(k).map(|s| (k.clone(), s.clone())))
                .collect();
            for k in chunk {
                *self.outstanding.entry(k.clone()).or_default() += 1;
            }
            self.stats.handoffs_out += 1;
            out.send(
                target.clone(),
                Message::Gossip(Gossip {
                    from: self.me.clone(),
                    entries,
                    ack: Some(id),
                }),
            );
            self.handoffs.insert(
                id,
                Handoff {
                    target: target.clone(),
                    keys: chunk.to_vec(),
                    sent: now,
                },
            );
        }
    }

    /// A new owner holds `keys`: those this worker no longer owns and has no
    /// other handoff of outstanding are removed.
    pub(super) fn handoff_acked(&mut self, _now: Time, keys: Vec<Key>) {
        for key in keys {
            let Some(n) = self.outstanding.get_mut(&key) else {
                continue;
            };
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.outstanding.remove(&key);
                if !self.owns(&key) && !self.to_handoff.contains(&key) {
                    self.shard.remove(&key);
                    self.changed.remove(&key);
                }
            }
        }
    }

    /// Resends handoffs unacknowledged for `handoff_retry`, with the current
    /// state, to targets that are still owners; forgets the others (the ring
    /// change that removed them queued the keys again).
    pub(super) fn retry_handoffs(&mut self, now: Time, out: &mut Outbox) {
        let due: Vec<_> = self
            .handoffs
            .iter()
            .filter(|(_, h)| h.sent + self.config.handoff_retry <= now)
            .map(|(id, _)| *id)
            .collect();
        if due.is_empty() {
            return;
        }
        let live: StableHashSet<&Address> = self
            .placement
            .nodes()
            .values()
            .flat_map(|n| n.threads.iter())
            .collect();
        let mut resend: BTreeMap<Address, Vec<Key>> = BTreeMap::new();
        for id in due {
            let Some(h) = self.handoffs.remove(&id) else {
                continue;
            };
            for k in &h.keys {
                if let Some(n) = self.outstanding.get_mut(k) {
                    *n = n.saturating_sub(1);
                }
            }
            if live.contains(&h.target) {
                resend.entry(h.target).or_default().extend(h.keys);
            } else {
                self.to_handoff.extend(h.keys);
            }
        }
        self.outstanding.retain(|_, n| *n > 0);
        for (target, keys) in resend {
            self.send_handoff(now, target, keys, out);
        }
    }

    /// Thread 0: tells the routers the node is alive, or asks to join.
    pub(super) fn heartbeat(&mut self, now: Time, out: &mut Outbox) {
        self.next_heartbeat = now + self.config.heartbeat_period;
        let msg = match self.incarnation {
            Some(incarnation) => Membership::Heartbeat {
                node: self.node.id,
                incarnation,
            },
            None => Membership::Join {
                node: self.node.clone(),
            },
        };
        for r in &self.routers {
            out.send(r.clone(), Message::Membership(msg.clone()));
        }
    }
}
