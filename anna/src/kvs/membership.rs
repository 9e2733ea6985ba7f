//! Membership seen from a storage worker: joining through the routers,
//! heartbeats (thread 0 speaks for the node), ring changes and key handoff.
//!
//! When the cluster state changes the placement, every held key whose owners
//! changed is sent, as a gossip that asks for an acknowledgement, to the
//! owners that did not have it; a key this worker no longer owns is removed
//! only once every new owner has acknowledged it. Until then it is kept, and
//! for `transition_window` the new owners' reads also ask this worker
//! (`Fetch`), so a moving key is never missing.

use super::StorageWorker;
use crate::cluster::{ClusterState, MemberStatus, Placement, ReplicationFactor};
use crate::lattice::{KeyState, Lattice};
use crate::protocol::{Address, Gossip, Key, Membership, Message, RequestId};
use crate::role::Outbox;
use crate::role::{StableHashMap, StableHashSet};
use crate::time::Time;
use std::collections::BTreeMap;
use std::time::Duration;

/// An unacknowledged batch of keys handed to a new owner.
struct Handoff {
    target: Address,
    keys: Vec<Key>,
    /// When it is sent again if unacknowledged: `handoff_retry` after the
    /// first send, doubling with every resend up to [`MAX_HANDOFF_WAIT`],
    /// so a receiver slow to merge a large value is not sent it again and
    /// again.
    retry_at: Time,
    /// Sends so far.
    attempts: u32,
}

/// The longest wait before an unacknowledged handoff is sent again.
const MAX_HANDOFF_WAIT: Duration = Duration::from_secs(10);

/// A worker's key handoffs: keys queued for their new owners, batches sent
/// and not yet acknowledged (and how many such batches each key is in), and
/// keys that arrived here unowned ("stranded"), kept a transition window
/// before they are handed on.
#[derive(Default)]
pub(super) struct Handoffs {
    /// Batches sent and not acknowledged, by the id their gossip asks
    /// acknowledged.
    sent: StableHashMap<RequestId, Handoff>,
    /// How many unacknowledged batches each key is in.
    outstanding: StableHashMap<Key, u32>,
    /// Keys to hand over at the next gossip round.
    queued: StableHashSet<Key>,
    /// Keys held unowned, since when.
    stranded: StableHashMap<Key, Time>,
    next_stranded_check: Option<Time>,
}

impl Handoffs {
    /// Whether nothing is queued or unacknowledged.
    pub(super) fn is_idle(&self) -> bool {
        self.sent.is_empty() && self.queued.is_empty()
    }

    /// Whether keys are queued for the next round.
    pub(super) fn queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Whether `key` is in an unacknowledged batch.
    pub(super) fn in_flight(&self, key: &str) -> bool {
        self.outstanding.contains_key(key)
    }

    /// Queues `key` for its owners at the next round.
    pub(super) fn queue(&mut self, key: Key) {
        self.queued.insert(key);
    }

    /// When the next unacknowledged batch is due to be sent again.
    pub(super) fn next_retry(&self) -> Option<Time> {
        self.sent.values().map(|h| h.retry_at).min()
    }

    /// When stranded keys are next looked at.
    pub(super) fn next_stranded_check(&self) -> Option<Time> {
        self.next_stranded_check
    }

    /// Records that `key` arrived at `now` without this worker owning it;
    /// it is looked at again after `window`.
    pub(super) fn strand(&mut self, now: Time, key: Key, window: Duration) {
        self.stranded.entry(key).or_insert(now);
        if self.next_stranded_check.is_none() {
            self.next_stranded_check = Some(now + window);
        }
    }

    /// The keys stranded for a whole `window` by `now`, forgotten as
    /// stranded.
    fn take_stranded(&mut self, now: Time, window: Duration) -> Vec<Key> {
        if self.next_stranded_check.is_none_or(|t| t > now) {
            return Vec::new();
        }
        let due: Vec<Key> = self
            .stranded
            .iter()
            .filter(|(_, since)| **since + window <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &due {
            self.stranded.remove(key);
        }
        self.next_stranded_check = self.stranded.values().min().map(|t| *t + window);
        due
    }

    /// Forgets every batch sent (a new ring queues their keys again).
    fn reset(&mut self) {
        self.sent.clear();
        self.outstanding.clear();
    }

    /// Takes the queued keys.
    fn take_queued(&mut self) -> Vec<Key> {
        self.queued.drain().collect()
    }

    /// Records batch `id` as sent.
    fn record(&mut self, id: RequestId, handoff: Handoff) {
        for k in &handoff.keys {
            *self.outstanding.entry(k.clone()).or_default() += 1;
        }
        self.sent.insert(id, handoff);
    }

    /// The keys of batch `id`, if it was a handoff not yet acknowledged.
    pub(super) fn take_acked(&mut self, id: RequestId) -> Option<Vec<Key>> {
        self.sent.remove(&id).map(|h| h.keys)
    }

    /// Counts a batch of `keys` acknowledged; returns those now in no
    /// unacknowledged batch and not queued again.
    fn settle(&mut self, keys: Vec<Key>) -> Vec<Key> {
        let mut done = Vec::new();
        for key in keys {
            let Some(n) = self.outstanding.get_mut(&key) else {
                continue;
            };
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.outstanding.remove(&key);
                if !self.queued.contains(&key) {
                    done.push(key);
                }
            }
        }
        done
    }

    /// Takes the batches due to be sent again at `now`: those whose target
    /// is still a thread of `placement` come back grouped by target and
    /// next attempt; the keys of the others are queued again (the ring
    /// change that removed the target queued them too).
    fn take_due(&mut self, now: Time, placement: &Placement) -> BTreeMap<(Address, u32), Vec<Key>> {
        let due: Vec<_> = self
            .sent
            .iter()
            .filter(|(_, h)| h.retry_at <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut resend: BTreeMap<(Address, u32), Vec<Key>> = BTreeMap::new();
        if due.is_empty() {
            return resend;
        }
        let live: StableHashSet<&Address> = placement
            .nodes()
            .values()
            .flat_map(|n| n.threads.iter())
            .collect();
        for id in due {
            let Some(h) = self.sent.remove(&id) else {
                continue;
            };
            for k in &h.keys {
                if let Some(n) = self.outstanding.get_mut(k) {
                    *n = n.saturating_sub(1);
                }
            }
            if live.contains(&h.target) {
                resend
                    .entry((h.target, h.attempts + 1))
                    .or_default()
                    .extend(h.keys);
            } else {
                self.queued.extend(h.keys);
            }
        }
        self.outstanding.retain(|_, n| *n > 0);
        resend
    }
}

/// A graceful departure in progress: every key is handed to the owners it
/// will have without this node, then [`crate::protocol::Membership::Left`]
/// is reported.
pub(super) struct Leave {
    reply_to: Address,
    without_me: Placement,
    dirty: StableHashSet<Key>,
    reported: bool,
    /// Said in the log that trigger changes are being delivered first.
    said_triggers: bool,
}

impl Leave {
    /// Whether every key has been handed over and `Left` sent.
    pub(super) fn reported(&self) -> bool {
        self.reported
    }

    /// Whether the departure still has work for the next round.
    pub(super) fn unfinished(&self) -> bool {
        !self.reported || !self.dirty.is_empty()
    }

    /// `key` changed: it must be handed over (again).
    pub(super) fn mark_dirty(&mut self, key: Key) {
        self.dirty.insert(key);
    }
}

/// The ring as a worker sees it: the cluster state it knows, the placement
/// it routes by, the placement before the last change (consulted by reads
/// until the transition window ends), this node's incarnation in the ring,
/// if it is in it, and when thread 0 next heartbeats.
pub(super) struct Ring {
    cluster: ClusterState,
    placement: Placement,
    previous: Option<(Placement, Time)>,
    incarnation: Option<u64>,
    /// When thread 0 next tells the routers the node is alive.
    next_heartbeat: Time,
    /// A key's owners, refilled by [`Ring::other_owners`] for each key
    /// (no allocation per key on the gossip and write paths).
    owners: Vec<Address>,
}

impl Ring {
    /// The empty ring, before any state arrives.
    pub(super) fn new(replication: ReplicationFactor) -> Self {
        let cluster = ClusterState::default();
        let placement = Placement::new(&cluster, replication);
        Ring {
            cluster,
            placement,
            previous: None,
            incarnation: None,
            next_heartbeat: Time::default(),
            owners: Vec::new(),
        }
    }

    /// The owners of `key` under the current placement other than `me`.
    pub(super) fn other_owners(&mut self, key: &str, me: &Address) -> &[Address] {
        self.placement.owners_into(key, &mut self.owners);
        self.owners.retain(|a| a != me);
        &self.owners
    }

    /// The membership known.
    pub(super) fn cluster(&self) -> &ClusterState {
        &self.cluster
    }

    /// The placement routed by.
    pub(super) fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Whether this node is in the ring (as its current incarnation).
    pub(super) fn joined(&self) -> bool {
        self.incarnation.is_some()
    }

    /// When thread 0 next heartbeats.
    pub(super) fn next_heartbeat(&self) -> Time {
        self.next_heartbeat
    }

    /// The placement before the last change, while its transition window
    /// is open at `now`.
    pub(super) fn previous(&self, now: Time) -> Option<&Placement> {
        self.previous
            .as_ref()
            .filter(|(_, until)| now < *until)
            .map(|(p, _)| p)
    }
}

impl StorageWorker {
    pub(super) fn on_membership(&mut self, now: Time, m: Membership, out: &mut Outbox) {
        match m {
            Membership::State(state) => self.merge_cluster(now, state, out),
            Membership::Leave { node, reply_to } if node == self.id.node.id => {
                tracing::info!(
                    node = node.0,
                    thread = self.id.thread,
                    "leaving: handing keys over"
                );
                self.leave = Some(Leave {
                    reply_to,
                    without_me: self.placement_without_me(),
                    dirty: self.shard.keys().cloned().collect(),
                    reported: false,
                    said_triggers: false,
                });
                self.continue_leave(now, out);
            }
            other => {
                self.stats.unexpected += 1;
                tracing::debug!(?other, "storage worker ignored a membership message");
            }
        }
    }

    /// Merges a cluster state; on a change of placement, starts moving keys.
    pub fn merge_cluster(&mut self, now: Time, state: ClusterState, out: &mut Outbox) {
        if !self.ring.cluster.merge(state) {
            return;
        }
        let was_joined = self.ring.incarnation.is_some();
        self.ring.incarnation = match self.ring.cluster.member(self.id.node.id) {
            Some(r) if r.status == MemberStatus::Up(self.id.node.clone()) => Some(r.incarnation),
            _ => None,
        };
        if was_joined && self.ring.incarnation.is_none() && self.leave.is_none() {
            // Declared departed while alive (a stall, a partition): every
            // key goes to its owners without this node, and thread 0 asks
            // to join again at once, as a new incarnation.
            if self.id.thread == 0 {
                tracing::warn!(
                    node = self.id.node.id.0,
                    "this node was declared departed while alive: handing keys over and rejoining"
                );
                self.ring.next_heartbeat = now;
            }
            self.stats.rejoins += 1;
        }
        let placement = Placement::new(&self.ring.cluster, self.config.replication);
        let old = std::mem::replace(&mut self.ring.placement, placement);
        self.rehome_keys(&old);
        // Reads of keys new to this worker consult the owners before the
        // change. A worker that has just joined (or rejoined as a new
        // incarnation) may never have seen the ring without itself: the
        // owners before its join are those of the ring without it.
        let before = if !was_joined && self.ring.incarnation.is_some() {
            self.placement_without_me()
        } else {
            old
        };
        self.ring.previous = Some((before, now + self.config.transition_window));
        self.send_handoffs(now, out);
        if self.leave.is_some() {
            // The handoffs were reset with the ring: start the departure's
            // handoff again against the new ring.
            let without_me = self.placement_without_me();
            let keys = self.shard.keys().cloned().collect();
            if let Some(leave) = &mut self.leave {
                leave.without_me = without_me;
                leave.dirty = keys;
            }
        }
    }

    /// Where keys will live once this node has departed.
    fn placement_without_me(&self) -> Placement {
        let mut state = self.ring.cluster.clone();
        if let Some(incarnation) = self.ring.incarnation {
            state.record_departure(self.id.node.id, incarnation);
        }
        Placement::new(&state, self.config.replication)
    }

    /// A departure in progress: hands over keys written since the last
    /// round, and reports `Left` once every handoff is acknowledged.
    pub(super) fn continue_leave(&mut self, now: Time, out: &mut Outbox) {
        let Some(leave) = &mut self.leave else {
            return;
        };
        let dirty: Vec<Key> = leave.dirty.drain().collect();
        let mut batches: BTreeMap<Address, Vec<Key>> = BTreeMap::new();
        for key in dirty {
            for to in leave.without_me.owners(&key) {
                if to != self.id.me {
                    batches.entry(to).or_default().push(key.clone());
                }
            }
        }
        for (target, keys) in batches {
            self.send_handoff(now, target, keys, out);
        }
        // A change a trigger has not run for yet is delivered first: the
        // thread that took the write is the only one that holds it.
        let backlog = self.triggers.backlog();
        let Some(leave) = &mut self.leave else {
            return;
        };
        if backlog > 0 && !leave.said_triggers {
            leave.said_triggers = true;
            tracing::info!(
                thread = self.id.thread,
                backlog,
                "leaving: delivering the trigger changes held here first"
            );
        }
        if !leave.reported
            && self.handoffs.sent.is_empty()
            && leave.dirty.is_empty()
            && backlog == 0
        {
            leave.reported = true;
            tracing::info!(
                node = self.id.node.id.0,
                thread = self.id.thread,
                "every key handed over"
            );
            out.send(
                leave.reply_to.clone(),
                Message::Membership(Membership::Left {
                    node: self.id.node.id,
                    thread: self.id.thread,
                    incarnation: self.ring.incarnation.unwrap_or(0),
                }),
            );
        }
    }

    /// Keys held unowned for a whole transition window go to their owners.
    pub(super) fn rehome_stranded(&mut self, now: Time) {
        let due = self
            .handoffs
            .take_stranded(now, self.config.transition_window);
        for key in due {
            if self.shard.contains_key(&key) && !self.owns(&key) {
                self.handoffs.queue(key);
            }
        }
    }

    /// While leaving, a write to `key` must be handed over again.
    pub(super) fn mark_leave_dirty(&mut self, key: &Key) {
        if let Some(leave) = &mut self.leave {
            leave.mark_dirty(key.clone());
        }
    }

    /// After a placement change: queues every held key for the owners that
    /// did not hold it under `old` (new owners, and owners whose node
    /// restarted). Outstanding handoffs are recomputed.
    fn rehome_keys(&mut self, old: &Placement) {
        self.handoffs.reset();
        let mut after = Vec::new();
        for key in self.shard.keys() {
            self.ring.placement.owners_into(key, &mut after);
            let owned = self.ring.incarnation.is_some() && after.contains(&self.id.me);
            let newcomer = after
                .iter()
                .any(|a| *a != self.id.me && !old.held_by_same(&self.ring.placement, key, a));
            if !owned || newcomer {
                self.handoffs.queue(key.clone());
            }
        }
    }

    /// Sends queued keys to the owners that need them: all owners if this
    /// worker no longer owns the key, else only owners it has not yet
    /// handed the key to (new since the last placement).
    pub(super) fn send_handoffs(&mut self, now: Time, out: &mut Outbox) {
        if !self.handoffs.queued() {
            return;
        }
        let mut batches: BTreeMap<Address, Vec<Key>> = BTreeMap::new();
        let keys = self.handoffs.take_queued();
        for key in keys {
            if !self.shard.contains_key(&key) {
                continue;
            }
            let owned = self.owns(&key);
            for to in self.ring.placement.owners(&key) {
                let had_it = owned
                    && self
                        .ring
                        .previous
                        .as_ref()
                        .is_some_and(|(p, _)| p.held_by_same(&self.ring.placement, &key, &to));
                if to != self.id.me && !had_it {
                    batches.entry(to).or_default().push(key.clone());
                }
            }
        }
        for (target, keys) in batches {
            self.send_handoff(now, target, keys, out);
        }
    }

    /// Hands `keys` to `target` in acknowledged gossip messages of at most
    /// `GOSSIP_BATCH` keys and half the frame limit in bytes each.
    fn send_handoff(&mut self, now: Time, target: Address, keys: Vec<Key>, out: &mut Outbox) {
        self.send_handoff_attempt(now, target, keys, 1, out);
    }

    /// [`Self::send_handoff`] as its `attempt`th send.
    fn send_handoff_attempt(
        &mut self,
        now: Time,
        target: Address,
        keys: Vec<Key>,
        attempt: u32,
        out: &mut Outbox,
    ) {
        let wait = self
            .config
            .handoff_retry
            .saturating_mul(1 << attempt.saturating_sub(1).min(6))
            .min(MAX_HANDOFF_WAIT.max(self.config.handoff_retry));
        // Keys on disk only are read for this (not brought into memory); a
        // key whose disk copy cannot be read is not sent, so not dropped.
        let held: Vec<(Key, KeyState)> = (keys.into_iter())
            .filter_map(|k| {
                let state = self.shard.peek(&k)?.into_owned();
                Some((k, state))
            })
            .collect();
        let chunks = super::gossip::split_by_bytes(held, self.batch_bytes(), |(k, s)| {
            super::gossip::entry_bytes(k, s)
        });
        for entries in chunks {
            let id = self.fresh_id();
            let chunk: Vec<Key> = entries.iter().map(|(k, _)| k.clone()).collect();
            self.stats.handoffs_out += 1;
            out.send(
                target.clone(),
                Message::Gossip(Gossip {
                    from: self.id.me.clone(),
                    entries,
                    ack: Some(id),
                }),
            );
            self.handoffs.record(
                id,
                Handoff {
                    target: target.clone(),
                    keys: chunk,
                    retry_at: now + wait,
                    attempts: attempt,
                },
            );
        }
    }

    /// A new owner holds `keys`: those this worker no longer owns and has no
    /// other handoff of outstanding are removed.
    pub(super) fn handoff_acked(&mut self, _now: Time, keys: Vec<Key>) {
        for key in self.handoffs.settle(keys) {
            if !self.owns(&key) {
                self.shard.remove(&key);
                self.rounds.forget(&key);
            }
        }
    }

    /// Resends handoffs unacknowledged for their wait (`handoff_retry`,
    /// doubling with each resend up to 10 s), with the current state, to targets that are still owners; forgets the others (the ring
    /// change that removed them queued the keys again).
    pub(super) fn retry_handoffs(&mut self, now: Time, out: &mut Outbox) {
        let resend = self.handoffs.take_due(now, &self.ring.placement);
        for ((target, attempt), keys) in resend {
            self.send_handoff_attempt(now, target, keys, attempt, out);
        }
    }

    /// Thread 0: tells the routers the node is alive, or asks to join
    /// (unless it is leaving).
    pub(super) fn heartbeat(&mut self, now: Time, out: &mut Outbox) {
        self.ring.next_heartbeat = now + self.config.heartbeat_period;
        let msg = match self.ring.incarnation {
            Some(incarnation) => Membership::Heartbeat {
                node: self.id.node.clone(),
                incarnation,
            },
            None if self.leave.is_some() => return,
            None => Membership::Join {
                node: self.id.node.clone(),
            },
        };
        for r in &self.id.routers {
            out.send(r.clone(), Message::Membership(msg.clone()));
        }
    }
}
